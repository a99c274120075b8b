//! The WireGuard device behind meshcrypt: a userspace engine on a TUN interface, built on
//! boringtun's `noise::Tunn`, configured through the standard UAPI socket.
//!
//! The engine arrives with the mesh issue; this crate holds the place the architecture gives it so
//! that the workspace layout is stable from the start.
