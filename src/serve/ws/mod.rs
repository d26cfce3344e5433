//! WebSocket streams on the HTTP loop.
//!
//! - `upgrade`: stream paths, subscriptions and filters, the RFC 6455 checks.
//! - `messages`: the JSON messages and the server's raw text frame.
//! - `fanout`: one change fan-out, the shared update rendered once.
//! - `conn`: one upgraded connection's state machine.
//! - `book`: the streams read from a book of their own (tasks, alerts).
//!
//! It owns no socket and decides nothing about when to run: the HTTP loop
//! does both.

pub mod book;
pub mod conn;
pub mod fanout;
pub mod messages;
pub mod upgrade;

pub use book::Book;
pub use conn::{Ended, SEND_BUFFER, WsConn, WsLimits};
pub use fanout::Fanout;
pub use messages::{raw_text_frame, workers_message};
pub use upgrade::{ENDPOINTS, Stream, Subscription, accept, admit, is_ws_path, subscription};
