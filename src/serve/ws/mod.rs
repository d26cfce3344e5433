//! WebSocket streams on the HTTP loop.
//!
//! - `upgrade`: stream paths, subscriptions and filters, the RFC 6455 checks.
//! - `messages`: the JSON messages and the server's text frames.
//! - `fanout`: one change fan-out, the shared update rendered once, and
//!   the shared snapshot frame.
//! - `conn`: one upgraded connection's feed and reads; its bytes go to
//!   the connection's one output queue.
//! - `pending`: a fleet client's latest-wins set of changed workers.
//! - `book`: the streams read from a book of their own (tasks, alerts).
//!
//! It owns no socket and decides nothing about when to run: the HTTP loop
//! does both.

pub mod book;
pub mod conn;
pub mod fanout;
pub mod messages;
mod pending;
pub mod upgrade;

pub use book::Book;
pub use conn::{BookFeed, Ended, Feed, FleetFeed, SEND_BUFFER, WsConn, WsLimits};
pub use fanout::{Fanout, SnapshotFrames};
pub use messages::{text_frame, workers_message};
pub use upgrade::{ENDPOINTS, Stream, Subscription, accept, is_ws_path, subscription};
