//! Sealing a bundle for Secrets Manager and opening one read from it.
//!
//! A sealed bundle is the bundle's compact JSON cut into shards of at most [`MAX_SHARD_BYTES`]
//! (one secret value each: `meshcrypt/<cluster>/<n>`), and a manifest (`meshcrypt/<cluster>`)
//! naming the cluster, the generation and each shard's length and SHA-256, signed with the
//! cluster's Ed25519 key. The writer puts the shards first and the manifest last; a reader that
//! meets a shard of another generation (a write under way) sees [`Error::Torn`] and reads that
//! shard's previous version, or tries again: it never assembles a mix.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::bundle::{Bundle, VERSION, Wire};
use crate::error::Error;

/// The largest shard: AWS Secrets Manager's limit on a secret value (`SecretBinary`, 65,536
/// bytes; "Quotas for AWS Secrets Manager", AWS documentation).
pub const MAX_SHARD_BYTES: usize = 65_536;

/// What the signature covers, after this prefix: the manifest without its signature.
const DOMAIN: &[u8] = b"meshcrypt bundle manifest v1\0";

/// The signed table of contents of a sealed bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version: 1.
    pub v: u32,
    /// The cluster id.
    pub cluster: String,
    /// The bundle's generation.
    pub generation: u64,
    /// Each shard's SHA-256 (hex) and length in bytes, in order.
    pub shards: Vec<ShardRef>,
    /// The Ed25519 signature (base64) over [`DOMAIN`] and the manifest without this field.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub signature: Option<String>,
}

/// One shard as the manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRef {
    /// SHA-256 of the shard, lower-case hex.
    pub sha256: String,
    /// Its length in bytes.
    pub len: usize,
}

/// A bundle ready to write: the manifest and the shards, as bytes, and the manifest as written
/// (what the next publish compares its shards with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The signed manifest.
    pub signed: Manifest,
    /// The signed manifest (JSON), as written.
    pub manifest: Vec<u8>,
    /// The shards, in order (each at most [`MAX_SHARD_BYTES`]).
    pub shards: Vec<Vec<u8>>,
}

/// What a reader trusts about a peer cluster: its id, its pinned signing key, and the last
/// generation it accepted from it.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    /// The peer cluster's id.
    pub cluster: &'a str,
    /// Its signing key's public half, pinned in this cluster's configuration.
    pub key: &'a VerifyingKey,
    /// The last generation accepted from it (`None`: none yet).
    pub last_generation: Option<u64>,
}

/// Validates `bundle`, encodes it, cuts it into shards and signs the manifest with `key`.
pub fn seal(bundle: &Bundle, key: &SigningKey) -> Result<Sealed, Error> {
    bundle.validate()?;
    let body = serde_json::to_vec(&bundle.to_wire()).map_err(Error::Encode)?;
    let shards: Vec<Vec<u8>> = body.chunks(MAX_SHARD_BYTES).map(<[u8]>::to_vec).collect();
    let mut manifest = Manifest {
        v: VERSION,
        cluster: bundle.cluster.clone(),
        generation: bundle.generation,
        shards: shards.iter().map(|s| ShardRef { sha256: digest(s), len: s.len() }).collect(),
        signature: None,
    };
    let signature = key.sign(&signed_bytes(&manifest)?);
    manifest.signature = Some(STANDARD.encode(signature.to_bytes()));
    Ok(Sealed { manifest: serde_json::to_vec(&manifest).map_err(Error::Encode)?, signed: manifest, shards })
}

impl Manifest {
    /// Parses a manifest and checks it against `trust`: the format, the signature with the pinned
    /// key, the cluster, and that its generation is not older than the last accepted. Only then
    /// is it worth reading the shards it names.
    pub fn verify(bytes: &[u8], trust: &Trust<'_>) -> Result<Self, Error> {
        let manifest: Self =
            serde_json::from_slice(bytes).map_err(|source| Error::Decode { what: "manifest", source })?;
        if manifest.v != VERSION {
            return Err(Error::Version(manifest.v));
        }
        let Some(encoded) = &manifest.signature else { return Err(Error::Unsigned) };
        let raw: [u8; 64] = STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(Error::BadSignature(ed25519_dalek::SignatureError::new()))?;
        let unsigned = Self { signature: None, ..manifest.clone() };
        trust
            .key
            .verify_strict(&signed_bytes(&unsigned)?, &Signature::from_bytes(&raw))
            .map_err(Error::BadSignature)?;
        if manifest.cluster != trust.cluster {
            return Err(Error::ForeignCluster {
                expected: trust.cluster.to_owned(),
                found: manifest.cluster,
            });
        }
        if let Some(last) = trust.last_generation
            && manifest.generation < last
        {
            return Err(Error::Rollback { last, found: manifest.generation });
        }
        Ok(manifest)
    }
}

/// Joins `shards` as `manifest` (already verified) names them and decodes the bundle: every
/// shard must have the manifest's length and SHA-256, and the bundle the manifest's cluster and
/// generation; the bundle is validated.
pub fn open(manifest: &Manifest, shards: &[Vec<u8>]) -> Result<Bundle, Error> {
    if shards.len() != manifest.shards.len() {
        return Err(Error::ShardCount { expected: manifest.shards.len(), found: shards.len() });
    }
    for (index, (shard, named)) in shards.iter().zip(&manifest.shards).enumerate() {
        if shard.len() != named.len || digest(shard) != named.sha256 {
            return Err(Error::Torn { index });
        }
    }
    let wire: Wire = serde_json::from_slice(&shards.concat())
        .map_err(|source| Error::Decode { what: "bundle", source })?;
    let bundle = Bundle::from_wire(wire)?;
    if bundle.cluster != manifest.cluster || bundle.generation != manifest.generation {
        return Err(Error::Inconsistent { cluster: bundle.cluster, generation: bundle.generation });
    }
    Ok(bundle)
}

fn signed_bytes(unsigned: &Manifest) -> Result<Vec<u8>, Error> {
    let mut out = DOMAIN.to_vec();
    out.extend(serde_json::to_vec(unsigned).map_err(Error::Encode)?);
    Ok(out)
}

pub(crate) fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests;
