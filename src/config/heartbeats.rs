//! The heartbeat side: where workers send, how large and how much one may
//! send, and who may.

use super::secret::Secret;
use super::setting::{area, cidrs, optional_path, show_cidrs, show_path};
use super::tls::Tls;
use super::units::{Cidr, parse_addr, parse_count, parse_size};
use std::net::SocketAddr;
use std::path::PathBuf;

area! {
    /// Heartbeats over UDP and TCP.
    pub struct Heartbeats in heartbeats {
        addr: SocketAddr = "heartbeat_addr", "127.0.0.1:8090", Address, restart,
            "heartbeat address, UDP and TCP on the same port",
            parse_addr, |a: &SocketAddr| a.to_string();
        max_frame_bytes: usize = "max_frame_bytes", "65536", Bytes, live,
            "largest heartbeat frame accepted",
            |v| parse_size(v, 256, 16 << 20), |n: &usize| n.to_string();
        /// State one frame may leave a worker holding, in bytes as parsed.
        max_worker_state_bytes: usize = "max_worker_state_bytes", "16KiB", Bytes, live,
            "state one frame may leave a worker holding (labels, running tasks, current job, as parsed); more is refused as too_large",
            |v| parse_size(v, 1024, 16 << 20), |n: &usize| n.to_string();
        /// Events (`run` frames) waiting for one worker's thread, at most.
        max_pending_events: usize = "max_pending_events", "4096", Count, live,
            "run frames waiting for one worker's thread before UDP drops them (heartbeats merge instead)",
            |v| parse_count(v, 1, 1_000_000), |n: &usize| n.to_string();
        udp_recv_buffer: usize = "udp_recv_buffer", "16MiB", Bytes, restart,
            "kernel receive buffer of the UDP socket (SO_RCVBUF)",
            |v| parse_size(v, 4096, 1 << 30), |n: &usize| n.to_string();
        /// Heartbeat TCP connections one address may hold.
        tcp_max_connections_per_ip: usize = "tcp_max_connections_per_ip", "1024", Count, live,
            "heartbeat TCP connections from one address; past it new ones are closed",
            |v| parse_count(v, 1, 1_000_000), |n: &usize| n.to_string();
        token_file: Option<PathBuf> = "heartbeat_token_file", "off", Path, live,
            "file holding the token a TCP hello and every UDP frame must carry",
            optional_path, show_path;
        /// `None`: from anywhere.
        allow_from: Option<Vec<Cidr>> = "heartbeat_allow_from", "any", List, live,
            "address blocks heartbeats are taken from (`any`, or e.g. `10.0.0.0/8, ::1`)",
            |v| cidrs(v, "any"), |b: &Option<Vec<Cidr>>| show_cidrs(b.as_deref(), "any");
        tls_addr: SocketAddr = "heartbeat_tls_addr", "127.0.0.1:8091", Address, restart,
            "TCP address of the TLS heartbeat listener, open when heartbeat_tls_cert_file is set",
            parse_addr, |a: &SocketAddr| a.to_string();
        tls_cert_file: Option<PathBuf> = "heartbeat_tls_cert_file", "off", Path, live,
            "PEM certificate chain of the TLS heartbeat listener (with heartbeat_tls_key_file)",
            optional_path, show_path;
        tls_key_file: Option<PathBuf> = "heartbeat_tls_key_file", "off", Path, live,
            "PEM private key of heartbeat_tls_cert_file",
            optional_path, show_path;
        tls_client_ca_file: Option<PathBuf> = "heartbeat_tls_client_ca_file", "off", Path, live,
            "PEM CA certificates: TLS workers must present a certificate they signed, whose subject CN is the worker's id",
            optional_path, show_path;
    }
    derived {
        /// Read from `heartbeat_token_file`.
        token: Option<Secret>,
        /// Read from the `heartbeat_tls_*` files.
        tls: Option<Tls>,
    }
}
