//! An `eventfd` the data-path workers wait on next to the TUN and the socket, so that shutdown
//! reaches a worker that is asleep in `poll(2)` at once.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::eventfd::{EfdFlags, EventFd};

/// A wake-up signal for the workers. Once raised it stays raised (nothing reads it), so every
/// worker that polls it sees it.
pub(crate) struct Waker {
    fd: EventFd,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Self> {
        let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self { fd })
    }

    /// Raises the signal: every worker's wait returns.
    pub(crate) fn wake(&self) -> io::Result<()> {
        self.fd.write(1)?;
        Ok(())
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(w: &Waker) -> bool {
        let mut pfd = libc::pollfd { fd: w.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&raw mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn stays_raised_for_every_waiter() {
        let w = Waker::new().unwrap();
        assert!(!readable(&w), "not raised yet");
        w.wake().unwrap();
        assert!(readable(&w), "raised");
        assert!(readable(&w), "still raised for a second waiter");
        w.wake().unwrap();
        assert!(readable(&w), "raising twice is harmless");
    }
}
