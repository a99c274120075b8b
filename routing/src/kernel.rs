//! The seam between meshcrypt and the kernel's routing state: [`Kernel`], implemented by
//! [`crate::Netlink`] (rtnetlink, in the caller's network namespace) and, for tests, by
//! `fake::FakeKernel` (feature `test-support`).

use std::future::Future;
use std::net::IpAddr;

use crate::error::Error;
use crate::model::{HostRoute, ObservedState, Op};

/// What the agent reads from and does to the kernel's routing state. Every error keeps the
/// kernel's errno ([`Error::errno`]).
pub trait Kernel: Send + Sync {
    /// Reads the link named `ifname` (if any), every route of `table` and every rule at
    /// `priority`.
    fn observe(
        &self,
        ifname: &str,
        table: u32,
        priority: u32,
    ) -> impl Future<Output = Result<ObservedState, Error>> + Send;

    /// The MTU of the interface that holds `address` (the node's underlay address), if any does.
    fn mtu_of_address(&self, address: IpAddr) -> impl Future<Output = Result<Option<u32>, Error>> + Send;

    /// The index of the interface that holds `address`, if any does.
    fn index_of_address(&self, address: IpAddr) -> impl Future<Output = Result<Option<u32>, Error>> + Send;

    /// Every host route (/32, /128) of `table`, both families.
    fn host_routes(&self, table: u32) -> impl Future<Output = Result<Vec<HostRoute>, Error>> + Send;

    /// Applies `ops` in order to link `link_index` (needed by link, address and device-route
    /// operations) and `table`, stopping at the first real failure; the operations before it stay
    /// applied. "Exists" on an add and "not found" on a delete count as success.
    fn apply(
        &self,
        link_index: Option<u32>,
        table: u32,
        ops: &[Op],
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

impl Kernel for crate::Netlink {
    fn observe(
        &self,
        ifname: &str,
        table: u32,
        priority: u32,
    ) -> impl Future<Output = Result<ObservedState, Error>> + Send {
        crate::Netlink::observe(self, ifname, table, priority)
    }

    fn mtu_of_address(&self, address: IpAddr) -> impl Future<Output = Result<Option<u32>, Error>> + Send {
        crate::Netlink::mtu_of_address(self, address)
    }

    fn index_of_address(&self, address: IpAddr) -> impl Future<Output = Result<Option<u32>, Error>> + Send {
        crate::Netlink::index_of_address(self, address)
    }

    fn host_routes(&self, table: u32) -> impl Future<Output = Result<Vec<HostRoute>, Error>> + Send {
        crate::Netlink::host_routes(self, table)
    }

    fn apply(
        &self,
        link_index: Option<u32>,
        table: u32,
        ops: &[Op],
    ) -> impl Future<Output = Result<(), Error>> + Send {
        crate::Netlink::apply(self, link_index, table, ops)
    }
}

/// A shared kernel (a test keeps a handle on the fake it hands the agent).
impl<T: Kernel + ?Sized> Kernel for std::sync::Arc<T> {
    fn observe(
        &self,
        ifname: &str,
        table: u32,
        priority: u32,
    ) -> impl Future<Output = Result<ObservedState, Error>> + Send {
        (**self).observe(ifname, table, priority)
    }

    fn mtu_of_address(&self, address: IpAddr) -> impl Future<Output = Result<Option<u32>, Error>> + Send {
        (**self).mtu_of_address(address)
    }

    fn index_of_address(&self, address: IpAddr) -> impl Future<Output = Result<Option<u32>, Error>> + Send {
        (**self).index_of_address(address)
    }

    fn host_routes(&self, table: u32) -> impl Future<Output = Result<Vec<HostRoute>, Error>> + Send {
        (**self).host_routes(table)
    }

    fn apply(
        &self,
        link_index: Option<u32>,
        table: u32,
        ops: &[Op],
    ) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).apply(link_index, table, ops)
    }
}
