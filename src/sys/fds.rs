//! A descriptor held in reserve, as nginx and libev keep one: when
//! `accept` fails for want of descriptors (EMFILE, ENFILE), the reserve is
//! let go for a moment, so the connection at the head of the listen queue
//! can be taken, told no and closed, instead of every queued client waiting
//! for a slot that may not come.

use std::fs::File;
use std::io;

pub struct Reserve(Option<File>);

impl Reserve {
    pub fn new() -> Reserve {
        let mut r = Reserve(None);
        r.restore();
        r
    }

    /// Let the reserve go; `false` when there is none to let go.
    pub fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Take a descriptor into reserve again (if one is free).
    pub fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
    }
}

impl Default for Reserve {
    fn default() -> Reserve {
        Reserve::new()
    }
}

/// Whether an accept failed because descriptors ran out.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_is_released_once_and_restored() {
        let mut r = Reserve::new();
        assert!(r.release());
        assert!(!r.release(), "nothing held after a release");
        r.restore();
        assert!(r.release());
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!out_of_descriptors(&io::Error::from_raw_os_error(
            libc::EAGAIN
        )));
    }
}
