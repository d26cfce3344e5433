//! Worker ids and the reasons a frame is refused: the names every other
//! part of the daemon counts and reports by.

use std::fmt;
use std::sync::Arc;

/// Longest worker id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Ids that name endpoints under `/api/workers/` and so cannot be worker ids.
pub const RESERVED_IDS: [&str; 3] = ["registry", "scale", "snapshot"];

/// A worker id: 1–128 bytes of `A-Za-z0-9._:@-`, not a reserved word.
pub type WorkerId = Arc<str>;

/// Whether `id` may name a worker (syntax only; reserved words are separate).
pub fn valid_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

/// Check a candidate id against the syntax and the reserved words.
pub fn check_worker_id(id: &str) -> Result<(), RejectReason> {
    if !valid_worker_id(id) {
        Err(RejectReason::BadWorkerId)
    } else if RESERVED_IDS.contains(&id) {
        Err(RejectReason::ReservedId)
    } else {
        Ok(())
    }
}
/// Why a frame was refused. Every variant is a counter in `/health` and
/// `/metrics`, under the name [`RejectReason::as_str`] gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    TooLarge,
    InvalidUtf8,
    NotJson,
    NotObject,
    MissingType,
    UnknownType,
    BadWorkerId,
    ReservedId,
    BadField,
    /// TCP: a frame other than `hello` on a connection that has not said hello.
    HelloRequired,
    /// TCP: a frame naming another worker than the connection's `hello`.
    WorkerMismatch,
    /// The worker would be new and `max_workers` are already tracked, or its
    /// thread could not be started.
    WorkerCap,
    /// `heartbeat_token_file` is set and the frame (UDP) or the hello
    /// (TCP) did not carry the token.
    Unauthorized,
    /// A task frame over UDP: tasks need a session.
    TcpOnly,
}

impl RejectReason {
    pub const ALL: [RejectReason; 14] = [
        RejectReason::TooLarge,
        RejectReason::InvalidUtf8,
        RejectReason::NotJson,
        RejectReason::NotObject,
        RejectReason::MissingType,
        RejectReason::UnknownType,
        RejectReason::BadWorkerId,
        RejectReason::ReservedId,
        RejectReason::BadField,
        RejectReason::HelloRequired,
        RejectReason::WorkerMismatch,
        RejectReason::WorkerCap,
        RejectReason::Unauthorized,
        RejectReason::TcpOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooLarge => "too_large",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::NotJson => "not_json",
            RejectReason::NotObject => "not_object",
            RejectReason::MissingType => "missing_type",
            RejectReason::UnknownType => "unknown_type",
            RejectReason::BadWorkerId => "bad_worker_id",
            RejectReason::ReservedId => "reserved_id",
            RejectReason::BadField => "bad_field",
            RejectReason::HelloRequired => "hello_required",
            RejectReason::WorkerMismatch => "worker_mismatch",
            RejectReason::WorkerCap => "worker_cap",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::TcpOnly => "tcp_only",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Every code the daemon's `error` line carries: why a frame was refused,
/// or why the daemon refuses a task frame or ends the connection. A
/// client must expect codes it does not know (a newer daemon may add some).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame was refused, counted under this reason.
    Rejected(RejectReason),
    /// A `task_update` or `task_log` for a task this worker does not hold
    /// (finished, requeued, or never its own).
    TaskNotHeld,
    /// Another connection said hello for this worker: this one closes.
    Superseded,
    /// No complete frame for 3 heartbeat intervals: the connection closes.
    IdleTimeout,
    /// musterd is stopping: reconnect to the next one.
    ShuttingDown,
}

impl ErrorCode {
    /// The codes beyond the reject reasons.
    pub const OTHERS: [ErrorCode; 4] = [
        ErrorCode::TaskNotHeld,
        ErrorCode::Superseded,
        ErrorCode::IdleTimeout,
        ErrorCode::ShuttingDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Rejected(r) => r.as_str(),
            ErrorCode::TaskNotHeld => "task_not_held",
            ErrorCode::Superseded => "superseded",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::ShuttingDown => "shutting_down",
        }
    }

    /// The code a name stands for; `None` for one this build does not know.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        RejectReason::ALL
            .map(ErrorCode::Rejected)
            .into_iter()
            .chain(ErrorCode::OTHERS)
            .find(|c| c.as_str() == s)
    }
}

impl From<RejectReason> for ErrorCode {
    fn from(r: RejectReason) -> ErrorCode {
        ErrorCode::Rejected(r)
    }
}

/// A refused frame: the reason (for counting), a message for the peer and
/// the log, and the worker id when the frame named a valid one.
#[derive(Clone, Debug, PartialEq)]
pub struct Reject {
    pub reason: RejectReason,
    pub message: String,
    pub worker_id: Option<WorkerId>,
}

impl Reject {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Reject {
        Reject {
            reason,
            message: message.into(),
            worker_id: None,
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rules() {
        assert!(valid_worker_id("a"));
        assert!(valid_worker_id(&"z".repeat(128)));
        assert!(!valid_worker_id(&"z".repeat(129)));
        assert!(!valid_worker_id("é"));
        assert_eq!(check_worker_id("registry"), Err(RejectReason::ReservedId));
    }
}
