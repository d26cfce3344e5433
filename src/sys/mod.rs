//! Linux and systemd interfaces.

pub mod accept;
pub mod capacity;
pub mod fds;
pub mod gpu;
pub mod memory;
pub mod mmsg;
pub mod process;
pub mod procfs;
pub mod systemd;
pub mod thread;
pub mod usage;
