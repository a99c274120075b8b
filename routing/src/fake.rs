//! A fake kernel for tests of the code that drives [`Kernel`] (feature `test-support`): links,
//! the routes of every table, the policy rules, and failures on request, in the spirit of Calico's
//! `felix/netlinkshim/mocknetlink` (its `FailFlags`). Operations change it through [`step`], the
//! same simulator the planner's own tests check plans against.
//!
//! It follows the kernel where the agent depends on it: a device route needs a link (`ENODEV`
//! without one), removing a link removes the routes through it, "exists" on an add and "not
//! found" on a delete are success (as [`crate::Netlink::apply`] treats them).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use ipnet::IpNet;

use crate::error::Error;
use crate::kernel::Kernel;
use crate::model::{HostRoute, ObservedLink, ObservedState, Op, Route, RouteKind, Rule};

/// Applies one operation to `state` as the kernel would; returns false when the kernel already
/// held what it asks for (an add of something present, a delete of something absent), which a
/// plan should never contain. Link operations need `state.link`.
///
/// # Panics
/// On a link operation when `state.link` is `None` (callers check for the link first).
pub fn step(state: &mut ObservedState, op: &Op) -> bool {
    fn link<'a>(link: &'a mut Option<ObservedLink>, op: &Op) -> &'a mut ObservedLink {
        link.as_mut().unwrap_or_else(|| panic!("{op} without a link"))
    }
    match *op {
        Op::SetMtu(mtu) => std::mem::replace(&mut link(&mut state.link, op).mtu, mtu) != mtu,
        Op::SetUp => !std::mem::replace(&mut link(&mut state.link, op).up, true),
        Op::AddAddress(a) => link(&mut state.link, op).addresses.insert(a),
        Op::DelAddress(a) => link(&mut state.link, op).addresses.remove(&a),
        Op::ReplaceRoute(r) => {
            let old = state.routes.iter().find(|o| (o.dst, o.metric) == (r.dst, r.metric)).copied();
            if let Some(old) = old {
                state.routes.remove(&old);
            }
            state.routes.insert(r);
            old != Some(r)
        }
        Op::DelRoute(r) => state.routes.remove(&r),
        Op::AddRule(r) => state.rules.insert(r),
        Op::DelRule(r) => state.rules.remove(&r),
    }
}

/// Which calls fail, each once, with which errno.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailFlags {
    /// [`Kernel::observe`] fails with this errno.
    pub observe: Option<i32>,
    /// [`Kernel::mtu_of_address`] and [`Kernel::index_of_address`] fail with this errno.
    pub address_lookup: Option<i32>,
    /// [`Kernel::host_routes`] fails with this errno.
    pub host_routes: Option<i32>,
    /// [`Kernel::apply`] applies this many operations, then fails the next with `apply_errno`.
    pub apply_after: Option<usize>,
    /// The errno of an injected apply failure (`EPERM` if 0).
    pub apply_errno: i32,
}

/// The fake kernel. Interface indices start at 2 (1 is loopback).
#[derive(Default)]
pub struct FakeKernel {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    links: BTreeMap<u32, (String, ObservedLink)>,
    tables: BTreeMap<u32, BTreeSet<Route>>,
    /// The output interface of each device route, by (table, dst, metric).
    route_oif: BTreeMap<(u32, IpNet, u32), u32>,
    rules: BTreeSet<Rule>,
    host_routes: BTreeMap<u32, Vec<HostRoute>>,
    fail: FailFlags,
    applied: Vec<Op>,
}

impl FakeKernel {
    /// An empty kernel: no links, routes or rules.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a link named `name` of `kind` ("tun", "veth", ...) with `mtu`, down and without
    /// addresses, and returns its index. A TUN of that name that exists already is taken over (its
    /// index returned), as opening a free TUN by name does; any other link of that name is
    /// `EEXIST`.
    pub fn add_link(&self, name: &str, kind: &str, mtu: u32) -> io::Result<u32> {
        let mut state = self.lock();
        if let Some((index, (_, link))) = state.links.iter().find(|(_, (n, _))| n == name) {
            return if kind == "tun" && link.kind.as_deref() == Some("tun") {
                Ok(*index)
            } else {
                Err(io::Error::from_raw_os_error(libc::EEXIST))
            };
        }
        let index = state.links.keys().next_back().map_or(2, |last| last + 1);
        let link =
            ObservedLink { index, mtu, up: false, addresses: BTreeSet::new(), kind: Some(kind.to_owned()) };
        state.links.insert(index, (name.to_owned(), link));
        Ok(index)
    }

