//! The seam between meshcrypt and a WireGuard implementation: [`WireGuardDevice`] (one running
//! device, configured by deltas) and [`WireGuardBackend`] (what creates devices). The userspace
//! device implements them ([`crate::Device`] is a `WireGuardDevice`, [`Userspace`] creates it), so
//! does the kernel backend ([`crate::Kernel`], [`crate::KernelDevice`]), and tests run the fake in
//! `fake` (feature `test-support`).

use std::sync::Arc;

use meshcrypt_keyexchange::PublicKey;

use crate::config::{Change, DeviceConfig};
use crate::error::Error;
use crate::flows::FlowHarvest;
use crate::state::DeviceState;

/// Which implementation a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// meshcrypt's userspace device on a TUN interface ([`crate::Device`]).
    Userspace,
    /// The kernel's WireGuard module ([`crate::KernelDevice`]).
    Kernel,
}

impl BackendKind {
    /// The name status, metrics and the ConfigMap use: `userspace` or `kernel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Userspace => "userspace",
            Self::Kernel => "kernel",
        }
    }
}

/// A WireGuard device configured by deltas and read back as a whole. Dropping the last handle of a
/// userspace device removes it (and the kernel then removes every route through its interface);
/// a kernel device outlives its handle, with its peers and sessions, until deleted
/// ([`WireGuardDevice::delete`]).
pub trait WireGuardDevice: Send + Sync + std::fmt::Debug {
    /// Applies the changes in order under one lock, so packets see the state before or after the
    /// whole list. Stops at the first error; the changes before it stay applied.
    fn apply(&self, changes: &[Change]) -> Result<(), Error>;

    /// The current configuration and statistics.
    fn observe(&self) -> Result<DeviceState, Error>;

    /// Starts a handshake with each peer in `peers` now (see [`crate::Device::initiate_handshakes`]);
    /// returns how many initiations were sent.
    fn initiate_handshakes(&self, peers: &[PublicKey]) -> usize;

    /// Turns flow accounting on with room for `max_flows` flows between two drains, or off
    /// (`None`): each drain ([`Self::take_flows`]) returns the flows counted since the previous
    /// one, summed per 5-tuple, direction and outcome ([`crate::Flow`]).
    fn set_flow_accounting(&self, max_flows: Option<usize>);

    /// Every flow counted since the previous call, and what did not fit.
    fn take_flows(&self) -> FlowHarvest;

    /// Which implementation this device is.
    fn kind(&self) -> BackendKind;

    /// Removes the device now, with its interface, peers and sessions (and, the kernel's doing,
    /// every route through its interface). A kernel device outlives its handles, so this is how it
    /// goes; a userspace device goes when its last handle drops, and this does nothing for it.
    /// Errors keep the kernel's errno (`ENODEV`: gone already).
    fn delete(&self) -> Result<(), Error>;
}

/// What creates WireGuard devices.
pub trait WireGuardBackend: Send + Sync {
    /// Creates a device as `config` asks: the interface exists, down and without addresses, when
    /// this returns. Errors keep the operating system's errno (`EBUSY`: the TUN is held by another
    /// process).
    fn create(&self, config: DeviceConfig) -> Result<Arc<dyn WireGuardDevice>, Error>;
}

/// The userspace backend: [`crate::Device`] on a TUN interface, with boringtun's protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct Userspace;

impl WireGuardBackend for Userspace {
    fn create(&self, config: DeviceConfig) -> Result<Arc<dyn WireGuardDevice>, Error> {
        Ok(Arc::new(crate::Device::create(config)?))
    }
}

/// The backend the agent runs: the device [`DeviceConfig::backend`] names, userspace or kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Native;

impl WireGuardBackend for Native {
    fn create(&self, config: DeviceConfig) -> Result<Arc<dyn WireGuardDevice>, Error> {
        match config.backend {
            BackendKind::Userspace => Userspace.create(config),
            BackendKind::Kernel => crate::Kernel.create(config),
        }
    }
}

/// A shared backend (a test keeps a handle on the fake it hands the agent).
impl<T: WireGuardBackend + ?Sized> WireGuardBackend for Arc<T> {
    fn create(&self, config: DeviceConfig) -> Result<Arc<dyn WireGuardDevice>, Error> {
        (**self).create(config)
    }
}
