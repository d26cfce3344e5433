//! A worker's inbox: the counted queue between the ingest loop (and the
//! sweeper) and the worker's thread, and the messages it carries.
//!
//! A counted unbounded channel rather than `sync_channel`, which reserves
//! every slot up front (5 KiB a worker, idle or not); this one holds memory
//! only for the messages in it, and never more than [`INBOX_CAPACITY`].

use super::snapshot::Transport;
use crate::proto::Frame;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TrySendError};
use std::time::Instant;

/// Frames a worker's inbox holds before UDP drops and TCP stops reading.
pub const INBOX_CAPACITY: usize = 128;

/// A worker's inbox: at most [`INBOX_CAPACITY`] messages wait in it.
///
/// A counted unbounded channel rather than `sync_channel`, which reserves
/// every slot up front (5 KiB a worker, idle or not); this one holds memory
/// only for the messages in it.
pub struct Inbox {
    tx: Sender<Msg>,
    depth: Arc<AtomicUsize>,
}

/// The worker thread's end of its inbox.
pub struct InboxRx {
    rx: Receiver<Msg>,
    depth: Arc<AtomicUsize>,
}

pub fn inbox() -> (Inbox, InboxRx) {
    let (tx, rx) = mpsc::channel();
    let depth = Arc::new(AtomicUsize::new(0));
    (
        Inbox {
            tx,
            depth: depth.clone(),
        },
        InboxRx { rx, depth },
    )
}

impl Inbox {
    /// Queue `msg` unless the inbox is full or its thread has ended.
    pub fn try_send(&self, msg: Msg) -> Result<(), TrySendError<Msg>> {
        if self.depth.fetch_add(1, Ordering::AcqRel) >= INBOX_CAPACITY {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(TrySendError::Full(msg));
        }
        self.tx.send(msg).map_err(|e| {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            TrySendError::Disconnected(e.0)
        })
    }
}

impl InboxRx {
    fn taken(&self, msg: Option<Msg>) -> Option<Msg> {
        if msg.is_some() {
            self.depth.fetch_sub(1, Ordering::AcqRel);
        }
        msg
    }

    /// The next message, waiting for one; `None` once every sender is gone.
    pub(super) fn recv(&self) -> Option<Msg> {
        self.taken(self.rx.recv().ok())
    }

    /// The next message if one is queued.
    pub(super) fn try_recv(&self) -> Option<Msg> {
        self.taken(self.rx.try_recv().ok())
    }
}

/// What a worker thread receives.
pub enum Msg {
    /// A decoded frame with its transport and arrival time.
    Frame(Box<Frame>, Transport, Instant),
    /// A frame naming this worker was refused: count it against the worker.
    Rejected,
    /// The sweeper thinks the worker has been silent past the timeout.
    Sweep { timeout_ms: u64 },
    /// End the thread.
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_holds_at_most_its_capacity() {
        let (tx, rx) = inbox();
        for _ in 0..INBOX_CAPACITY {
            assert!(tx.try_send(Msg::Rejected).is_ok());
        }
        assert!(matches!(
            tx.try_send(Msg::Rejected),
            Err(TrySendError::Full(_))
        ));
        assert!(rx.try_recv().is_some());
        assert!(
            tx.try_send(Msg::Rejected).is_ok(),
            "room again after a take"
        );
        assert!(matches!(
            tx.try_send(Msg::Rejected),
            Err(TrySendError::Full(_))
        ));
        drop(rx);
        let (tx, rx) = inbox();
        drop(rx);
        assert!(matches!(
            tx.try_send(Msg::Stop),
            Err(TrySendError::Disconnected(_))
        ));
        assert!(
            tx.try_send(Msg::Stop).is_err(),
            "a refused send takes no room"
        );
        assert_eq!(tx.depth.load(Ordering::Relaxed), 0);
    }
}
