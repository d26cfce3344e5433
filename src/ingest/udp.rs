//! Heartbeat datagrams: read in batches, decode, route to the worker's
//! inbox. A full inbox drops the frame (UDP is lossy; the drop is counted);
//! a refused frame is counted and logged, rate-limited.

use super::session::authorized;
use super::{Ingest, UDP_BATCH};
use crate::fleet::inbox::Msg;
use crate::fleet::snapshot::Transport;
use crate::proto::{self, Frame, Reject, RejectReason};
use crate::stats::{Counter, DropReason};
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::TrySendError;
use std::time::Instant;

impl Ingest {
    pub(super) fn on_udp(&mut self, now: Instant) {
        let max = self.config.get().max_frame_bytes;
        for _ in 0..UDP_BATCH {
            match self.udp.recv_from(&mut self.udp_buf) {
                Ok((n, peer)) => {
                    if !super::allowed(self.config.get(), peer.ip()) {
                        self.shared.stats.incr(Counter::UdpNotAllowed);
                        self.log_limit.warn("udp_not_allowed", || {
                            format!("dropped datagram peer={peer}: not in heartbeat_allow_from")
                        });
                        continue;
                    }
                    self.shared.stats.incr(Counter::FramesReceived);
                    match proto::decode(&self.udp_buf[..n], max) {
                        Ok(frame) => self.on_udp_frame(frame, peer, now),
                        Err(mut rej) => {
                            if self.config.get().heartbeat_token.is_some() {
                                // Anyone can name a worker; only its token
                                // would prove the frame is its own.
                                rej.worker_id = None;
                            }
                            self.reject(&rej, peer)
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.udp_backlog = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("udp receive failed: {e}");
                    self.udp_backlog = false;
                    return;
                }
            }
        }
        // More may be queued: come back after serving the other sockets.
        self.udp_backlog = true;
    }

    fn on_udp_frame(&mut self, frame: Frame, peer: SocketAddr, now: Instant) {
        if !authorized(&frame, self.config.get().heartbeat_token.as_ref()) {
            let rej = Reject::new(
                RejectReason::Unauthorized,
                "frame without the heartbeat token",
            );
            return self.reject(&rej, peer);
        }
        if matches!(frame, Frame::TaskUpdate(_) | Frame::TaskLog(_)) {
            let rej = Reject::new(RejectReason::TcpOnly, "task frames travel over TCP only");
            return self.reject(&rej, peer);
        }
        let Some(id) = frame.worker_id().cloned() else {
            let rej = Reject::new(RejectReason::BadWorkerId, "worker_id is required over UDP");
            return self.reject(&rej, peer);
        };
        let mut msg = Msg::Frame(Box::new(frame), Transport::Udp, now);
        // Twice at most: the worker may be removed between lookup and send.
        for _ in 0..2 {
            let handle = match self.registry.route(&id, Transport::Udp) {
                Ok(h) => h,
                Err(reason) => {
                    return self.reject(&Reject::new(reason, format!("worker {id} refused")), peer);
                }
            };
            match handle.inbox.try_send(msg) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => {
                    self.shared.stats.drop_frame(DropReason::InboxFull);
                    self.log_limit.warn("udp_inbox_full", || {
                        format!("dropped udp frame worker={id}: inbox full (worker thread behind)")
                    });
                    return;
                }
                Err(TrySendError::Disconnected(m)) => msg = m,
            }
        }
        self.shared.stats.drop_frame(DropReason::ShuttingDown);
    }

    /// Count a refused frame, blame its worker if it named one, log (limited).
    pub(super) fn reject(&self, rej: &Reject, peer: SocketAddr) {
        self.shared.stats.reject(rej.reason);
        if let Some(id) = &rej.worker_id {
            if let Some(h) = self.registry.handle(id) {
                let _ = h.inbox.try_send(Msg::Rejected);
            }
        }
        if let Some(suppressed) = self.log_limit.check(rej.reason.as_str(), Instant::now()) {
            log::warn!(
                "rejected frame reason={} peer={peer} worker={}: {} (suppressed={suppressed})",
                rej.reason.as_str(),
                rej.worker_id.as_deref().unwrap_or("-"),
                rej.message
            );
        }
    }
}
