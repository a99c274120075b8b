//! The UAPI listener: a root-only unix socket served on its own thread, one request at a time.

use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use meshcrypt_keyexchange::SecretText;

use super::lines::{LINE_MAX, SecretLines};
use super::{parse_set, write_get};
use crate::device::DeviceHandle;
use crate::error::Error;

/// How long a client may stall mid-request before it is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running UAPI listener.
pub(crate) struct Server {
    path: PathBuf,
    listener_fd: i32,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `path` (creating `dir` 0700 if missing, replacing a stale socket but refusing one a
    /// live device answers on) and serves it until [`Server::stop`].
    pub(crate) fn start(dir: &Path, path: PathBuf, device: DeviceHandle) -> Result<Self, Error> {
        let err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::Uapi { path: p, source }
        };
        if !dir.exists() {
            DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err(dir))?;
        }
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(Error::Uapi { path, source: io::Error::from_raw_os_error(libc::EADDRINUSE) });
            }
            fs::remove_file(&path).map_err(err(&path))?;
        }
        let listener = UnixListener::bind(&path).map_err(err(&path))?;
        fs::set_permissions(&path, Permissions::from_mode(0o600)).map_err(err(&path))?;
        let listener_fd = listener.as_raw_fd();
        let thread = std::thread::Builder::new()
            .name("wg-uapi".to_owned())
            .spawn(move || serve(&listener, &device))
            .map_err(|source| Error::Thread { name: "wg-uapi".to_owned(), source })?;
        Ok(Self { path, listener_fd, thread: Some(thread) })
    }

    /// The socket's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Wakes the listener (the device's stop flag must already be set), joins it and removes the
    /// socket file.
    pub(crate) fn stop(mut self) {
        // shutdown(2) on a listening socket makes a blocked accept return at once.
        // SAFETY: the listener is owned by the thread joined below, so the descriptor is open.
        unsafe {
            libc::shutdown(self.listener_fd, libc::SHUT_RDWR);
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("UAPI thread panicked");
        }
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the UAPI socket");
        }
    }
}

fn serve(listener: &UnixListener, device: &DeviceHandle) {
    for conn in listener.incoming() {
        if device.stopping() {
            return;
        }
        match conn {
            Ok(stream) => {
                if let Err(e) = serve_client(stream, device) {
                    tracing::debug!(error = %e, "UAPI client error");
                }
            }
            Err(e) => {
                if device.stopping() {
                    return;
                }
                tracing::debug!(error = %e, "UAPI accept failed");
            }
        }
    }
}

/// Answers requests on one connection until the client closes it.
fn serve_client(stream: UnixStream, device: &DeviceHandle) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = SecretLines::new(stream);
    let mut line = SecretText::with_capacity(LINE_MAX);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        match line.as_str().trim_end_matches('\n') {
            "" => continue,
            "get=1" => {
                read_body(&mut reader)?;
                write_get(&device.dump(), &mut writer)?;
            }
            "set=1" => {
                let body = read_body(&mut reader)?;
                let errno = match parse_set(body.as_str()).and_then(|changes| device.apply(&changes)) {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::warn!(error = %e, "UAPI set refused");
                        e.errno()
                    }
                };
                writer.write_all(format!("errno={errno}\n\n").as_bytes())?;
            }
            _ => {
                writer.write_all(format!("errno={}\n\n", libc::EPROTO).as_bytes())?;
                return Ok(());
            }
        }
    }
}

/// Reads `key=value` lines up to the blank line (or end of stream).
fn read_body<R: io::Read>(reader: &mut SecretLines<R>) -> io::Result<SecretText> {
    let mut body = SecretText::with_capacity(BUFFER_HINT);
    loop {
        let start = body.len();
        if reader.read_line(&mut body)? == 0 || &body.as_str()[start..] == "\n" {
            return Ok(body);
        }
    }
}

/// A `set=1` body's expected size: a few peers' lines.
const BUFFER_HINT: usize = 4096;
