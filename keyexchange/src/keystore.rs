//! The private key file: `<state-dir>/private.key`, mode 0600 in a 0700 directory, replaced
//! atomically (temporary file, fsync, rename, fsync of the directory) and reused across restarts.
//! It holds the key in WireGuard's base64 form, the key's epoch (`epoch=N` on a second line) and
//! its creation time (`created=RFC 3339` on a third), so that they can never disagree after a
//! crash, and a `touch`, a copy or a restore of the file cannot change the key's recorded age. A
//! file without the third line (written before it existed) takes its modification time once and
//! is rewritten with it. A rotation is staged first: the next key
//! waits in `<state-dir>/pending.key` (same format, same custody) until the agent has published it
//! where peers can learn it, and only then replaces the key in use; the old key's bytes are
//! overwritten in place before its file is released.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek as _, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::secret_file::read_secret;
use crate::{Error, NodeKeyAnnotations, PrivateKey, SecretText};

/// The key file's name inside the state directory.
pub const KEY_FILE: &str = "private.key";
/// The staged next key's file name inside the state directory.
pub const PENDING_FILE: &str = "pending.key";

/// The stored key with its epoch (how many keys came before it) and creation time.
#[derive(Debug)]
pub struct KeyRecord {
    /// The private key.
    pub key: PrivateKey,
    /// 0 for the node's first key, one more after each rotation.
    pub epoch: u64,
    /// When this key was made (whole seconds), as its file records it.
    pub created: jiff::Timestamp,
}

impl KeyRecord {
    /// What the node publishes about this key.
    pub fn annotations(&self) -> NodeKeyAnnotations {
        NodeKeyAnnotations { public_key: self.key.public_key(), epoch: self.epoch, created: self.created }
    }
}

/// Where a node's private key lives on disk. The directory is created 0700 if missing; an
/// existing directory or key file that group or others can access is refused, not repaired, so
/// that an operator notices a key that may have been exposed.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    /// Opens (creating if needed) the state directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| Error::io(&dir, e))?;
        let meta = fs::symlink_metadata(&dir).map_err(|e| Error::io(&dir, e))?;
        if meta.is_dir() && meta.mode() & 0o077 != 0 && is_empty(&dir)? {
            // An empty directory has exposed nothing yet (kubelet creates hostPath directories
            // 0755): tighten it. A directory that already holds a key is refused below instead.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(&dir, e))?;
            tracing::info!(dir = %dir.display(), "tightened the empty state directory to 0700");
            let meta = fs::symlink_metadata(&dir).map_err(|e| Error::io(&dir, e))?;
            check_private(&dir, &meta, true)?;
            return Ok(Self { dir });
        }
        check_private(&dir, &meta, true)?;
        Ok(Self { dir })
    }

    /// The key file's path.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// The staged next key's path.
    pub fn pending_path(&self) -> PathBuf {
        self.dir.join(PENDING_FILE)
    }

    /// Loads the key in use, or `None` if there is none yet.
    pub fn load(&self) -> Result<Option<KeyRecord>, Error> {
        self.read_recorded(&self.key_path())
    }

    /// Loads the staged next key, or `None` if no rotation is pending.
    pub fn pending(&self) -> Result<Option<KeyRecord>, Error> {
        self.read_recorded(&self.pending_path())
    }

    /// Reads the key file at `path`; one that records no creation time is rewritten with its
    /// modification time, so that the time never moves again.
    fn read_recorded(&self, path: &Path) -> Result<Option<KeyRecord>, Error> {
        match read_key(path)? {
            Some((record, Created::Recorded)) => Ok(Some(record)),
            Some((record, Created::Modified)) => {
                write_private(&self.dir, path, record_text(&record).as_str().as_bytes())?;
                tracing::info!(path = %path.display(), created = %record.created, "recorded the key's creation time in its file");
                Ok(Some(record))
            }
            None => Ok(None),
        }
    }

    /// Loads the stored key, or generates a first one (epoch 0) and stores it. The flag is true
    /// when a new key was created.
    pub fn load_or_create(&self) -> Result<(KeyRecord, bool), Error> {
        if let Some(record) = self.load()? {
            return Ok((record, false));
        }
        let record = self.write(&self.key_path(), PrivateKey::generate(), 0)?;
        tracing::info!(path = %self.key_path().display(), fingerprint = %record.key.public_key().fingerprint(), "generated a new node key");
        Ok((record, true))
    }

    /// Stages a rotation: a fresh key of the next epoch in `pending.key`, which
    /// [`KeyStore::promote_pending`] puts in use once peers can learn it. A rotation already
    /// staged is returned as it is (its public half may already be published).
    pub fn stage_rotation(&self) -> Result<KeyRecord, Error> {
        if let Some(pending) = self.pending()? {
            return Ok(pending);
        }
        let epoch = match self.load()? {
            Some(old) => old.epoch + 1,
            None => 0,
        };
        let record = self.write(&self.pending_path(), PrivateKey::generate(), epoch)?;
        tracing::info!(epoch, fingerprint = %record.key.public_key().fingerprint(), "staged a node key rotation");
        Ok(record)
    }

    /// Puts the staged key in use: `pending.key` atomically replaces `private.key` (a reader sees
    /// the old key or the new one, never a mix, even across a crash), and the old key's bytes are
    /// overwritten on disk (on file systems that write in place, such as ext4 and xfs). Returns the
    /// key now in use, or `None` if no rotation was staged.
    pub fn promote_pending(&self) -> Result<Option<KeyRecord>, Error> {
        let Some(record) = self.pending()? else { return Ok(None) };
        replace(&self.dir, &self.pending_path(), &self.key_path(), Replaced::Overwritten)?;
        tracing::info!(epoch = record.epoch, fingerprint = %record.key.public_key().fingerprint(), "the staged node key is in use");
        Ok(Some(record))
    }

    /// Stores `key` as epoch `epoch`, made now, at `path`, atomically replacing any previous key
    /// there.
    fn write(&self, path: &Path, key: PrivateKey, epoch: u64) -> Result<KeyRecord, Error> {
        let now = jiff::Timestamp::now().as_second();
        let created = jiff::Timestamp::from_second(now).map_err(|e| Error::io(path, invalid_data(e)))?;
        let record = KeyRecord { key, epoch, created };
        write_private(&self.dir, path, record_text(&record).as_str().as_bytes())?;
        Ok(record)
    }
}

