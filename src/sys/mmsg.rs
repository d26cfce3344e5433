//! `recvmmsg(2)`: up to [`BATCH`] datagrams in one system call.
//!
//! Each datagram lands in a slot of its own. A datagram longer than its
//! slot is cut to the slot; the caller sizes slots one byte past the
//! largest frame it accepts, so a cut datagram fills its slot and is always
//! one it refuses as too large.

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams read per call at most.
pub const BATCH: usize = 64;

/// The slots and what the last call put in them.
pub struct Datagrams {
    slot: usize,
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: [usize; BATCH],
    count: usize,
}

impl Datagrams {
    /// Slots of `slot` bytes each. Pages are touched only as datagrams
    /// fill them.
    pub fn new(slot: usize) -> Datagrams {
        // SAFETY: sockaddr_storage is plain data; all zeroes is valid.
        let empty: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        Datagrams {
            slot,
            bufs: vec![0; slot * BATCH],
            addrs: vec![empty; BATCH],
            lens: [0; BATCH],
            count: 0,
        }
    }

    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Read what is queued on `fd`, up to [`BATCH`], without waiting.
    /// `WouldBlock` when nothing is.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: zeroed iovec and mmsghdr are valid (null pointers, zero
        // lengths) and are filled below.
        let mut iov: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: slot i lies inside `bufs` (BATCH slots long).
            iov[i].iov_base = unsafe { base.add(i * self.slot) }.cast();
            iov[i].iov_len = self.slot;
            let h = &mut hdrs[i].msg_hdr;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: every header points into buffers that outlive the call;
        // the kernel writes at most `iov_len` bytes and `msg_namelen` of
        // address into each.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = n as usize;
        for (i, h) in hdrs.iter().take(self.count).enumerate() {
            self.lens[i] = (h.msg_len as usize).min(self.slot);
        }
        Ok(self.count)
    }

    /// Datagram `i` of the last call: its bytes (cut to the slot) and its
    /// sender.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let start = i * self.slot;
        (
            &self.bufs[start..start + self.lens[i]],
            peer(&self.addrs[i]),
        )
    }
}

fn peer(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match a.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let v4 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let v6 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn reads_a_batch_and_cuts_the_long_ones_to_their_slot() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut d = Datagrams::new(16);
        assert_eq!(
            d.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        tx.send_to(b"short", rx.local_addr().unwrap()).unwrap();
        tx.send_to(&[b'x'; 40], rx.local_addr().unwrap()).unwrap();
        tx.send_to(b"again", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(d.recv(rx.as_raw_fd()).unwrap(), 3);
        assert_eq!(d.get(0), (&b"short"[..], Some(tx.local_addr().unwrap())));
        assert_eq!(d.get(1).0, [b'x'; 16], "cut to the slot");
        assert_eq!(d.get(2).0, b"again");
    }
}
