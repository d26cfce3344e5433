//! How news reaches a loop thread without the sender knowing the loop.
//!
//! A loop owns one [`Mailbox`]: a queue of its own typed news and a way to
//! wake it ([`Wake`], a `mio::Waker` in the daemon). Other threads are
//! handed the mailbox, or a [`Notify`] that posts one piece of news to it,
//! at construction: a domain type (the change feed, the task book, the
//! alerts) says "something changed" through `Notify` and never learns of
//! mio, sockets or which loop listens.
//!
//! The queue is bounded by what is posted: news that stands for a state
//! ("the fleet changed") is posted once until the loop takes it
//! ([`Mailbox::post_once`]), so however many changes come between two
//! turns the loop finds one; news about one thing (an answer settled for
//! connection 7) waits once per thing. The loop is woken only when its
//! queue goes from empty to not empty.

use std::sync::{Arc, Mutex};

/// Wakes a loop thread blocked in its poll.
pub trait Wake: Send + Sync {
    fn wake(&self);
}

/// Says that something changed, to whoever was handed it.
pub trait Notify: Send + Sync {
    fn notify(&self);
}

/// A loop's queue of news of type `N`, and its waker. Cloned to every
/// sender; the loop itself calls [`Mailbox::take`].
pub struct Mailbox<N> {
    inner: Arc<Inner<N>>,
}

struct Inner<N> {
    queue: Mutex<Vec<N>>,
    wake: Box<dyn Wake>,
}

impl<N> Clone for Mailbox<N> {
    fn clone(&self) -> Mailbox<N> {
        Mailbox {
            inner: self.inner.clone(),
        }
    }
}

impl<N: Send + 'static> Mailbox<N> {
    pub fn new(wake: impl Wake + 'static) -> Mailbox<N> {
        Mailbox {
            inner: Arc::new(Inner {
                queue: Mutex::new(Vec::new()),
                wake: Box::new(wake),
            }),
        }
    }

    /// Post `n`, waking the loop if nothing else waited.
    pub fn post(&self, n: N) {
        self.push_if(n, |_, _| true);
    }

    /// Post `n` unless an equal piece of news already waits: news that
    /// stands for a state, taken once however often it was posted.
    pub fn post_once(&self, n: N)
    where
        N: PartialEq,
    {
        self.push_if(n, |q, n| !q.contains(n));
    }

    fn push_if(&self, n: N, fresh: impl FnOnce(&[N], &N) -> bool) {
        let was_empty = {
            let mut q = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
            if !fresh(&q, &n) {
                return;
            }
            q.push(n);
            q.len() == 1
        };
        if was_empty {
            self.inner.wake.wake();
        }
    }

    /// Everything posted since the last take, in order, into `into`.
    pub fn take(&self, into: &mut Vec<N>) {
        let mut q = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
        if into.is_empty() {
            std::mem::swap(into, &mut q);
        } else {
            into.append(&mut q);
        }
    }

    /// A [`Notify`] that posts `n` (once until taken).
    pub fn notifier(&self, n: N) -> Arc<dyn Notify>
    where
        N: PartialEq + Clone + Sync,
    {
        Arc::new(Notifier {
            mailbox: self.clone(),
            news: n,
        })
    }
}

struct Notifier<N> {
    mailbox: Mailbox<N>,
    news: N,
}

impl<N: PartialEq + Clone + Send + Sync + 'static> Notify for Notifier<N> {
    fn notify(&self) {
        self.mailbox.post_once(self.news.clone());
    }
}

/// A [`Notify`] that tells no one: for parts run without a loop (tests,
/// a daemon without HTTP).
pub struct Nobody;

impl Notify for Nobody {
    fn notify(&self) {}
}

impl Wake for Nobody {
    fn wake(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(Arc<AtomicUsize>);
    impl Wake for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[derive(Clone, Debug, PartialEq)]
    enum News {
        Changed,
        Settled(usize),
    }

    #[test]
    fn news_is_kept_in_order_states_once_and_wakes_once_per_batch() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let m: Mailbox<News> = Mailbox::new(Count(wakes.clone()));
        let changed = m.notifier(News::Changed);
        for _ in 0..100 {
            changed.notify();
        }
        m.post(News::Settled(7));
        m.post(News::Settled(7));
        m.post_once(News::Changed);
        assert_eq!(wakes.load(Ordering::Relaxed), 1, "one wake for the batch");
        let mut got = Vec::new();
        m.take(&mut got);
        assert_eq!(
            got,
            [News::Changed, News::Settled(7), News::Settled(7)],
            "a state once, each settlement"
        );
        got.clear();
        m.take(&mut got);
        assert!(got.is_empty());
        changed.notify();
        assert_eq!(wakes.load(Ordering::Relaxed), 2, "empty again: a new wake");
    }
}
