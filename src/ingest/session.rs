//! The TCP session rules, as a pure state machine: which worker a
//! connection speaks for, and what each decoded frame means for it.
//!
//! - `hello` first: anything else is answered `hello_required` and the
//!   connection closed.
//! - Later frames may omit `worker_id`; one naming another worker is
//!   refused `worker_mismatch` (the connection stays), and so is a second
//!   `hello` for another worker.
//! - A frame that does not decode is answered with its reason and counted
//!   against the connection's worker; the connection stays.
//!
//! - With `heartbeat_token_file` set, a `hello` without the token is
//!   refused `unauthorized` and the connection closed, before it can bind
//!   or take over anything.
//! - A `hello` for a worker another connection speaks for takes it over:
//!   [`Owners::claim`] names the older connection, which the loop tells
//!   `superseded` and closes (a restarted worker must not wait for its dead
//!   connection to time out).
//! - A connection without a complete frame for 3 × `heartbeat_interval` is
//!   idle ([`Session::is_idle`]); the loop tells it `idle_timeout` and
//!   closes it.
//!
//! Routing and the welcome are the loop's: this module takes decoded frames
//! and returns verdicts, and touches no socket.

use crate::config::Secret;
use crate::proto::{Frame, Reject, RejectReason, WorkerId};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What to do with one frame.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// A `hello`: route the worker, welcome it, and take the id over from
    /// any older connection. The frame is delivered like any other.
    Hello(WorkerId, Frame),
    /// A frame for the bound worker, its id filled in.
    Deliver(Frame),
    /// Answer an `error` line with the reject's reason, count it, and
    /// close the connection when `close`.
    Refuse { reject: Reject, close: bool },
}

#[derive(Debug)]
pub struct Session {
    /// The worker this connection said hello for.
    worker: Option<WorkerId>,
    /// Last complete frame (or the connect): silence is judged from here,
    /// so a peer dribbling a partial line is still silent.
    last_frame: Instant,
    /// When its hello arrived: the worker's state is this session's once
    /// its thread has applied a frame from then on.
    bound_at: Option<Instant>,
}

impl Session {
    pub fn new(now: Instant) -> Session {
        Session {
            worker: None,
            last_frame: now,
            bound_at: None,
        }
    }

    pub fn worker(&self) -> Option<&WorkerId> {
        self.worker.as_ref()
    }

    /// The loop could not route the worker of a `hello` (or it was taken
    /// over by a newer connection): the connection no longer speaks for it.
    pub fn unbind(&mut self) {
        self.worker = None;
        self.bound_at = None;
    }

    /// When the hello that bound the connection arrived.
    pub fn bound_at(&self) -> Option<Instant> {
        self.bound_at
    }

    /// Judge one frame that arrived at `now`; `token`, when the daemon
    /// asks for one, is what a `hello` must carry.
    pub fn on_frame(
        &mut self,
        decoded: Result<Frame, Reject>,
        token: Option<&Secret>,
        now: Instant,
    ) -> Verdict {
        let mut frame = match decoded {
            Ok(f) => f,
            Err(mut reject) => {
                // Blame the named worker only when the peer could have
                // proved it speaks for it.
                if token.is_some() {
                    reject.worker_id = None;
                }
                reject.worker_id = reject.worker_id.or_else(|| self.worker.clone());
                return Verdict::Refuse {
                    reject,
                    close: false,
                };
            }
        };
        if let Frame::Hello(h) = &frame {
            if !authorized(&frame, token) {
                // Not counted against the worker it names: anyone can name it.
                return Verdict::Refuse {
                    reject: Reject::new(
                        RejectReason::Unauthorized,
                        "hello needs the heartbeat token",
                    ),
                    close: true,
                };
            }
            if let Some(bound) = self.worker.as_ref().filter(|b| **b != h.worker_id) {
                let reject = Reject::new(
                    RejectReason::WorkerMismatch,
                    format!("this connection speaks for {bound}"),
                );
                return Verdict::Refuse {
                    reject,
                    close: false,
                };
            }
            let id = h.worker_id.clone();
            self.worker = Some(id.clone());
            self.last_frame = now;
            self.bound_at = Some(now);
            return Verdict::Hello(id, frame);
        }
        let Some(id) = self.worker.clone() else {
            return Verdict::Refuse {
                reject: Reject::new(RejectReason::HelloRequired, "send hello first"),
                close: true,
            };
        };
        if frame.worker_id().is_some_and(|f| *f != id) {
            let mut reject = Reject::new(
                RejectReason::WorkerMismatch,
                format!("this connection speaks for {id}"),
            );
            reject.worker_id = Some(id);
            return Verdict::Refuse {
                reject,
                close: false,
            };
        }
        frame.set_worker_id(id);
        self.last_frame = now;
        Verdict::Deliver(frame)
    }