/// The key file's text for `record`: the key, `epoch=N`, `created=RFC 3339`, one per line.
fn record_text(record: &KeyRecord) -> SecretText {
    let mut text = SecretText::with_capacity(128);
    text.push_str(&record.key.to_base64());
    text.push_str(&format!("\nepoch={}\ncreated={}\n", record.epoch, record.created));
    text
}

/// Where a key's creation time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Created {
    /// The file's `created=` line.
    Recorded,
    /// The file's modification time (a file written before the line existed).
    Modified,
}

/// Writes `contents` to `path` in `dir` atomically and privately: a 0600 temporary file beside it
/// (`.<name>.tmp`, replacing one a crash left), fsync, rename(2) over `path`, fsync of `dir`; the
/// bytes of the file `path` held before are overwritten. A reader sees the old contents or the
/// new, never a mix, even across a crash. For the key files and other secrets kept beside them.
pub fn write_private(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), Error> {
    write_replacing(dir, path, contents, Replaced::Overwritten)
}

/// Writes `contents` to `path` in `dir` as [`write_private`] does (0600, atomic, durable), but
/// leaves the bytes of the replaced file to the file system: for state that holds no secret (the
/// agent's last known peer set: public keys and addresses), where overwriting the old copy would
/// write it a second time, with a third fsync, on every save.
pub fn write_atomic(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), Error> {
    write_replacing(dir, path, contents, Replaced::Released)
}

/// What becomes of the bytes of the file a write replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replaced {
    /// Overwritten with zeros and flushed (it held a secret).
    Overwritten,
    /// Left to the file system (it held none).
    Released,
}

