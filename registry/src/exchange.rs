//! Writing a sealed bundle to a [`SecretStore`] and reading a peer cluster's, in the order that
//! keeps readers consistent: shards first, the manifest last; a reader checks the manifest first
//! and takes a shard's previous version when its current one belongs to a newer write.

use crate::bundle::Bundle;
use crate::error::Error;
use crate::seal::{Manifest, Sealed, Trust, digest, open};
use crate::store::{SecretStore, Stage};

/// The secret names of one cluster's bundle: the manifest `<prefix>/<cluster>` and shard `n` at
/// `<prefix>/<cluster>/<n>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The name prefix (`meshcrypt` by default); IAM policies are written against it.
    pub prefix: String,
    /// The cluster id.
    pub cluster: String,
}

impl Names {
    /// The manifest's secret name.
    pub fn manifest(&self) -> String {
        format!("{}/{}", self.prefix, self.cluster)
    }

    /// Shard `n`'s secret name.
    pub fn shard(&self, n: usize) -> String {
        format!("{}/{}/{n}", self.prefix, self.cluster)
    }
}

/// What a publish wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Secret values written (shards that changed, and the manifest).
    pub written: usize,
    /// Shards left as they were (the same content at the same index).
    pub unchanged: usize,
}

/// Writes `sealed`: every shard whose content differs from what `previous` (the manifest last
/// written, if known) names at its index, then the manifest. Each write's request token is
/// derived from the generation, the index and the content, so a retried publish adds no version.
pub async fn publish<S: SecretStore>(
    store: &S,
    names: &Names,
    sealed: &Sealed,
    previous: Option<&Manifest>,
) -> Result<Published, Error> {
    let mut out = Published { written: 0, unchanged: 0 };
    for (n, shard) in sealed.shards.iter().enumerate() {
        let hash = digest(shard);
        if previous.and_then(|m| m.shards.get(n)).is_some_and(|r| r.sha256 == hash && r.len == shard.len()) {
            out.unchanged += 1;
            continue;
        }
        store.put(&names.shard(n), shard, &token(sealed.signed.generation, n, &hash)).await?;
        out.written += 1;
    }
    let hash = digest(&sealed.manifest);
    store
        .put(&names.manifest(), &sealed.manifest, &token(sealed.signed.generation, usize::MAX, &hash))
        .await?;
    out.written += 1;
    Ok(out)
}

/// A 64-character request token: SHA-256 over the generation, the index and the content's hash.
fn token(generation: u64, index: usize, content_hash: &str) -> String {
    digest(format!("{generation}/{index}/{content_hash}").as_bytes())
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The manifest's current version is the one seen last: nothing to read.
    Unchanged,
    /// The peer cluster has published nothing yet.
    Missing,
    /// A bundle, checked: the manifest's version id (to pass back as `seen`), the manifest and
    /// the bundle.
    Bundle {
        /// The manifest's version id.
        version: String,
        /// The verified manifest.
        manifest: Manifest,
        /// The bundle.
        bundle: Bundle,
    },
}

/// Reads the peer cluster's bundle unless the manifest's current version is `seen`: the manifest
/// (verified against `trust`), then each shard — its previous version when the current one does
/// not match (a write under way). Errors leave the caller's last good bundle in force.
pub async fn fetch<S: SecretStore>(
    store: &S,
    names: &Names,
    trust: &Trust<'_>,
    seen: Option<&str>,
) -> Result<Fetched, Error> {
    let Some(version) = store.current_version(&names.manifest()).await? else { return Ok(Fetched::Missing) };
    if seen == Some(version.as_str()) {
        return Ok(Fetched::Unchanged);
    }
    let Some(bytes) = store.get(&names.manifest(), Stage::Current).await? else {
        return Ok(Fetched::Missing);
    };
    let manifest = Manifest::verify(&bytes, trust)?;
    let mut shards = Vec::with_capacity(manifest.shards.len());
    for (n, named) in manifest.shards.iter().enumerate() {
        let mut found = None;
        for stage in [Stage::Current, Stage::Previous] {
            if let Some(shard) = store.get(&names.shard(n), stage).await?
                && shard.len() == named.len
                && digest(&shard) == named.sha256
            {
                found = Some(shard);
                break;
            }
        }
        shards.push(found.ok_or(Error::Torn { index: n })?);
    }
    let bundle = open(&manifest, &shards)?;
    Ok(Fetched::Bundle { version, manifest, bundle })
}