    /// Whether the peer sent no complete frame for `limit`.
    pub fn is_idle(&self, now: Instant, limit: Duration) -> bool {
        now.saturating_duration_since(self.last_frame) >= limit
    }
}

/// Whether a frame carries the token the daemon asks for (any frame does
/// when it asks for none).
pub fn authorized(frame: &Frame, token: Option<&Secret>) -> bool {
    token.is_none_or(|t| {
        frame
            .token()
            .is_some_and(|given| t.matches(given.as_bytes()))
    })
}

/// Which connection (by slab key) speaks for each TCP worker.
#[derive(Default)]
pub struct Owners(HashMap<WorkerId, usize>);

impl Owners {
    /// Connection `key` said hello for `id`: it speaks for it now. Returns
    /// the connection it took over from, if another one spoke for it.
    pub fn claim(&mut self, id: &WorkerId, key: usize) -> Option<usize> {
        self.0.insert(id.clone(), key).filter(|&old| old != key)
    }

    /// Connection `key` closed: forget it, unless a newer one took `id`.
    /// Returns whether it was the worker's connection.
    pub fn release(&mut self, id: &WorkerId, key: usize) -> bool {
        if self.0.get(id) == Some(&key) {
            self.0.remove(id);
            true
        } else {
            false
        }
    }

