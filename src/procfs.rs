//! Readings from /proc: the kernel's drop counter for our UDP socket.
//!
//! Parsers are pure functions over the file's text, so they are tested on
//! captured samples; the readers beside them only open the file.

use std::os::fd::AsRawFd;

/// The inode of a socket, which is how /proc/net/udp names it.
pub fn socket_inode(sock: &impl AsRawFd) -> Option<u64> {
    // SAFETY: fstat writes into the struct we pass; the fd is borrowed live.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(sock.as_raw_fd(), &mut st) == 0).then_some(st.st_ino)
    }
}

/// The `drops` column of the line whose inode is `inode`, in the text of
/// /proc/net/udp or /proc/net/udp6.
pub fn udp_drops(text: &str, inode: u64) -> Option<u64> {
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 13 && f[9].parse() == Ok(inode) {
            f[12].parse().ok()
        } else {
            None
        }
    })
}

/// Kernel drops on the UDP socket with this inode (IPv4 or IPv6 table).
pub fn read_udp_drops(inode: u64) -> Option<u64> {
    ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        udp_drops(&text, inode)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  277: 0100007F:1F9A 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 431234 2 0000000000000000 17
  812: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 15678 2 0000000000000000 0
";

    #[test]
    fn finds_our_socket() {
        assert_eq!(udp_drops(SAMPLE, 431234), Some(17));
        assert_eq!(udp_drops(SAMPLE, 15678), Some(0));
        assert_eq!(udp_drops(SAMPLE, 1), None);
        assert_eq!(udp_drops("", 1), None);
        assert_eq!(udp_drops("header\n 1: short line", 1), None);
    }

    #[test]
    fn reads_a_live_socket() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = socket_inode(&s).unwrap();
        assert_eq!(read_udp_drops(inode), Some(0));
    }
}
