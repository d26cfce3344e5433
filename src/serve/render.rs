//! Large answers rendered off the HTTP loop.
//!
//! A whole-fleet answer costs O(fleet) to assemble: microseconds for a
//! small fleet, but a quarter of a second for a 250 MB `/telemetry`, during
//! which the loop would answer nobody. A [`Cache`] keeps the last body and
//! how long it took; a body that took long is rendered on a thread of its
//! own while the loop goes on, and the answers that want it wait on a
//! [`Ticket`] (as task submissions wait for the disk), which settles with
//! the body. Requests that come
//! while it renders join it rather than start another.
//!
//! A large body is also served for as long as it took to render, even if
//! the fleet has changed since: so rendering takes at most about half of a
//! core however hard the endpoint is polled, and an answer is at most one
//! render time old. A body that renders in under [`INLINE`] is rendered on
//! the loop, fresh for every change, as before.

use super::ticket::{Later, Outcome, Settler, Ticket};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Bodies that render faster than this are rendered on the loop.
pub const INLINE: Duration = Duration::from_millis(2);

/// What an endpoint answers with: the body now, or a ticket that settles
/// with it once a render thread has built it.
pub enum Rendered {
    Now(Arc<[u8]>),
    Later(Ticket),
}

/// A body being rendered, and the answers waiting for it (`None` once
/// it is done, so a late joiner takes the bytes instead).
struct Render {
    version: u64,
    bytes: OnceLock<Arc<[u8]>>,
    took: OnceLock<Duration>,
    waiting: Mutex<Option<Vec<Settler>>>,
}

struct Kept {
    version: u64,
    bytes: Arc<[u8]>,
    took: Duration,
    at: Instant,
}

/// The last body of one endpoint, the version of the fleet it shows, and
/// the render under way.
#[derive(Default)]
pub struct Cache {
    kept: Option<Kept>,
    rendering: Option<Arc<Render>>,
}

impl Cache {
    /// The body for the fleet at `version`, or a ticket when it is being
    /// rendered. `large` says whether to render off the loop before any
    /// render has been timed; `later` is where a waiting answer is told
    /// (without one, everything renders here).
    pub fn get(
        &mut self,
        version: u64,
        large: bool,
        later: Option<&Later>,
        build: impl FnOnce() -> Vec<u8> + Send + 'static,
    ) -> Rendered {
        self.take_finished();
        if let Some(k) = &self.kept {
            let young = k.took >= INLINE && k.at.elapsed() < k.took;
            if k.version == version || young {
                return Rendered::Now(k.bytes.clone());
            }
        }
        let off_loop = self.kept.as_ref().map_or(large, |k| k.took >= INLINE);
        match (later, &self.rendering) {
            (Some(later), Some(r)) => return join(r, later),
            (Some(later), None) if off_loop => {
                let r = Arc::new(Render {
                    version,
                    bytes: OnceLock::new(),
                    took: OnceLock::new(),
                    waiting: Mutex::new(Some(Vec::new())),
                });
                let answer = join(&r, later);
                self.rendering = Some(r.clone());
                let spawned = std::thread::Builder::new()
                    .name("render".into())
                    .spawn(move || render(&r, build));
                if let Err(e) = spawned {
                    // No thread to be had: the waiting answers become 503s.
                    log::warn!("could not start a render thread: {e}");
                    if let Some(r) = self.rendering.take() {
                        settle(&r);
                    }
                }
                return answer;
            }
            _ => {}
        }
        Rendered::Now(self.render_here(version, build))
    }

    fn render_here(&mut self, version: u64, build: impl FnOnce() -> Vec<u8>) -> Arc<[u8]> {
        let started = Instant::now();
        let bytes: Arc<[u8]> = build().into();
        self.kept = Some(Kept {
            version,
            bytes: bytes.clone(),
            took: started.elapsed(),
            at: Instant::now(),
        });
        bytes
    }

    /// A render that has finished becomes the kept body.
    fn take_finished(&mut self) {
        let Some(r) = &self.rendering else { return };
        let (Some(bytes), Some(took)) = (r.bytes.get(), r.took.get()) else {
            return;
        };
        self.kept = Some(Kept {
            version: r.version,
            bytes: bytes.clone(),
            took: *took,
            at: Instant::now(),
        });
        self.rendering = None;
    }
}

