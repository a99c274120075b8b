//! The running detector: a background thread that classifies every underlay frame until stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::capture::PacketSocket;
use super::classify::classify_frame;
use super::config::LeakConfig;
use super::error::LeakError;
use super::report::LeakReport;
use crate::lab::Lab;

/// After `stop()`, the thread keeps draining already-queued frames for at most this long.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// A capture in progress. Frames are queued from the moment [`LeakDetector::start`] returns.
#[derive(Debug)]
pub struct LeakDetector {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<LeakReport, LeakError>>>,
}

impl LeakDetector {
    /// Starts capturing in namespace `underlay_ns`, whose bridge is `bridge`.
    pub fn start(underlay_ns: &str, bridge: &str, config: LeakConfig) -> Result<Self, LeakError> {
        let socket = PacketSocket::open(underlay_ns, bridge)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("leak-capture".into())
            .spawn(move || capture_loop(&socket, &config, &flag))
            .map_err(|e| LeakError::CaptureThread(e.to_string()))?;
        Ok(LeakDetector { stop, thread: Some(thread) })
    }

    /// Starts capturing on a lab's underlay with `config` (see [`LeakConfig::for_lab`]).
    pub fn start_for_lab(lab: &Lab, config: LeakConfig) -> Result<Self, LeakError> {
        Self::start(lab.underlay_ns(), lab.underlay_bridge(), config)
    }

    /// Stops the capture once the frames already queued are classified, and returns the report.
    pub fn stop(mut self) -> Result<LeakReport, LeakError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(LeakError::CaptureThread(msg))
            }),
            None => Err(LeakError::CaptureThread("already stopped".into())),
        }
    }
}

impl Drop for LeakDetector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn capture_loop(
    socket: &PacketSocket,
    config: &LeakConfig,
    stop: &AtomicBool,
) -> Result<LeakReport, LeakError> {
    let started = Instant::now();
    let mut report = LeakReport::new(config.max_samples);
    // Large enough for GSO/GRO super-frames on veths (up to 64 KiB of IP plus headers).
    let mut buf = vec![0u8; 256 * 1024];
    let mut stop_at: Option<Instant> = None;
    let _ = socket.take_drops(); // reset the counters
    loop {
        if stop_at.is_none() && stop.load(Ordering::SeqCst) {
            stop_at = Some(Instant::now() + DRAIN_LIMIT);
        }
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        match socket.recv(&mut buf)? {
            Some((n, true)) => report.record(&classify_frame(&buf[..n.min(buf.len())], config)),
            Some((_, false)) => {}
            None if stop_at.is_some() => break, // queue drained
            None => {}
        }
    }
    report.kernel_drops = socket.take_drops();
    report.duration = started.elapsed();
    Ok(report)
}
