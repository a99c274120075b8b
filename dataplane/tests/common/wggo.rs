//! A wireguard-go process in a test namespace.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meshcrypt_dataplane::{DEFAULT_UAPI_DIR, uapi_socket_path};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Netns, eventually};

/// The wireguard-go process: asked to stop (SIGTERM to its own pid, so it removes its socket),
/// killed if it lingers, reaped, and its socket removed, on drop.
pub struct GoProcess {
    child: Child,
    socket: PathBuf,
}

impl Drop for GoProcess {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        if !eventually(Duration::from_secs(5), || matches!(self.child.try_wait(), Ok(Some(_)))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl GoProcess {
    /// Starts `wireguard-go -f <ifname>` inside `ns` and waits for its UAPI socket.
    pub fn start(ns: &Netns, ifname: &str) -> Self {
        let socket = uapi_socket_path(DEFAULT_UAPI_DIR.as_ref(), ifname);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "wireguard-go", "-f", ifname])
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .env("LOG_LEVEL", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wireguard-go");
        let go = Self { child, socket };
        assert!(eventually(Duration::from_secs(10), || go.socket.exists()), "wireguard-go UAPI socket");
        go
    }
}