    /// Removes link `index` and, as the kernel does, every route through it.
    pub fn remove_link(&self, index: u32) {
        let mut state = self.lock();
        state.links.remove(&index);
        let gone: Vec<(u32, IpNet, u32)> =
            state.route_oif.iter().filter(|(_, oif)| **oif == index).map(|(key, _)| *key).collect();
        for (table, dst, metric) in gone {
            state.route_oif.remove(&(table, dst, metric));
            if let Some(routes) = state.tables.get_mut(&table) {
                routes.retain(|r| (r.dst, r.metric) != (dst, metric));
            }
        }
    }

    /// The index of the link named `name`, if one exists.
    pub fn link_index(&self, name: &str) -> Option<u32> {
        self.lock().links.iter().find(|(_, (n, _))| n == name).map(|(index, _)| *index)
    }

    /// Puts `address` on link `index` (an underlay address, for the MTU and index lookups).
    pub fn add_address(&self, index: u32, address: IpNet) {
        if let Some((_, link)) = self.lock().links.get_mut(&index) {
            link.addresses.insert(address);
        }
    }

    /// Sets the host routes [`Kernel::host_routes`] reports for `table` (what a CNI installed).
    pub fn set_host_routes(&self, table: u32, routes: Vec<HostRoute>) {
        self.lock().host_routes.insert(table, routes);
    }

    /// Arms failures (each fires once, then clears itself).
    pub fn fail(&self, flags: FailFlags) {
        self.lock().fail = flags;
    }

    /// What [`Kernel::observe`] would report, without failure injection.
    pub fn snapshot(&self, ifname: &str, table: u32, priority: u32) -> ObservedState {
        self.lock().observe(ifname, table, priority)
    }

    /// Every operation applied so far (the failed one excluded), in order.
    pub fn applied(&self) -> Vec<Op> {
        self.lock().applied.clone()
    }
}

impl State {
    fn observe(&self, ifname: &str, table: u32, priority: u32) -> ObservedState {
        ObservedState {
            link: self.links.values().find(|(n, _)| n == ifname).map(|(_, link)| link.clone()),
            routes: self.tables.get(&table).cloned().unwrap_or_default(),
            rules: self.rules.iter().filter(|r| r.priority == priority).copied().collect(),
        }
    }

    fn link_with(&self, address: IpAddr) -> Option<&ObservedLink> {
        self.links.values().map(|(_, l)| l).find(|l| l.addresses.iter().any(|a| a.addr() == address))
    }

    fn apply_one(&mut self, link_index: Option<u32>, table: u32, op: &Op) -> Result<(), Error> {
        let needs_link = match op {
            Op::SetMtu(_) | Op::SetUp | Op::AddAddress(_) | Op::DelAddress(_) => true,
            Op::ReplaceRoute(r) => r.kind == RouteKind::Device,
            _ => false,
        };
        let link = link_index.and_then(|i| self.links.get(&i)).map(|(_, l)| l.clone());
        if needs_link && link.is_none() {
            return Err(kernel_error(op, libc::ENODEV));
        }
        let mut view = ObservedState {
            link,
            routes: self.tables.get(&table).cloned().unwrap_or_default(),
            rules: std::mem::take(&mut self.rules),
        };
        step(&mut view, op);
        self.rules = view.rules;
        self.tables.insert(table, view.routes);
        if let (Some(index), Some(link)) = (link_index, view.link)
            && let Some((_, held)) = self.links.get_mut(&index)
        {
            *held = link;
        }
        match *op {
            Op::ReplaceRoute(r) if r.kind == RouteKind::Device => {
                self.route_oif.insert((table, r.dst, r.metric), link_index.expect("checked"));
            }
            Op::ReplaceRoute(r) | Op::DelRoute(r) => {
                self.route_oif.remove(&(table, r.dst, r.metric));
            }
            _ => {}
        }
        Ok(())
    }
}

fn kernel_error(op: &Op, errno: i32) -> Error {
    Error::Kernel { op: op.to_string(), errno, message: io::Error::from_raw_os_error(errno).to_string() }
}

fn lookup_error(what: &str, errno: i32) -> Error {
    Error::Kernel { op: what.to_owned(), errno, message: io::Error::from_raw_os_error(errno).to_string() }
}

