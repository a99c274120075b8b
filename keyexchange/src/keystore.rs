//! The private key file: `<state-dir>/private.key`, mode 0600 in a 0700 directory, replaced
//! atomically (temporary file, fsync, rename, fsync of the directory) and reused across restarts.
//! It holds the key in WireGuard's base64 form and the key's epoch (`epoch=N` on a second line),
//! so that the two can never disagree after a crash. On rotation the old key's bytes are
//! overwritten in place before its file is released.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek as _, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::{Error, NodeKeyAnnotations, PrivateKey};

/// The key file's name inside the state directory.
pub const KEY_FILE: &str = "private.key";
const TEMP_FILE: &str = ".private.key.tmp";

/// The stored key with its epoch (how many keys came before it) and creation time.
#[derive(Debug)]
pub struct KeyRecord {
    /// The private key.
    pub key: PrivateKey,
    /// 0 for the node's first key, one more after each rotation.
    pub epoch: u64,
    /// When this key was written (the key file's modification time, whole seconds).
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

    /// Loads the stored key, or `None` if there is none yet.
    pub fn load(&self) -> Result<Option<KeyRecord>, Error> {
        let path = self.key_path();
        let mut file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        check_private(&path, &meta, false)?;
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text).map_err(|e| Error::io(&path, e))?;
        let mut lines = text.lines();
        let key = PrivateKey::from_base64(lines.next().unwrap_or_default())?;
        let epoch = match lines.next() {
            None => 0,
            Some(line) => line
                .strip_prefix("epoch=")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::io(&path, invalid_data("second line must be epoch=N")))?,
        };
        Ok(Some(KeyRecord { key, epoch, created: modified(&path, &meta)? }))
    }

    /// Loads the stored key, or generates a first one (epoch 0) and stores it. The flag is true
    /// when a new key was created.
    pub fn load_or_create(&self) -> Result<(KeyRecord, bool), Error> {
        if let Some(record) = self.load()? {
            return Ok((record, false));
        }
        let record = self.write(PrivateKey::generate(), 0)?;
        tracing::info!(path = %self.key_path().display(), fingerprint = %record.key.public_key().fingerprint(), "generated a new node key");
        Ok((record, true))
    }

    /// Replaces the key with a fresh one of the next epoch. The old key's bytes are overwritten
    /// on disk (on file systems that write in place, such as ext4 and xfs) and the old key in
    /// memory is zeroized when dropped.
    pub fn rotate(&self) -> Result<KeyRecord, Error> {
        let epoch = match self.load()? {
            Some(old) => old.epoch + 1,
            None => 0,
        };
        let record = self.write(PrivateKey::generate(), epoch)?;
        tracing::info!(epoch, fingerprint = %record.key.public_key().fingerprint(), "rotated the node key");
        Ok(record)
    }

    /// Stores `key` as epoch `epoch`, atomically replacing any previous key: a reader sees the
    /// old key or the new one, never a mix, even across a crash.
    fn write(&self, key: PrivateKey, epoch: u64) -> Result<KeyRecord, Error> {
        let temp = self.dir.join(TEMP_FILE);
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
        let mut text = key.to_base64();
        text.push_str(&format!("\nepoch={epoch}\n"));
        file.write_all(text.as_bytes()).map_err(|e| Error::io(&temp, e))?;
        file.sync_all().map_err(|e| Error::io(&temp, e))?;
        drop(file);
        let path = self.key_path();
        // Hold the old file open across the rename, then overwrite what it held.
        let old = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(&path).ok();
        fs::rename(&temp, &path).map_err(|e| Error::io(&path, e))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(&self.dir, e))?;
        if let Some(old) = old {
            destroy(old).map_err(|e| Error::io(&path, e))?;
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        Ok(KeyRecord { key, epoch, created: modified(&path, &meta)? })
    }
}

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
    use super::*;

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
        let new = store.rotate().unwrap();
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
        assert_eq!(store.rotate().unwrap().epoch, 2);
        assert_eq!(loaded.annotations().public_key, new.key.public_key());
        let names: Vec<_> =
            fs::read_dir(tmp.path().join("state")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE)]);
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
}
