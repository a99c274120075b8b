//! A continuous TCP stream between two pods, for measuring disruption: the client sends a small
//! numbered message every few milliseconds and waits for its echo; the report says how long the
//! longest stall was and whether the connection was ever reset.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lab::{Lab, LabError, netns};

/// How often the client sends.
pub const INTERVAL: Duration = Duration::from_millis(10);
/// How long one echo may take before the stream is declared dead (far beyond any tolerable stall).
pub const GIVE_UP: Duration = Duration::from_secs(60);

/// What a stream saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    /// Messages echoed.
    pub echoed: u64,
    /// The longest time between two echoes.
    pub max_stall: Duration,
    /// The error that ended the stream early (a reset, a timeout), if any.
    pub error: Option<String>,
}

/// A running stream; [`Stream::stop`] ends it and returns the report.
pub struct Stream {
    stop: Arc<AtomicBool>,
    client: JoinHandle<StreamReport>,
    server: JoinHandle<()>,
}

impl Stream {
    /// Opens a connection from namespace `client_ns` to `server_addr` in `server_ns` and starts
    /// exchanging messages.
    pub fn start(lab: &Lab, client_ns: &str, server_ns: &str, server_addr: IpAddr) -> Result<Self, LabError> {
        let listener = lab
            .run_in(server_ns, || TcpListener::bind((server_addr, 0)))?
            .map_err(|e| LabError::io(format!("bind {server_addr}:0 in {server_ns}"), e))?;
        let target = listener.local_addr().map_err(|e| LabError::io("listener address", e))?;
        let server = std::thread::spawn(move || serve(listener));
        let socket =
            netns::run_in(client_ns, || TcpStream::connect_timeout(&target, Duration::from_secs(5)))?
                .map_err(|e| LabError::io(format!("connect to {target} from {client_ns}"), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let client = {
            let stop = stop.clone();
            std::thread::spawn(move || run_client(socket, target, &stop))
        };
        Ok(Self { stop, client, server })
    }

    /// Stops the stream and reports.
    pub fn stop(self) -> StreamReport {
        self.stop.store(true, Ordering::Relaxed);
        let report = self.client.join().unwrap_or_else(|_| StreamReport {
            echoed: 0,
            max_stall: Duration::ZERO,
            error: Some("client thread panicked".into()),
        });
        let _ = self.server.join();
        report
    }
}

fn serve(listener: TcpListener) {
    let Ok((mut conn, _)) = listener.accept() else { return };
    let _ = conn.set_read_timeout(Some(GIVE_UP));
    let mut buf = [0u8; 8];
    while conn.read_exact(&mut buf).is_ok() {
        if conn.write_all(&buf).is_err() {
            return;
        }
    }
}

fn run_client(mut socket: TcpStream, target: SocketAddr, stop: &AtomicBool) -> StreamReport {
    let _ = socket.set_read_timeout(Some(GIVE_UP));
    let _ = socket.set_nodelay(true);
    let mut report = StreamReport { echoed: 0, max_stall: Duration::ZERO, error: None };
    let mut last = Instant::now();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mut echo = [0u8; 8];
        let result = socket.write_all(&n.to_be_bytes()).and_then(|()| socket.read_exact(&mut echo));
        if let Err(e) = result {
            report.error = Some(format!("stream to {target}: {e}"));
            break;
        }
        if u64::from_be_bytes(echo) != n {
            report.error =
                Some(format!("stream to {target}: echo {} for message {n}", u64::from_be_bytes(echo)));
            break;
        }
        report.echoed += 1;
        report.max_stall = report.max_stall.max(last.elapsed());
        last = Instant::now();
        std::thread::sleep(INTERVAL);
    }
    let _ = socket.shutdown(std::net::Shutdown::Both);
    report
}
