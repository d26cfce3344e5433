//! Linux and systemd interfaces: the one folder where `unsafe` is allowed,
//! each block under a `// SAFETY:` line saying why it holds, behind a safe
//! function the rest of the daemon calls.

#![allow(unsafe_code)]

pub mod accept;
pub mod capacity;
pub mod fds;
pub mod gpu;
pub mod memory;
pub mod mmsg;
pub mod process;
pub mod procfs;
pub mod socket;
pub mod stream;
pub mod systemd;
pub mod terminal;
pub mod thread;
pub mod usage;