    /// The connection that speaks for `id`.
    pub fn owner(&self, id: &str) -> Option<usize> {
        self.0.get(id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decode;

    fn frame(text: &str) -> Result<Frame, Reject> {
        decode(text.as_bytes(), 65536)
    }

    /// What a verdict says, in short: `hello:ID`, `deliver:ID`, or
    /// `refuse:REASON[:close]` with the worker the refusal is counted to.
    fn short(v: &Verdict) -> String {
        match v {
            Verdict::Hello(id, _) => format!("hello:{id}"),
            Verdict::Deliver(f) => format!("deliver:{}", f.worker_id().map_or("-", |i| i)),
            Verdict::Refuse { reject, close } => format!(
                "refuse:{}:{}{}",
                reject.reason.as_str(),
                reject.worker_id.as_deref().unwrap_or("-"),
                if *close { ":close" } else { "" }
            ),
        }
    }

    #[test]
    fn session_rules() {
        let hb = r#"{"type":"heartbeat"}"#;
        let table: &[(&str, &[&str], &[&str])] = &[
            (
                "hello first, then frames without an id",
                &[
                    r#"{"type":"hello","worker_id":"a"}"#,
                    hb,
                    r#"{"type":"bye"}"#,
                ],
                &["hello:a", "deliver:a", "deliver:a"],
            ),
            (
                "a frame before hello closes",
                &[hb],
                &["refuse:hello_required:-:close"],
            ),
            (
                "a frame naming another worker is refused, the session stays",
                &[
                    r#"{"type":"hello","worker_id":"a"}"#,
                    r#"{"type":"heartbeat","worker_id":"b"}"#,
                    r#"{"type":"heartbeat","worker_id":"a"}"#,
                ],
                &["hello:a", "refuse:worker_mismatch:a", "deliver:a"],
            ),
            (
                "a second hello for another worker is refused",
                &[
                    r#"{"type":"hello","worker_id":"a"}"#,
                    r#"{"type":"hello","worker_id":"b"}"#,
                    r#"{"type":"hello","worker_id":"a"}"#,
                ],
                &["hello:a", "refuse:worker_mismatch:-", "hello:a"],
            ),
            (
                "garbage is counted against the bound worker",
                &[r#"{"type":"hello","worker_id":"a"}"#, "nope", hb],
                &["hello:a", "refuse:not_json:a", "deliver:a"],
            ),
            (
                "garbage before hello is refused without closing",
                &["{}", r#"{"type":"hello","worker_id":"z"}"#],
                &["refuse:missing_type:-", "hello:z"],
            ),
        ];
        for (what, frames, want) in table {
            let t0 = Instant::now();
            let mut s = Session::new(t0);
            let got: Vec<String> = frames
                .iter()
                .map(|f| short(&s.on_frame(frame(f), None, t0)))
                .collect();
            assert_eq!(&got, want, "{what}");
        }
    }

    #[test]
    fn delivered_frames_carry_the_bound_id() {
        let now = Instant::now();
        let mut s = Session::new(now);
        s.on_frame(frame(r#"{"type":"hello","worker_id":"w9"}"#), None, now);
        let Verdict::Deliver(f) = s.on_frame(
            frame(r#"{"type":"run","duration_ms":5,"ok":true}"#),
            None,
            now,
        ) else {
            panic!("not delivered");
        };
        assert_eq!(f.worker_id().map(|i| &**i), Some("w9"));
        s.unbind();
        assert!(matches!(
            s.on_frame(frame(r#"{"type":"bye"}"#), None, now),
            Verdict::Refuse { close: true, .. }
        ));
    }

    #[test]
    fn idle_is_judged_from_the_last_complete_frame() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(15);
        let mut s = Session::new(t0);
        assert!(!s.is_idle(t0 + Duration::from_secs(14), limit));
        assert!(s.is_idle(t0 + limit, limit));
        s.on_frame(
            frame(r#"{"type":"hello","worker_id":"a"}"#),
            None,
            t0 + limit,
        );
        assert!(!s.is_idle(t0 + limit + Duration::from_secs(14), limit));
        // A refused frame is not a sign of life.
        s.on_frame(frame("{"), None, t0 + limit * 2);
        assert!(s.is_idle(t0 + limit * 2, limit));
    }

    #[test]
    fn a_newer_hello_takes_the_worker_over() {
        let mut o = Owners::default();
        let a: WorkerId = "a".into();
        assert_eq!(o.claim(&a, 1), None);
        assert_eq!(o.claim(&a, 1), None, "the same connection again");
        assert_eq!(o.claim(&a, 2), Some(1), "superseded");
        o.release(&a, 1);
        assert_eq!(
            o.claim(&a, 3),
            Some(2),
            "the old one's close changed nothing"
        );
        o.release(&a, 3);
        assert_eq!(o.claim(&a, 4), None, "released");
    }

    #[test]
    fn hello_needs_the_token_when_asked() {
        let t0 = Instant::now();
        let token = Secret::new("k");
        let mut s = Session::new(t0);
        let hello = r#"{"type":"hello","worker_id":"w1"}"#;
        match s.on_frame(frame(hello), Some(&token), t0) {
            Verdict::Refuse { reject, close } => {
                assert_eq!(reject.reason, RejectReason::Unauthorized);
                assert!(close);
                assert_eq!(reject.worker_id, None, "a spoofed id is not blamed");
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(s.worker(), None);
        let wrong = r#"{"type":"hello","worker_id":"w1","token":"x"}"#;
        assert!(matches!(
            s.on_frame(frame(wrong), Some(&token), t0),
            Verdict::Refuse { .. }
        ));
        let right = r#"{"type":"hello","worker_id":"w1","token":"k"}"#;
        assert!(matches!(
            s.on_frame(frame(right), Some(&token), t0),
            Verdict::Hello(..)
        ));
        // Later frames ride on the hello.
        let beat = r#"{"type":"heartbeat"}"#;
        assert!(matches!(
            s.on_frame(frame(beat), Some(&token), t0),
            Verdict::Deliver(_)
        ));
    }
}
