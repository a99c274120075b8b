//! A continuous TCP stream between two pods, for measuring disruption: the client sends a small
//! numbered message every few milliseconds and waits for its echo; the report says how long the
//! longest stall was, whether the connection was ever reset, and how many segments TCP had to
//! send again (a packet lost on the path, in either direction, is one).

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
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
    /// Segments retransmitted by both ends together (`tcpi_total_retrans` of `TCP_INFO`): 0 means
    /// no packet of the stream was lost; `None` if either end could not be asked.
    pub retransmits: Option<u32>,
}

/// A running stream; [`Stream::stop`] ends it and returns the report.
pub struct Stream {
    stop: Arc<AtomicBool>,
    client: JoinHandle<StreamReport>,
    server: JoinHandle<Option<u32>>,
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
        let mut report = self.client.join().unwrap_or_else(|_| StreamReport {
            echoed: 0,
            max_stall: Duration::ZERO,
            error: Some("client thread panicked".into()),
            retransmits: None,
        });
        let server = self.server.join().ok().flatten();
        report.retransmits = report.retransmits.zip(server).map(|(c, s)| c + s);
        report
    }
}

/// Echoes until the client closes; returns the server end's retransmissions.
fn serve(listener: TcpListener) -> Option<u32> {
    let (mut conn, _) = listener.accept().ok()?;
    let _ = conn.set_read_timeout(Some(GIVE_UP));
    let mut buf = [0u8; 8];
    while conn.read_exact(&mut buf).is_ok() {
        if conn.write_all(&buf).is_err() {
            break;
        }
    }
    total_retransmits(&conn)
}

/// Segments `socket` has retransmitted over its life (`TCP_INFO`'s `tcpi_total_retrans`, Linux
/// `include/uapi/linux/tcp.h`); `None` if the kernel would not say.
fn total_retransmits(socket: &TcpStream) -> Option<u32> {
    // SAFETY: an all-zero tcp_info is a valid value (integers only).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes and `len` is the size of `info`, the
    // structure the kernel fills (up to `len` bytes) for TCP_INFO.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info.tcpi_total_retrans)
}

fn run_client(mut socket: TcpStream, target: SocketAddr, stop: &AtomicBool) -> StreamReport {
    let _ = socket.set_read_timeout(Some(GIVE_UP));
    let _ = socket.set_nodelay(true);
    let mut report = StreamReport { echoed: 0, max_stall: Duration::ZERO, error: None, retransmits: None };
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
    report.retransmits = total_retransmits(&socket);
    let _ = socket.shutdown(std::net::Shutdown::Both);
    report
}
