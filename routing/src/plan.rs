//! The planner: desired and observed state in, the kernel operations that close the gap out.
//!
//! The order is make-before-break, so that no step opens a plaintext window: the device first,
//! then every route added or replaced (blackhole and throw routes before device routes), then new
//! rules, and only then stale routes, stale rules and stale addresses are removed. A rule is never
//! added before its table has the routes that keep it fail-closed, and an old rule is removed only
//! after its replacement is in place.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::model::{DesiredState, ObservedState, Op, Route, RouteKind};

/// The operations that turn `observed` into `desired`. Empty when they already agree.
///
/// Device routes need the device: while it is missing they are left out (the plan is not a fixed
/// point until the device exists), but blackhole floors and rules are still installed.
pub fn plan(desired: &DesiredState, observed: &ObservedState) -> Vec<Op> {
    let mut ops = Vec::new();
    if let Some(link) = &observed.link {
        if link.mtu != desired.link.mtu {
            ops.push(Op::SetMtu(desired.link.mtu));
        }
        ops.extend(desired.link.addresses.difference(&link.addresses).copied().map(Op::AddAddress));
        if !link.up {
            ops.push(Op::SetUp);
        }
    }

    let have: BTreeMap<(IpNet, u32), &Route> =
        observed.routes.iter().map(|r| ((r.dst, r.metric), r)).collect();
    let want: BTreeMap<(IpNet, u32), &Route> = desired
        .routes
        .iter()
        .filter(|r| r.kind != RouteKind::Device || observed.link.is_some())
        .map(|r| ((r.dst, r.metric), r))
        .collect();
    let mut replace: Vec<&Route> =
        want.iter().filter(|(key, route)| have.get(key) != Some(route)).map(|(_, route)| *route).collect();
    replace.sort_by_key(|r| (r.kind == RouteKind::Device, r.dst, r.metric));
    ops.extend(replace.into_iter().copied().map(Op::ReplaceRoute));
    ops.extend(desired.rules.difference(&observed.rules).copied().map(Op::AddRule));
    ops.extend(
        have.iter()
            .filter(|(key, _)| !want.contains_key(key))
            // A device route that is only waiting for the device is not stale.
            .filter(|(_, route)| !desired.routes.contains(route))
            .map(|(_, route)| Op::DelRoute(**route)),
    );
    ops.extend(observed.rules.difference(&desired.rules).copied().map(Op::DelRule));
    if let Some(link) = &observed.link {
        ops.extend(link.addresses.difference(&desired.link.addresses).copied().map(Op::DelAddress));
    }
    ops
}

#[cfg(test)]
mod tests;
