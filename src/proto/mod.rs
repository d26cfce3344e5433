//! Heartbeat protocol v1, both directions: the frames as types, decoding and
//! validation of what workers send, and encoding of every frame.
//!
//! Pure: bytes in, a [`Frame`] or a [`Reject`] out; a frame in, bytes out.
//! No sockets, no logging, no clocks. Transport rules (one frame per UDP
//! datagram, one per line over TCP, `hello` first on TCP) are the ingest
//! loop's business; this module only knows what one frame may contain.
//!
//! Invariants of a decoded frame: the worker id, when present, obeys
//! [`valid_worker_id`]; every number is finite and within its range; strings
//! and collections are bounded (see the `MAX_*` constants), so a frame's
//! in-memory size is bounded by a small multiple of its wire size.
//!
//! - `id`: worker ids and reject reasons.
//! - `frame`: the frame types and their bounds.
//! - `decode`: bytes → frame, the general path; `fast`: plain heartbeats
//!   without a JSON tree, agreeing with the general path.
//! - `encode`: frame → bytes for both directions, and the daemon's replies.
//! - `task`: the task frames, both directions.
//! - `status`: the statuses a worker is shown with.

pub mod cert;
pub mod decode;
pub mod encode;
pub mod fast;
pub mod frame;
pub mod id;
pub mod retained;
pub mod status;
pub mod task;

pub use decode::decode;
pub use encode::{
    ErrorReply, Reply, Welcome, decode_reply, encode, encode_cancel, encode_error, encode_lease,
    encode_task, encode_task_error, encode_welcome,
};
pub use frame::*;
pub use id::*;
pub use retained::within_state;
pub use status::{Status, StatusFilter};