fn write_replacing(dir: &Path, path: &Path, contents: &[u8], replaced: Replaced) -> Result<(), Error> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp"));
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&temp, e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .map_err(|e| Error::io(&temp, e))?;
    // The umask cannot widen 0600, but a restrictive one could narrow it; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(|e| Error::io(&temp, e))?;
    file.write_all(contents).map_err(|e| Error::io(&temp, e))?;
    file.sync_all().map_err(|e| Error::io(&temp, e))?;
    drop(file);
    replace(dir, &temp, path, replaced)
}

/// Renames `from` over `to` in `dir` (atomic: rename(2)), makes the rename durable, and, if
/// `replaced` says so, overwrites the bytes of the file `to` held before, which was kept open
/// across the rename.
fn replace(dir: &Path, from: &Path, to: &Path, replaced: Replaced) -> Result<(), Error> {
    let old = (replaced == Replaced::Overwritten)
        .then(|| OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(to).ok())
        .flatten();
    fs::rename(from, to).map_err(|e| Error::io(to, e))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    if let Some(old) = old {
        destroy(old).map_err(|e| Error::io(to, e))?;
    }
    Ok(())
}

/// Reads a key file (`None` if it does not exist), refusing one that is not private.
fn read_key(path: &Path) -> Result<Option<(KeyRecord, Created)>, Error> {
    let mut file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    check_private(path, &meta, false)?;
    // One buffer that never grows (a growing buffer would free a copy of the key unzeroed); a key
    // file is a few lines.
    let bytes = read_secret(&mut file, MAX_KEY_FILE).map_err(|e| Error::io(path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::io(path, invalid_data(e)))?;
    let mut lines = text.lines();
    let key = PrivateKey::from_base64(lines.next().unwrap_or_default())?;
    let epoch = match lines.next() {
        None => 0,
        Some(line) => line
            .strip_prefix("epoch=")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::io(path, invalid_data("second line must be epoch=N")))?,
    };
    let (created, how) = match lines.next() {
        None => (modified(path, &meta)?, Created::Modified),
        Some(line) => {
            let created = line
                .strip_prefix("created=")
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .ok_or_else(|| Error::io(path, invalid_data("third line must be created=<RFC 3339 time>")))?;
            (created, Created::Recorded)
        }
    };
    Ok(Some((KeyRecord { key, epoch, created }, how)))
}

/// The largest key file read (bytes): the key (44), the epoch and the creation time fit many
/// times over.
const MAX_KEY_FILE: usize = 4096;

fn is_empty(dir: &Path) -> Result<bool, Error> {
    Ok(fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.next().is_none())
}

/// Overwrites a released key file's contents with zeros and flushes them.
fn destroy(mut old: File) -> std::io::Result<()> {
    let len = old.metadata()?.len();
    old.seek(std::io::SeekFrom::Start(0))?;
    old.write_all(&vec![0u8; usize::try_from(len).unwrap_or(0)])?;
    old.sync_all()
}

fn modified(path: &Path, meta: &fs::Metadata) -> Result<jiff::Timestamp, Error> {
    let modified = meta.modified().map_err(|e| Error::io(path, e))?;
    let ts = jiff::Timestamp::try_from(modified).map_err(|e| Error::io(path, invalid_data(e)))?;
    // Whole seconds: the annotation carries seconds.
    jiff::Timestamp::from_second(ts.as_second()).map_err(|e| Error::io(path, invalid_data(e)))
}

