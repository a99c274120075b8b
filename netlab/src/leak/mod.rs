//! The plaintext-leak detector: captures on the underlay and reports pod traffic it can read.
//!
//! [`LeakDetector::start`] opens a packet socket in the underlay namespace (see [`capture`] for why
//! it sees every frame between nodes exactly once) and classifies frames on a background thread;
//! [`LeakDetector::stop`] returns a [`LeakReport`]. A frame is a leak if
//! - a pod address ([`LeakConfig::pod_cidrs`]) appears as source or destination of an IPv4/IPv6
//!   header it can read: the outer one, or one inside IP-in-IP, IPv6-in-IP, GRE, VXLAN (UDP 4789)
//!   or Geneve (UDP 6081), nested up to [`classify::MAX_DEPTH`] deep;
//! - its outer source and destination are both underlay hosts and it is neither UDP on the mesh
//!   port nor TCP to or from the API-server endpoint;
//! - it is UDP on the mesh port but does not have the shape of a WireGuard message.
//!
//! ARP, NDP and other non-IP frames are never leaks. The classification is a pure function
//! ([`classify_frame`]) tested with hand-built frames.

pub mod capture;
pub mod classify;
mod config;
mod detector;
pub mod encap;
mod error;
mod findings;
mod report;
pub mod wireguard;

#[cfg(test)]
mod classify_tests;

pub use classify::{classify_frame, classify_ip_packet};
pub use config::LeakConfig;
pub use detector::{DRAIN_LIMIT, LeakDetector};
pub use error::LeakError;
pub use findings::{
    Allowed, Encapsulation, Finding, FrameVerdict, Layer, LeakKind, PacketSummary, protocol_name,
};
pub use report::{LeakReport, LeakSample, MAX_FLOWS_SHOWN};
pub use wireguard::looks_like_wireguard;
