//! Socket options std does not reach: the listen backlog and the kernel's
//! send and receive buffers.

use std::io;
use std::os::fd::AsRawFd;

/// Listen again with the deepest backlog the kernel allows
/// (`net.core.somaxconn`); a listening socket only changes its backlog.
pub fn deepen_backlog(sock: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: listen(2) on a descriptor the caller owns; a value over
    // somaxconn is clamped by the kernel.
    if unsafe { libc::listen(sock.as_raw_fd(), i32::MAX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_int(fd: i32, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: setsockopt reads one c_int that outlives the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_int(fd: i32, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into one c_int we own.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Bound the kernel's send buffer (`SO_SNDBUF`; Linux doubles it), so a
/// peer that stops reading is felt at once rather than after megabytes.
pub fn set_send_buffer(sock: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int(sock.as_raw_fd(), libc::SO_SNDBUF, v)
}

/// Ask for `bytes` of receive buffer: SO_RCVBUFFORCE first (root or
/// CAP_NET_ADMIN may exceed net.core.rmem_max), then SO_RCVBUF. Returns
/// what the kernel granted, as it reports it (Linux doubles the request
/// for its own bookkeeping).
pub fn set_recv_buffer(sock: &impl AsRawFd, bytes: usize) -> io::Result<usize> {
    let fd = sock.as_raw_fd();
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int(fd, libc::SO_RCVBUFFORCE, v).or_else(|_| set_int(fd, libc::SO_RCVBUF, v))?;
    Ok(get_int(fd, libc::SO_RCVBUF)?.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_set_and_read_back() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let got = set_recv_buffer(&udp, 64 * 1024).unwrap();
        assert!(got >= 64 * 1024, "{got}");
        set_send_buffer(&udp, 16 * 1024).unwrap();
        assert!(get_int(udp.as_raw_fd(), libc::SO_SNDBUF).unwrap() >= 16 * 1024);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        deepen_backlog(&l).unwrap();
    }
}