fn invalid_data(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

fn check_private(path: &Path, meta: &fs::Metadata, want_dir: bool) -> Result<(), Error> {
    let mode = meta.mode() & 0o7777;
    let right_type = if want_dir { meta.is_dir() } else { meta.is_file() };
    if !right_type || mode & 0o077 != 0 {
        return Err(Error::InsecurePermissions { path: path.to_owned(), mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    /// Where [`write_private`] stages the key file.
    const TEMP_FILE: &str = ".private.key.tmp";

    fn store() -> (tempfile::TempDir, KeyStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = KeyStore::open(tmp.path().join("state")).unwrap();
        (tmp, store)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn creates_a_0600_key_in_a_0700_directory() {
        let (tmp, store) = store();
        let (_, created) = store.load_or_create().unwrap();
        assert!(created);
        assert_eq!(mode(&store.key_path()), 0o600);
        assert_eq!(mode(&tmp.path().join("state")), 0o700);
    }

    #[test]
    fn the_same_key_comes_back_after_a_restart() {
        let (tmp, store) = store();
        let (first, _) = store.load_or_create().unwrap();
        let reopened = KeyStore::open(tmp.path().join("state")).unwrap();
        let (second, created) = reopened.load_or_create().unwrap();
        assert!(!created);
        assert_eq!(first.key.public_key(), second.key.public_key());
        assert_eq!((first.epoch, first.created), (second.epoch, second.created));
    }

    #[test]
    fn rotation_replaces_atomically_bumps_the_epoch_and_destroys_the_old_key() {
        let (tmp, store) = store();
        let (old, _) = store.load_or_create().unwrap();
        assert_eq!(old.epoch, 0);
        // A reader holding the old file (as rename(2) lets it) must find no key left in it.
        let mut held = File::open(store.key_path()).unwrap();
        let old_inode = held.metadata().unwrap().ino();
        let staged = store.stage_rotation().unwrap();
        // Staged, not in use: the key in use is still the old one, and staging is idempotent.
        assert_eq!(store.load().unwrap().unwrap().key.public_key(), old.key.public_key());
        assert_eq!(store.stage_rotation().unwrap().key.public_key(), staged.key.public_key());
        assert_eq!(mode(&store.pending_path()), 0o600);
        let new = store.promote_pending().unwrap().unwrap();
        assert_eq!(new.key.public_key(), staged.key.public_key());
        assert!(store.pending().unwrap().is_none());
        assert!(store.promote_pending().unwrap().is_none());
        let meta = fs::metadata(store.key_path()).unwrap();
        assert_ne!(meta.ino(), old_inode);
        assert_eq!(meta.mode() & 0o7777, 0o600);
        let mut leftover = Vec::new();
        held.read_to_end(&mut leftover).unwrap();
        assert!(
            !leftover.is_empty() && leftover.iter().all(|b| *b == 0),
            "old key bytes remain: {leftover:?}"
        );
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.key.public_key(), new.key.public_key());
        assert_ne!(loaded.key.public_key(), old.key.public_key());
        assert_eq!((loaded.epoch, new.epoch), (1, 1));
        assert_eq!(store.stage_rotation().unwrap().epoch, 2);
        store.promote_pending().unwrap();
        assert_eq!(loaded.annotations().public_key, new.key.public_key());
        let names: Vec<_> =
            fs::read_dir(tmp.path().join("state")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE)]);
    }

    #[test]
    fn a_private_write_overwrites_the_replaced_bytes_and_an_atomic_one_leaves_them() {
        type Write = fn(&Path, &Path, &[u8]) -> Result<(), Error>;
        let writers: [(&str, Write, bool); 2] =
            [("write_private", write_private, true), ("write_atomic", write_atomic, false)];
        for (name, write, overwritten) in writers {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("state.json");
            write(tmp.path(), &path, b"old contents").unwrap();
            // A reader holding the old file, as rename(2) lets it.
            let mut held = File::open(&path).unwrap();
            write(tmp.path(), &path, b"new").unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"new", "{name}");
            assert_eq!(mode(&path), 0o600, "{name}");
            let mut old = Vec::new();
            held.read_to_end(&mut old).unwrap();
            let expected: &[u8] = if overwritten { &[0; 12] } else { b"old contents" };
            assert_eq!(old, expected, "{name}");
            let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, vec![std::ffi::OsString::from("state.json")], "{name}: no temporary file left");
        }
    }

    #[test]
    fn a_leftover_temp_file_from_a_crash_does_not_block_saving() {
        let (tmp, store) = store();
        fs::write(tmp.path().join("state").join(TEMP_FILE), "garbage").unwrap();
        store.load_or_create().unwrap();
        assert!(!tmp.path().join("state").join(TEMP_FILE).exists());
    }

    #[test]
    fn refuses_files_and_directories_others_can_read() {
        for (file_mode, dir_mode, ok) in [
            (0o600, 0o700, true),
            (0o400, 0o700, true),
            (0o640, 0o700, false),
            (0o604, 0o700, false),
            (0o660, 0o700, false),
            (0o600, 0o750, false),
            (0o600, 0o705, false),
        ] {
            let (tmp, store) = store();
            store.load_or_create().unwrap();
            fs::set_permissions(store.key_path(), fs::Permissions::from_mode(file_mode)).unwrap();
            let dir = tmp.path().join("state");
            fs::set_permissions(&dir, fs::Permissions::from_mode(dir_mode)).unwrap();
            let result = KeyStore::open(&dir).and_then(|s| s.load());
            assert_eq!(result.is_ok(), ok, "file {file_mode:o} dir {dir_mode:o}: {result:?}");
            if !ok {
                assert!(matches!(result, Err(Error::InsecurePermissions { .. })));
            }
        }
    }

    #[test]
    fn an_empty_open_directory_is_tightened_but_one_holding_a_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        KeyStore::open(&dir).unwrap().load_or_create().unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(KeyStore::open(&dir), Err(Error::InsecurePermissions { .. })));
    }

    #[test]
    fn refuses_a_symlinked_key_file() {
        let (tmp, store) = store();
        let elsewhere = tmp.path().join("elsewhere.key");
        fs::write(&elsewhere, PrivateKey::generate().to_base64().as_bytes()).unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, store.key_path()).unwrap();
        let err = store.load().unwrap_err();
        assert!(
            matches!(err, Error::Io { ref source, .. } if source.raw_os_error() == Some(libc::ELOOP)),
            "{err:?}"
        );
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_not_a_new_key() {
        let (_tmp, store) = store();
        store.load_or_create().unwrap();
        fs::write(store.key_path(), "not a key\n").unwrap();
        assert!(matches!(store.load(), Err(Error::KeyEncoding(_))));
        assert!(store.load_or_create().is_err());
        let valid = PrivateKey::generate().to_base64();
        fs::write(store.key_path(), format!("{}\nepoch=x\n", valid.as_str())).unwrap();
        assert!(matches!(store.load(), Err(Error::Io { .. })));
    }

    #[test]
    fn a_plain_wireguard_key_file_is_epoch_zero() {
        let (_tmp, store) = store();
        let key = PrivateKey::generate();
        fs::write(store.key_path(), format!("{}\n", key.to_base64().as_str())).unwrap();
        fs::set_permissions(store.key_path(), fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!((loaded.key.public_key(), loaded.epoch), (key.public_key(), 0));
    }

    /// Sets `path`'s modification time to `secs` after the epoch.
    fn touch(path: &Path, secs: u64) {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).unwrap();
    }

    #[test]
    fn the_creation_time_is_the_records_not_the_files() {
        let (_tmp, store) = store();
        let (first, _) = store.load_or_create().unwrap();
        // A touch, a copy or a restore changes the file's time, never the key's.
        touch(&store.key_path(), 1_000_000_000);
        let again = store.load().unwrap().unwrap();
        assert_eq!(again.created, first.created);
        let text = fs::read_to_string(store.key_path()).unwrap();
        assert_eq!(text.lines().nth(2), Some(format!("created={}", first.created).as_str()));
        let bad = format!("{}\nepoch=0\ncreated=yesterday\n", text.lines().next().unwrap());
        fs::write(store.key_path(), bad).unwrap();
        assert!(matches!(store.load(), Err(Error::Io { .. })), "an unreadable time is an error");
    }

    #[test]
    fn a_file_without_a_creation_time_takes_its_modification_time_once() {
        let (_tmp, store) = store();
        let key = PrivateKey::generate();
        fs::write(store.key_path(), format!("{}\nepoch=3\n", key.to_base64().as_str())).unwrap();
        fs::set_permissions(store.key_path(), fs::Permissions::from_mode(0o600)).unwrap();
        touch(&store.key_path(), 1_700_000_000);
        let loaded = store.load().unwrap().unwrap();
        assert_eq!((loaded.epoch, loaded.created.as_second()), (3, 1_700_000_000));
        touch(&store.key_path(), 1_800_000_000);
        let again = store.load().unwrap().unwrap();
        assert_eq!(again.created.as_second(), 1_700_000_000, "recorded in the file at the first read");
        assert_eq!(mode(&store.key_path()), 0o600);
    }
}