/// Wait for `r`: a ticket, or the body itself if it is already done.
fn join(r: &Arc<Render>, later: &Later) -> Rendered {
    let mut waiting = r.waiting.lock().unwrap_or_else(|e| e.into_inner());
    match waiting.as_mut() {
        Some(list) => {
            let (ticket, settler) = later.ticket();
            list.push(settler);
            Rendered::Later(ticket)
        }
        None => Rendered::Now(r.bytes.get().cloned().unwrap_or_else(|| Arc::from(&[][..]))),
    }
}

/// On the render thread: build the body, then settle every waiting answer.
fn render(r: &Render, build: impl FnOnce() -> Vec<u8>) {
    // Below the loops in the scheduler's eyes: on a busy host a render
    // waits, not `/health`.
    crate::sys::thread::lower_priority(10);
    let started = Instant::now();
    let bytes: Arc<[u8]> = build().into();
    let _ = r.bytes.set(bytes);
    let _ = r.took.set(started.elapsed());
    settle(r);
}

/// Tell every waiting answer (with the body, or failed when there is
/// none); later joiners take the bytes directly.
fn settle(r: &Render) {
    let settlers = r.waiting.lock().unwrap_or_else(|e| e.into_inner()).take();
    let outcome = match r.bytes.get() {
        Some(b) => Outcome::Body(b.clone()),
        None => Outcome::Failed,
    };
    for s in settlers.into_iter().flatten() {
        s.settle(outcome.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::notify::{Mailbox, Nobody};

    fn later() -> Later {
        Later {
            mailbox: Mailbox::new(Nobody),
            key: 1,
        }
    }

    fn now(r: Rendered) -> Arc<[u8]> {
        match r {
            Rendered::Now(b) => b,
            Rendered::Later(_) => panic!("waits"),
        }
    }

    fn wait(r: Rendered) -> Arc<[u8]> {
        let Rendered::Later(t) = r else {
            panic!("rendered on the loop")
        };
        loop {
            match t.outcome() {
                Some(Outcome::Body(b)) => return b,
                Some(o) => panic!("{o:?}"),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    #[test]
    fn small_bodies_render_here_and_are_kept_per_version() {
        let l = later();
        let mut c = Cache::default();
        assert_eq!(&*now(c.get(1, false, Some(&l), || b"one".to_vec())), b"one");
        assert_eq!(&*now(c.get(1, false, Some(&l), || panic!("kept"))), b"one");
        assert_eq!(&*now(c.get(2, false, Some(&l), || b"two".to_vec())), b"two");
    }

    #[test]
    fn large_bodies_render_on_a_thread_and_later_requests_join() {
        let l = later();
        let mut c = Cache::default();
        let gate = Arc::new(std::sync::Barrier::new(2));
        let g = gate.clone();
        let first = c.get(1, true, Some(&l), move || {
            g.wait();
            std::thread::sleep(INLINE * 2);
            b"big".to_vec()
        });
        // A second request while it renders joins it.
        let second = c.get(2, true, Some(&l), || panic!("joins the render under way"));
        gate.wait();
        assert_eq!(&*wait(first), b"big");
        assert_eq!(&*wait(second), b"big");
        // It took longer than INLINE: served as is for as long as it took,
        // then rendered again, off the loop.
        assert_eq!(
            &*now(c.get(3, true, Some(&l), || panic!("young enough"))),
            b"big"
        );
        std::thread::sleep(INLINE * 3);
        assert_eq!(
            &*wait(c.get(3, true, Some(&l), || b"bigger".to_vec())),
            b"bigger"
        );
        assert_eq!(
            &*now(c.get(3, true, Some(&l), || panic!("kept"))),
            b"bigger"
        );
    }

    #[test]
    fn without_a_mailbox_everything_renders_here() {
        let mut c = Cache::default();
        assert_eq!(&*now(c.get(1, true, None, || b"x".to_vec())), b"x");
    }
}
