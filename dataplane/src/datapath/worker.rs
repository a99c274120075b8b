//! The event loop every data-path worker runs: serve whichever of the TUN (outbound) and the
//! socket (inbound) has work, and when neither has, sleep in one `poll(2)` on both.
//!
//! One loop serves both directions, so on a quiet node a request and its reply cost one wake-up
//! per hop instead of a hand-off between a TUN thread and a socket thread. Under load the kernel
//! queues batches on both, and a loop takes them in turn. With several workers a direction's
//! buffers sit behind a mutex that is only try-locked: a worker that finds a direction taken
//! serves the other one and does not wait on the taken one's fd (its holder looks at that fd again
//! before it sleeps), so nothing spins and packets of one direction stay in order.

use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard, TryLockError};

use super::Shared;
use super::rx::{RX_MESSAGES, rx_once};
use super::tx::tx_once;

/// The longest sleep (ms): a worker picks up a replaced socket within it.
const WAIT_MS: libc::c_int = 200;

/// What serving one direction found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Served {
    /// Work was done, or may be waiting: look again.
    More,
    /// The queue was empty: wait for it.
    Empty,
    /// Another worker holds this direction.
    Taken,
}

/// Runs one worker until the device stops (or the TUN cannot be read any more).
pub(crate) fn run(shared: &Shared) {
    let (mut tun, mut udp) = (Served::More, Served::More);
    while !shared.stopping() {
        if udp == Served::More {
            udp = serve_udp(shared);
        }
        if tun == Served::More {
            tun = match serve_tun(shared) {
                Ok(served) => served,
                Err(e) => {
                    if !shared.stopping() {
                        tracing::error!(ifname = %shared.ifname, error = %e, "TUN read failed; stopping");
                    }
                    return;
                }
            };
        }
        if tun != Served::More && udp != Served::More {
            (tun, udp) = wait(shared, tun == Served::Empty, udp == Served::Empty);
        }
    }
}

fn try_take<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

fn serve_udp(shared: &Shared) -> Served {
    let Some(mut st) = try_take(&shared.rx) else { return Served::Taken };
    match rx_once(shared, &mut st) {
        // A full batch: more may be queued. A short one drained the queue.
        Ok(n) if n == RX_MESSAGES => Served::More,
        Ok(_) => Served::Empty,
        Err(e) => {
            // ICMP errors surface here (ECONNREFUSED, …); they are not fatal.
            tracing::debug!(ifname = %shared.ifname, error = %e, "UDP receive error");
            Served::More
        }
    }
}

fn serve_tun(shared: &Shared) -> std::io::Result<Served> {
    let Some(mut st) = try_take(&shared.tx) else { return Ok(Served::Taken) };
    Ok(if tx_once(shared, &mut st)? { Served::More } else { Served::Empty })
}

/// Sleeps until a wanted fd is readable, the device stops, or [`WAIT_MS`] passes; returns what
/// to do next for the TUN and the socket.
fn wait(shared: &Shared, want_tun: bool, want_udp: bool) -> (Served, Served) {
    if !want_tun && !want_udp {
        // Other workers hold both directions: wait until one is free instead of spinning.
        drop(shared.tx.lock());
        return (Served::More, Served::More);
    }
    let socket = shared.sender().socket;
    let fd = |want: bool, fd: libc::c_int| if want { fd } else { -1 };
    let mut fds = [
        libc::pollfd { fd: fd(want_tun, shared.tun.as_raw_fd()), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: fd(want_udp, socket.as_raw_fd()), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: shared.waker.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    // SAFETY: `fds` is an array of three valid pollfds (negative fds are ignored by poll).
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, WAIT_MS) };
    if rc <= 0 {
        // Timed out or interrupted: look at everything again.
        return (Served::More, Served::More);
    }
    let next = |want: bool, revents: libc::c_short| {
        if !want || revents != 0 { Served::More } else { Served::Empty }
    };
    (next(want_tun, fds[0].revents), next(want_udp, fds[1].revents))
}
