//! The kernel state meshcrypt wants (device address, MTU, routes, policy rules), the state read back
//! from the kernel, and the pure planner between them.
//!
//! [`desired::build`] turns peers' prefixes into a [`DesiredState`]; [`plan::plan`] compares it
//! with an [`ObservedState`] and returns the [`Op`]s that close the gap, in an order that never
//! opens a plaintext window. A [`Kernel`] ([`Netlink`], or the fake in `fake` with the
//! `test-support` feature) applies them and reads the result back.
//!
//! Modules: [`model`] (the shapes: routes, rules, the link, operations), [`desired`] (what the
//! kernel should hold), [`plan`] (the planner), [`mtu`] (the tunnel MTU for an underlay),
//! [`netlink`] (the rtnetlink executor and observer), `kernel` (the seam), `fake` (tests).

pub mod desired;
mod error;
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
mod kernel;
pub mod model;
pub mod mtu;
pub mod netlink;
pub mod plan;
mod route_view;

pub use desired::RoutingInput;
pub use error::Error;
pub use kernel::Kernel;
pub use model::{DesiredState, HostRoute, LinkSpec, ObservedLink, ObservedState, Op, Route, RouteKind, Rule};
pub use netlink::Netlink;
