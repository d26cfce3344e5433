//! The terminal standard output writes to.

/// Its columns and rows, when standard output is a terminal that says.
pub fn size() -> Option<(usize, usize)> {
    // SAFETY: a zeroed winsize is a valid value of it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize struct we pass, nothing else.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col as usize, ws.ws_row as usize))
}
