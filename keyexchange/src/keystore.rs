//! The private key file: `<state-dir>/private.key`, mode 0600 in a 0700 directory, replaced
//! atomically (temporary file, fsync, rename, fsync of the directory) and reused across restarts.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::{Error, PrivateKey};

/// The key file's name inside the state directory.
pub const KEY_FILE: &str = "private.key";
const TEMP_FILE: &str = ".private.key.tmp";

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
        match fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) => return Err(Error::io(&dir, e)),
        }
        let meta = fs::symlink_metadata(&dir).map_err(|e| Error::io(&dir, e))?;
        check_private(&dir, &meta, true)?;
        Ok(Self { dir })
    }

    /// The key file's path.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// Loads the stored key, or `None` if there is none yet.
    pub fn load(&self) -> Result<Option<PrivateKey>, Error> {
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
        PrivateKey::from_base64(text.trim_end_matches('\n')).map(Some)
    }

    /// Loads the stored key, or generates one and stores it. The flag is true when a new key was
    /// created.
    pub fn load_or_create(&self) -> Result<(PrivateKey, bool), Error> {
        if let Some(key) = self.load()? {
            return Ok((key, false));
        }
        let key = PrivateKey::generate();
        self.save(&key)?;
        tracing::info!(path = %self.key_path().display(), fingerprint = %key.public_key().fingerprint(), "generated a new node key");
        Ok((key, true))
    }

    /// When the stored key was written: the key file's modification time, which only a new key
    /// (an atomic replace) changes.
    pub fn created(&self) -> Result<jiff::Timestamp, Error> {
        let path = self.key_path();
        let modified =
            fs::symlink_metadata(&path).and_then(|m| m.modified()).map_err(|e| Error::io(&path, e))?;
        let ts = jiff::Timestamp::try_from(modified)
            .map_err(|e| Error::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        // Whole seconds: the annotation carries seconds.
        jiff::Timestamp::from_second(ts.as_second()).map_err(|e| Error::io(&path, std::io::Error::other(e)))
    }

    /// Stores `key`, atomically replacing any previous key: a reader sees the old key or the new
    /// one, never a mix, even across a crash.
    pub fn save(&self, key: &PrivateKey) -> Result<(), Error> {
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
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(|e| Error::io(&temp, e))?;
        file.sync_all().map_err(|e| Error::io(&temp, e))?;
        drop(file);
        let path = self.key_path();
        fs::rename(&temp, &path).map_err(|e| Error::io(&path, e))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(&self.dir, e))?;
        Ok(())
    }
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
        assert_eq!(first.public_key(), second.public_key());
    }

    #[test]
    fn save_replaces_atomically_and_leaves_no_temp_file() {
        let (tmp, store) = store();
        let (old, _) = store.load_or_create().unwrap();
        let old_inode = fs::metadata(store.key_path()).unwrap().ino();
        let new = PrivateKey::generate();
        store.save(&new).unwrap();
        let meta = fs::metadata(store.key_path()).unwrap();
        // rename(2) puts a new inode in place: readers holding the old file keep the old key.
        assert_ne!(meta.ino(), old_inode);
        assert_eq!(meta.mode() & 0o7777, 0o600);
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.public_key(), new.public_key());
        assert_ne!(loaded.public_key(), old.public_key());
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
    }
}
