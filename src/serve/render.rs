//! Large answers rendered off the HTTP loop.
//!
//! A whole-fleet answer costs O(fleet) to assemble: microseconds for a
//! small fleet, but a quarter of a second for a 250 MB `/telemetry`, during
//! which the loop would answer nobody. A [`Cache`] keeps the last body and
//! how long it took; a body that took long is rendered on a thread of its
//! own while the loop goes on, and the answers that want it wait on a
//! [`Ticket`] (as task submissions wait for the disk). Requests that come
//! while it renders join it rather than start another.
//!
//! A large body is also served for as long as it took to render, even if
//! the fleet has changed since: so rendering takes at most about half of a
//! core however hard the endpoint is polled, and an answer is at most one
//! render time old. A body that renders in under [`INLINE`] is rendered on
//! the loop, fresh for every change, as before.

use super::head::{Body, Ticket};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Bodies that render faster than this are rendered on the loop.
pub const INLINE: Duration = Duration::from_millis(2);

type Ack = Box<dyn FnOnce(bool) + Send>;

/// A body being rendered, and the answers waiting for it (`None` once
/// it is done, so a late joiner takes the bytes instead).
struct Render {
    version: u64,
    bytes: Arc<OnceLock<Arc<[u8]>>>,
    took: OnceLock<Duration>,
    waiting: Mutex<Option<Vec<Ack>>>,
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
    /// The body for the fleet at `version`, and the ticket to wait on when
    /// it is still being rendered. `large` says whether to render off the
    /// loop before any render has been timed; `waker` wakes the loop when
    /// it is done (without one, everything renders here).
    pub fn get(
        &mut self,
        version: u64,
        large: bool,
        waker: Option<&Arc<mio::Waker>>,
        build: impl FnOnce() -> Vec<u8> + Send + 'static,
    ) -> (Body, Option<Ticket>) {
        self.take_finished();
        if let Some(k) = &self.kept {
            let young = k.took >= INLINE && k.at.elapsed() < k.took;
            if k.version == version || young {
                return (Body::Shared(k.bytes.clone()), None);
            }
        }
        let off_loop = self.kept.as_ref().map_or(large, |k| k.took >= INLINE);
        match (waker, &self.rendering) {
            (Some(waker), Some(r)) => return join(r, waker),
            (Some(waker), None) if off_loop => {
                let r = Arc::new(Render {
                    version,
                    bytes: Default::default(),
                    took: OnceLock::new(),
                    waiting: Mutex::new(Some(Vec::new())),
                });
                let answer = join(&r, waker);
                self.rendering = Some(r.clone());
                let spawned = std::thread::Builder::new()
                    .name("render".into())
                    .spawn(move || render(&r, build));
                if let Err(e) = spawned {
                    // No thread to be had: the waiting answers become 503s.
                    log::warn!("could not start a render thread: {e}");
                    if let Some(r) = self.rendering.take() {
                        settle(&r, false);
                    }
                }
                return answer;
            }
            _ => {}
        }
        (Body::Shared(self.render_here(version, build)), None)
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

/// Wait for `r`: a ticket and the body it will fill, or the body itself
/// if it is already done.
fn join(r: &Arc<Render>, waker: &Arc<mio::Waker>) -> (Body, Option<Ticket>) {
    let mut waiting = r.waiting.lock().unwrap_or_else(|e| e.into_inner());
    match waiting.as_mut() {
        Some(list) => {
            let ticket = Ticket::new(Some(waker.clone()));
            list.push(ticket.ack());
            (Body::Rendering(r.bytes.clone()), Some(ticket))
        }
        None => {
            let bytes = r.bytes.get().cloned().unwrap_or_else(|| Arc::from(&[][..]));
            (Body::Shared(bytes), None)
        }
    }
}

/// On the render thread: build the body, then settle every waiting answer.
fn render(r: &Render, build: impl FnOnce() -> Vec<u8>) {
    // Below the loops in the scheduler's eyes: on a busy host a render
    // waits, not `/health`.
    // SAFETY: setpriority on this thread's own id.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
    let started = Instant::now();
    let bytes: Arc<[u8]> = build().into();
    let _ = r.bytes.set(bytes);
    let _ = r.took.set(started.elapsed());
    settle(r, true);
}

/// Tell every waiting answer; later joiners take the bytes directly.
fn settle(r: &Render, ok: bool) {
    let acks = r.waiting.lock().unwrap_or_else(|e| e.into_inner()).take();
    for ack in acks.into_iter().flatten() {
        ack(ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waker() -> (mio::Poll, Arc<mio::Waker>) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        (poll, waker)
    }

    #[test]
    fn small_bodies_render_here_and_are_kept_per_version() {
        let (_poll, w) = waker();
        let mut c = Cache::default();
        let (a, t) = c.get(1, false, Some(&w), || b"one".to_vec());
        assert!(t.is_none());
        assert_eq!(&*a, b"one");
        let (b, _) = c.get(1, false, Some(&w), || panic!("kept"));
        assert_eq!(&*b, b"one");
        let (b, _) = c.get(2, false, Some(&w), || b"two".to_vec());
        assert_eq!(&*b, b"two");
    }

    #[test]
    fn large_bodies_render_on_a_thread_and_later_requests_join() {
        let (_poll, w) = waker();
        let mut c = Cache::default();
        let gate = Arc::new(std::sync::Barrier::new(2));
        let g = gate.clone();
        let (body, ticket) = c.get(1, true, Some(&w), move || {
            g.wait();
            std::thread::sleep(INLINE * 2);
            b"big".to_vec()
        });
        let ticket = ticket.expect("waits for the render");
        assert!(matches!(body, Body::Rendering(_)));
        // A second request while it renders joins it.
        let (body2, ticket2) = c.get(2, true, Some(&w), || panic!("joins the render under way"));
        gate.wait();
        let ticket2 = ticket2.expect("joins");
        while ticket.settled().is_none() || ticket2.settled().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&*body, b"big");
        assert_eq!(&*body2, b"big");
        // It took longer than INLINE: served as is for as long as it took,
        // then rendered again, off the loop.
        let (b, t) = c.get(3, true, Some(&w), || panic!("young enough"));
        assert!(t.is_none());
        assert_eq!(&*b, b"big");
        std::thread::sleep(INLINE * 3);
        let (_, t) = c.get(3, true, Some(&w), || b"bigger".to_vec());
        let t = t.expect("renders off the loop again");
        while t.settled().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (b, _) = c.get(3, true, Some(&w), || panic!("kept"));
        assert_eq!(&*b, b"bigger");
    }

    #[test]
    fn without_a_waker_everything_renders_here() {
        let mut c = Cache::default();
        let (b, t) = c.get(1, true, None, || b"x".to_vec());
        assert!(t.is_none());
        assert_eq!(&*b, b"x");
    }
}
