//! Named network namespaces (`/run/netns/<name>`): create, delete, list, and run Rust code inside one.
//!
//! [`run_in`] runs a closure on a fresh thread that has `setns`'d into the namespace. A socket created
//! by that closure belongs to the namespace for its whole life, whichever thread uses it later: this
//! is how listeners (the test API server, TCP tests) bind inside a node or pod. Such a socket also
//! keeps the namespace (and its interfaces) alive after the namespace's name is deleted, until the
//! socket is closed.
//!
//! For tokio, bind with std inside the namespace and convert:
//!
//! ```no_run
//! # fn demo(ns: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use meshcrypt_netlab::lab::netns;
//! let std_listener = netns::run_in(ns, || std::net::TcpListener::bind("198.18.0.1:0"))??;
//! std_listener.set_nonblocking(true)?;
//! // inside a runtime: let listener = tokio::net::TcpListener::from_std(std_listener)?;
//! # Ok(()) }
//! ```

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};

use super::command;
use super::error::LabError;

/// Where iproute2 keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The bind-mount path of a named namespace.
pub fn path(ns: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(ns)
}

/// Runs `f` on a thread inside network namespace `ns` and returns its result.
///
/// A panic in `f` is propagated to the caller. Sockets created in `f` stay in `ns`.
pub fn run_in<T, F>(ns: &str, f: F) -> Result<T, LabError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let p = path(ns);
    let file = File::open(&p).map_err(|e| LabError::io(format!("open {}", p.display()), e))?;
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || -> Result<T, LabError> {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| LabError::Sys {
                call: format!("setns({}, CLONE_NEWNET)", p.display()),
                errno,
            })?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Creates a named namespace with its loopback up.
pub fn create(ns: &str) -> Result<(), LabError> {
    command::ip(&["netns", "add", ns])?;
    command::ip_in(ns, &["link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes a named namespace (its interfaces go with it once nothing holds it open).
pub fn delete(ns: &str) -> Result<(), LabError> {
    command::ip(&["netns", "delete", ns]).map(drop)
}

/// True if a namespace of that name exists.
pub fn exists(ns: &str) -> bool {
    path(ns).exists()
}

/// Names of all named namespaces on the host.
pub fn list() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> =
        dir.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
    names.sort();
    names
}

/// Pids of the processes whose network namespace is `ns` (`ip netns pids`).
pub fn pids(ns: &str) -> Vec<u32> {
    match command::ip(&["netns", "pids", ns]) {
        Ok(out) => out.split_whitespace().filter_map(|p| p.parse().ok()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Writes a `net.*` sysctl inside `ns`, e.g. `set_sysctl(ns, "net/ipv4/ip_forward", "1")`.
///
/// `/proc/sys/net` shows the namespace of the thread that opens it, so this runs in [`run_in`].
pub fn set_sysctl(ns: &str, key: &str, value: &str) -> Result<(), LabError> {
    let file = format!("/proc/sys/{key}");
    run_in(ns, || std::fs::write(&file, value))?
        .map_err(|e| LabError::io(format!("write {value} to {file} in netns {ns}"), e))
}
