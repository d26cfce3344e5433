//! A stream for tests that plays a script: reads that return given bytes,
//! block, end or fail, and writes that take a given number of bytes or
//! block. Connection state machines are driven by it without sockets,
//! the way tungstenite's `tests/write.rs` drives its own.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};

#[derive(Clone, Debug)]
pub enum Step {
    /// The next read returns these bytes (as many as fit).
    Read(Vec<u8>),
    /// The next read or write says `WouldBlock`.
    Block,
    /// The next read returns 0: the peer closed.
    Eof,
    /// The next read or write fails.
    Fail,
    /// The next write takes at most this many bytes.
    Write(usize),
}

/// Reads take their step from the front of the script; writes too, and
/// with no step left a write takes everything and a read blocks.
pub struct Script {
    steps: VecDeque<Step>,
    pub written: Vec<u8>,
}

impl Script {
    pub fn new(steps: Vec<Step>) -> Script {
        Script {
            steps: steps.into(),
            written: Vec::new(),
        }
    }

    /// Add steps at the end.
    pub fn then(&mut self, steps: Vec<Step>) {
        self.steps.extend(steps);
    }

    /// Take the written bytes.
    pub fn take_written(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.written)
    }
}

fn blocked() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.steps.pop_front() {
            Some(Step::Read(mut bytes)) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    self.steps.push_front(Step::Read(bytes.split_off(n)));
                }
                Ok(n)
            }
            Some(Step::Eof) => Ok(0),
            Some(Step::Fail) => Err(io::ErrorKind::ConnectionReset.into()),
            Some(Step::Block) | None => Err(blocked()),
            Some(other @ Step::Write(_)) => {
                // A write step: this read finds nothing yet.
                self.steps.push_front(other);
                Err(blocked())
            }
        }
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let max = match self.steps.front() {
            Some(Step::Write(n)) => {
                let n = *n;
                self.steps.pop_front();
                n
            }
            Some(Step::Block) => {
                self.steps.pop_front();
                return Err(blocked());
            }
            Some(Step::Fail) => {
                self.steps.pop_front();
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            _ => usize::MAX,
        };
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(max - n);
            self.written.extend_from_slice(&b[..take]);
            n += take;
            if n == max {
                break;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
