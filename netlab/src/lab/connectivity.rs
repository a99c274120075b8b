//! Reachability checks between lab namespaces: `ping` (iputils) and a TCP echo exchange in Rust.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::error::LabError;
use super::instance::Lab;
use super::model::Pod;

/// How long one ping waits for its reply in total.
pub const PING_DEADLINE_SECS: u32 = 3;

/// How long a TCP exchange may take in total.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(3);

impl Lab {
    /// Pings `to` once from pod `from` (retrying every 200 ms within 3 s); true if a reply came.
    pub fn ping(&self, from: &Pod, to: IpAddr) -> Result<bool, LabError> {
        self.ping_from(&from.namespace, to)
    }

    /// Pings `to` from lab namespace `ns`; true if a reply came within the deadline.
    pub fn ping_from(&self, ns: &str, to: IpAddr) -> Result<bool, LabError> {
        let deadline = PING_DEADLINE_SECS.to_string();
        let to = to.to_string();
        let out =
            self.exec_output(ns, &["ping", "-n", "-q", "-c", "1", "-i", "0.2", "-w", &deadline, &to])?;
        Ok(out.status.success())
    }

    /// Opens a TCP connection from pod `from` to pod `to` (a listener bound in `to`'s namespace on
    /// its address), sends `payload` and checks it is echoed back.
    pub fn tcp_exchange(&self, from: &Pod, to: &Pod, payload: &[u8]) -> Result<(), LabError> {
        self.tcp_exchange_ns(&from.namespace, &to.namespace, IpAddr::V4(to.address), payload, TCP_TIMEOUT)
    }

    /// Like [`Lab::tcp_exchange`] between any two lab namespaces: the server listens on
    /// `server_addr` (an ephemeral port) inside `server_ns`, the client connects from `client_ns`.
    pub fn tcp_exchange_ns(
        &self,
        client_ns: &str,
        server_ns: &str,
        server_addr: IpAddr,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), LabError> {
        let listener = self
            .run_in(server_ns, || TcpListener::bind((server_addr, 0)))?
            .map_err(|e| LabError::io(format!("bind {server_addr}:0 in {server_ns}"), e))?;
        let target = listener.local_addr().map_err(|e| LabError::io("listener address", e))?;
        let fail =
            |reason: String| LabError::Tcp { from: client_ns.to_string(), to: target.to_string(), reason };
        let deadline = Instant::now() + timeout;
        std::thread::scope(|scope| {
            let server = scope.spawn(|| echo_once(&listener, deadline));
            let client = self.run_in(client_ns, || client_exchange(target, payload, timeout));
            // The server gives up at the deadline, so this join is bounded.
            let served = server.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            let echoed = client?.map_err(|e| fail(format!("client: {e}")))?;
            served.map_err(|e| fail(format!("server: {e}")))?;
            if echoed != payload {
                return Err(fail(format!(
                    "echo mismatch: sent {} bytes, got {} back",
                    payload.len(),
                    echoed.len()
                )));
            }
            Ok(())
        })
    }
}

fn client_exchange(target: SocketAddr, payload: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&target, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(payload)?;
    s.shutdown(Shutdown::Write)?;
    let mut back = Vec::with_capacity(payload.len());
    s.read_to_end(&mut back)?;
    Ok(back)
}

/// Accepts one connection before `deadline`, echoes everything until the client's EOF, closes.
fn echo_once(listener: &TcpListener, deadline: Instant) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no connection before the deadline",
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    stream.write_all(&buf)?;
    stream.shutdown(Shutdown::Write)?;
    Ok(())
}
