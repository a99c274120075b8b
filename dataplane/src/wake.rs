//! An `eventfd` the data-path workers wait on next to the TUN and the socket, so that shutdown
//! reaches a worker that is asleep in `poll(2)` at once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A wake-up signal for the workers. Once raised it stays raised (nothing reads it), so every
/// worker that polls it sees it.
pub(crate) struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd that we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Raises the signal: every worker's wait returns.
    pub(crate) fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own fd.
        let rc = unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
        if rc == 8 { Ok(()) } else { Err(io::Error::last_os_error()) }
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
