//! Answers that wait: a response a connection holds until another thread
//! settles it (the journal, once a task is on disk; a render thread, once
//! a large body is built), then sends. The connection keeps the
//! [`Ticket`]; the other thread gets the [`Settler`], whose one call posts
//! `Settled(key)` to the HTTP loop's mailbox, so the loop turns to exactly
//! that connection and nothing else.
//!
//! A ticket settles once: done, done with the body it waited for, or
//! failed (the connection answers 503). A settler dropped without a word
//! (its thread gone) counts as failed, so no answer waits forever.

use super::News;
use crate::fleet::notify::Mailbox;
use std::sync::{Arc, Mutex};

/// How a ticket settled.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// What it waited for is done (a task on disk).
    Done,
    /// Done, with the body the answer waited for (rendered off the loop).
    Body(Arc<[u8]>),
    /// It could not be done: the answer becomes a 503.
    Failed,
    /// Another answer in its place (a submission the database answered
    /// with the task that has its key).
    Instead(Box<super::head::Response>),
}

struct Shared {
    outcome: Mutex<Option<Outcome>>,
}

/// The connection's half: asks whether the answer may go out.
#[derive(Clone)]
pub struct Ticket(Arc<Shared>);

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Ticket").field(&self.outcome()).finish()
    }
}

impl Ticket {
    /// How it settled; `None` while pending.
    pub fn outcome(&self) -> Option<Outcome> {
        self.0
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The other thread's half: settles the ticket once and tells the loop.
pub struct Settler {
    shared: Arc<Shared>,
    to: Option<(Mailbox<News>, usize)>,
}

impl Settler {
    pub fn settle(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Outcome) {
        let Some((mailbox, key)) = self.to.take() else {
            return;
        };
        *self
            .shared
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        mailbox.post(News::Settled(key));
    }
}

impl Drop for Settler {
    fn drop(&mut self) {
        self.finish(Outcome::Failed);
    }
}

/// Where a connection's waiting answers are told they settled: the loop's
/// mailbox and the connection's key. Handed to the request handler, which
/// makes a ticket when an answer must wait.
#[derive(Clone)]
pub struct Later {
    pub mailbox: Mailbox<News>,
    pub key: usize,
}

impl Later {
    pub fn ticket(&self) -> (Ticket, Settler) {
        let shared = Arc::new(Shared {
            outcome: Mutex::new(None),
        });
        (
            Ticket(shared.clone()),
            Settler {
                shared,
                to: Some((self.mailbox.clone(), self.key)),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::notify::Nobody;

    #[test]
    fn a_ticket_settles_once_and_tells_its_connection() {
        let mailbox: Mailbox<News> = Mailbox::new(Nobody);
        let later = Later {
            mailbox: mailbox.clone(),
            key: 7,
        };
        let (t, s) = later.ticket();
        assert_eq!(t.outcome(), None);
        let body: Arc<[u8]> = b"big".to_vec().into();
        s.settle(Outcome::Body(body.clone()));
        assert_eq!(t.outcome(), Some(Outcome::Body(body)));
        let (t2, s2) = later.ticket();
        s2.settle(Outcome::Failed);
        assert_eq!(t2.outcome(), Some(Outcome::Failed));
        // A settler dropped unused fails its ticket rather than leave the
        // answer waiting.
        let (t3, s3) = later.ticket();
        drop(s3);
        assert_eq!(t3.outcome(), Some(Outcome::Failed));
        let mut news = Vec::new();
        mailbox.take(&mut news);
        assert_eq!(news, [News::Settled(7), News::Settled(7), News::Settled(7)]);
    }
}