impl FakeKernel {
    /// A read that fails once with the errno armed in the flag `armed` picks, else returns what
    /// `read` finds.
    fn read<T>(
        &self,
        armed: fn(&mut FailFlags) -> &mut Option<i32>,
        what: &str,
        read: impl FnOnce(&State) -> T,
    ) -> std::future::Ready<Result<T, Error>> {
        let mut state = self.lock();
        std::future::ready(match armed(&mut state.fail).take() {
            Some(errno) => Err(lookup_error(what, errno)),
            None => Ok(read(&state)),
        })
    }
}

impl Kernel for FakeKernel {
    fn observe(
        &self,
        ifname: &str,
        table: u32,
        priority: u32,
    ) -> impl Future<Output = Result<ObservedState, Error>> + Send {
        self.read(|f| &mut f.observe, "dump routes", |s| s.observe(ifname, table, priority))
    }

    fn mtu_of_address(&self, address: IpAddr) -> impl Future<Output = Result<Option<u32>, Error>> + Send {
        self.read(|f| &mut f.address_lookup, "dump addresses", |s| s.link_with(address).map(|l| l.mtu))
    }

    fn index_of_address(&self, address: IpAddr) -> impl Future<Output = Result<Option<u32>, Error>> + Send {
        self.read(|f| &mut f.address_lookup, "dump addresses", |s| s.link_with(address).map(|l| l.index))
    }

    fn host_routes(&self, table: u32) -> impl Future<Output = Result<Vec<HostRoute>, Error>> + Send {
        self.read(
            |f| &mut f.host_routes,
            "dump routes",
            |s| s.host_routes.get(&table).cloned().unwrap_or_default(),
        )
    }

    fn apply(
        &self,
        link_index: Option<u32>,
        table: u32,
        ops: &[Op],
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let mut state = self.lock();
        let fail_after = state.fail.apply_after.take();
        let errno = if state.fail.apply_errno == 0 { libc::EPERM } else { state.fail.apply_errno };
        let mut result = Ok(());
        for (i, op) in ops.iter().enumerate() {
            if fail_after == Some(i) {
                result = Err(kernel_error(op, errno));
                break;
            }
            if let Err(e) = state.apply_one(link_index, table, op) {
                result = Err(e);
                break;
            }
            state.applied.push(*op);
        }
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, kind: RouteKind) -> Route {
        Route { dst: dst.parse().unwrap(), metric: 1000, kind }
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn behaves_as_the_kernel_where_the_agent_depends_on_it() {
        let kernel = FakeKernel::new();
        let tun = kernel.add_link("meshcrypt0", "tun", 1500).unwrap();
        assert_eq!(kernel.add_link("meshcrypt0", "tun", 1500).unwrap(), tun, "a TUN is taken over");
        assert_eq!(
            kernel.add_link("meshcrypt0", "veth", 1500).unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        let device = route("10.244.1.0/24", RouteKind::Device);
        let floor = route("10.244.0.0/16", RouteKind::Blackhole);
        let none = block_on(kernel.apply(None, 7, &[Op::ReplaceRoute(device)])).unwrap_err();
        assert_eq!(none.errno(), Some(libc::ENODEV), "a device route needs the device");
        block_on(kernel.apply(Some(tun), 7, &[Op::ReplaceRoute(device), Op::ReplaceRoute(floor)])).unwrap();
        block_on(kernel.apply(Some(tun), 7, &[Op::DelRoute(route("10.9.0.0/16", RouteKind::Throw))]))
            .expect("deleting what is not there is success");
        kernel.remove_link(tun);
        let after = kernel.snapshot("meshcrypt0", 7, 100);
        assert_eq!(after.link, None);
        assert_eq!(after.routes, [floor].into(), "the routes through a removed link go with it");
    }

    #[test]
    fn each_armed_failure_fires_once() {
        let kernel = FakeKernel::new();
        kernel.fail(FailFlags { observe: Some(libc::ENOBUFS), apply_after: Some(1), ..FailFlags::default() });
        assert_eq!(block_on(kernel.observe("x", 7, 100)).unwrap_err().errno(), Some(libc::ENOBUFS));
        assert!(block_on(kernel.observe("x", 7, 100)).is_ok());
        let ops = [
            Op::ReplaceRoute(route("10.244.0.0/16", RouteKind::Blackhole)),
            Op::ReplaceRoute(route("10.245.0.0/16", RouteKind::Blackhole)),
        ];
        assert_eq!(block_on(kernel.apply(None, 7, &ops)).unwrap_err().errno(), Some(libc::EPERM));
        assert_eq!(kernel.applied(), ops[..1], "the operations before the failure stay applied");
        block_on(kernel.apply(None, 7, &ops)).unwrap();
        assert_eq!(kernel.snapshot("x", 7, 100).routes.len(), 2);
    }
}
