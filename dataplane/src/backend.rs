//! The seam between meshcrypt and a WireGuard implementation: the userspace [`crate::Device`]
//! now, a kernel backend later.

use crate::config::Change;
use crate::error::Error;
use crate::state::DeviceState;

/// A WireGuard device configured by deltas and read back as a whole.
pub trait WireGuardDevice {
    /// Applies the changes in order under one lock, so packets see the state before or after the
    /// whole list. Stops at the first error; the changes before it stay applied.
    fn apply(&self, changes: &[Change]) -> Result<(), Error>;

    /// The current configuration and statistics.
    fn observe(&self) -> Result<DeviceState, Error>;
}
