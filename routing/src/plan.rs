//! The planner: desired and observed state in, the kernel operations that close the gap out.
//!
//! The order is make-before-break, so that no step opens a plaintext window: the device first,
//! then every route added or replaced (blackhole and throw routes before device routes), then new
//! rules, and only then stale routes, stale rules and stale addresses are removed. A rule is never
//! added before its table has the routes that keep it fail-closed, and an old rule is removed only
//! after its replacement is in place.

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

    // Both sets are ordered by (dst, metric), a route's identity, so one walk over the two finds
    // what to replace and what is stale: no map of either (5,000 routes a pass at 5,000 nodes).
    // Of routes sharing an identity the last counts, as the kernel holds one.
    let want = desired.routes.iter().filter(|r| r.kind != RouteKind::Device || observed.link.is_some());
    let mut replace: Vec<&Route> = Vec::new();
    let mut stale: Vec<&Route> = Vec::new();
    let mut have = by_identity(observed.routes.iter()).peekable();
    for route in by_identity(want) {
        while let Some(old) = have.next_if(|old| identity(old) < identity(route)) {
            stale.push(old);
        }
        match have.next_if(|old| identity(old) == identity(route)) {
            Some(old) if old == route => {}
            _ => replace.push(route),
        }
    }
    stale.extend(have);
    replace.sort_by_key(|r| (r.kind == RouteKind::Device, r.dst, r.metric));
    ops.extend(replace.into_iter().copied().map(Op::ReplaceRoute));
    ops.extend(desired.rules.difference(&observed.rules).copied().map(Op::AddRule));
    ops.extend(
        stale
            .into_iter()
            // A device route that is only waiting for the device is not stale.
            .filter(|route| !desired.routes.contains(route))
            .map(|route| Op::DelRoute(*route)),
    );
    ops.extend(observed.rules.difference(&desired.rules).copied().map(Op::DelRule));
    if let Some(link) = &observed.link {
        ops.extend(link.addresses.difference(&desired.link.addresses).copied().map(Op::DelAddress));
    }
    ops
}

/// A route's identity in the kernel's table.
fn identity(route: &Route) -> (IpNet, u32) {
    (route.dst, route.metric)
}

/// `routes`, sorted by identity, with only the last of each run sharing one.
fn by_identity<'a>(routes: impl Iterator<Item = &'a Route>) -> impl Iterator<Item = &'a Route> {
    let mut routes = routes.peekable();
    std::iter::from_fn(move || {
        let mut route = routes.next()?;
        while let Some(next) = routes.next_if(|next| identity(next) == identity(route)) {
            route = next;
        }
        Some(route)
    })
}

#[cfg(test)]
mod tests;
