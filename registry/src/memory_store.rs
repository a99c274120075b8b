//! An in-memory [`SecretStore`] for narrow tests of the seam (feature `test-support`): versions
//! follow Secrets Manager's rules for request tokens (the token becomes the version id; the same
//! token with the same value adds no version, with another value is refused), and a write can be
//! applied while its answer is lost, as when a response times out.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueError;

use crate::error::Error;
use crate::store::{SecretStore, Stage, failed};

/// One version: its id (the request token), value and creation time.
type Version = (String, Vec<u8>, SystemTime);

/// Secrets in memory, oldest version first.
#[derive(Debug, Default)]
pub struct MemoryStore {
    secrets: Mutex<BTreeMap<String, Vec<Version>>>,
    lose: AtomicUsize,
}

impl MemoryStore {
    /// The next `n` writes are applied, then answered with a timeout.
    pub fn lose_responses(&self, n: usize) {
        self.lose.store(n, Ordering::SeqCst);
    }

    /// How many versions secret `name` has.
    pub fn versions(&self, name: &str) -> usize {
        self.lock().get(name).map_or(0, Vec::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Version>>> {
        self.secrets.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SecretStore for MemoryStore {
    async fn current_version(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(self.lock().get(name).and_then(|v| v.last()).map(|(id, _, _)| id.clone()))
    }

    async fn version_dates(&self, name: &str) -> Result<Vec<SystemTime>, Error> {
        Ok(self.lock().get(name).map(|v| v.iter().map(|(_, _, at)| *at).collect()).unwrap_or_default())
    }

    async fn get(&self, name: &str, stage: Stage) -> Result<Option<Vec<u8>>, Error> {
        let secrets = self.lock();
        let Some(versions) = secrets.get(name) else { return Ok(None) };
        let back = match stage {
            Stage::Current => 1,
            Stage::Previous => 2,
        };
        Ok(versions.len().checked_sub(back).map(|i| versions[i].1.clone()))
    }

    async fn put(&self, name: &str, value: &[u8], token: &str) -> Result<(), Error> {
        {
            let mut secrets = self.lock();
            let versions = secrets.entry(name.to_owned()).or_default();
            match versions.iter().find(|(id, _, _)| id == token) {
                Some((_, existing, _)) if existing == value => {}
                Some(_) => {
                    let refused = SdkError::<PutSecretValueError>::construction_failure(
                        "token reused with another value",
                    );
                    return Err(failed("PutSecretValue", name, refused));
                }
                None => versions.push((token.to_owned(), value.to_vec(), SystemTime::now())),
            }
        }
        let lost = self.lose.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if lost {
            return Err(failed(
                "PutSecretValue",
                name,
                SdkError::<PutSecretValueError>::timeout_error("response lost"),
            ));
        }
        Ok(())
    }
}
