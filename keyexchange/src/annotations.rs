//! The `meshcrypt.dev/` annotations a node publishes about its own key, and their strict parser.
//!
//! A node's annotations carry only its key and the key's metadata, never an address or a prefix:
//! endpoints and allowed IPs come from fields the node cannot choose for itself.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::{Error, PublicKey};

/// The field manager meshcrypt's agents write their Node's annotations with (server-side
/// apply). Any other manager owning a `meshcrypt.dev/` annotation is a foreign writer.
pub const AGENT_FIELD_MANAGER: &str = "meshcrypt";
/// Every meshcrypt annotation starts with this prefix.
pub const ANNOTATION_PREFIX: &str = "meshcrypt.dev/";
/// The node's WireGuard public key, in WireGuard's base64 form.
pub const PUBLIC_KEY: &str = "meshcrypt.dev/public-key";
/// How many times the node's key has been replaced: a decimal integer that only grows.
pub const KEY_EPOCH: &str = "meshcrypt.dev/key-epoch";
/// When the current key was generated, RFC 3339 in UTC to the second (`2026-11-28T20:40:52Z`).
pub const KEY_CREATED: &str = "meshcrypt.dev/key-created";
/// The public key's fingerprint ([`PublicKey::fingerprint`]: `sha256:` and 16 hex digits), for
/// inventories read by people. The mesh never reads it (it uses the key itself), so parsing
/// leaves it unchecked and costs no hash per Node; `meshcrypt audit` checks it against the key.
pub const KEY_FINGERPRINT: &str = "meshcrypt.dev/key-fingerprint";

/// What a node says about its key. Parsed strictly: one spelling per value, so that two agents
/// never disagree about what an annotation means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeKeyAnnotations {
    /// The node's public key.
    pub public_key: PublicKey,
    /// The key's epoch: 0 for the first key, one more for each rotation.
    pub epoch: u64,
    /// When the key was generated, whole seconds.
    pub created: Timestamp,
}

impl NodeKeyAnnotations {
    /// Reads the key annotations from a Node's annotations.
    ///
    /// `Ok(None)` means the node has published no key (it is not, or not yet, in the mesh). A
    /// published key with a missing or malformed epoch or timestamp, or metadata without a key, is
    /// an error naming the annotation. Unknown `meshcrypt.dev/` keys are ignored so that a newer
    /// agent can add metadata during a rolling upgrade; they are never used for anything.
    pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Option<Self>, Error> {
        let Some(key) = annotations.get(PUBLIC_KEY) else {
            for orphan in [KEY_EPOCH, KEY_CREATED, KEY_FINGERPRINT] {
                if annotations.contains_key(orphan) {
                    return Err(Error::annotation(orphan, format!("present without {PUBLIC_KEY}")));
                }
            }
            return Ok(None);
        };
        let public_key =
            key.parse::<PublicKey>().map_err(|e| Error::annotation(PUBLIC_KEY, e.to_string()))?;
        let epoch = parse_epoch(required(annotations, KEY_EPOCH)?)?;
        let created = parse_created(required(annotations, KEY_CREATED)?)?;
        Ok(Some(Self { public_key, epoch, created }))
    }

    /// The annotations to publish: the ones [`NodeKeyAnnotations::parse`] reads and the key's
    /// fingerprint ([`KEY_FINGERPRINT`]).
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (PUBLIC_KEY.to_owned(), self.public_key.to_string()),
            (KEY_EPOCH.to_owned(), self.epoch.to_string()),
            (KEY_CREATED.to_owned(), format_created(self.created)),
            (KEY_FINGERPRINT.to_owned(), self.public_key.fingerprint()),
        ])
    }
}

/// The field managers that own at least one `meshcrypt.dev/` annotation of `node`, from its
/// `metadata.managedFields`. The API server records every write there, but the manager's name is
/// the client's to choose: this names writers that say who they are (kubectl, controllers);
/// the admission policy, not this, keeps other principals out. Only the agent's own manager
/// ([`AGENT_FIELD_MANAGER`]) should ever appear. Sorted, each once: a vector, not a set, as
/// every Node's view keeps one (a one-entry `BTreeSet` allocates a 280-byte leaf).
pub fn annotation_writers(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<String> {
    let mut writers: Vec<String> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry.fields_v1.as_ref().and_then(|f| f.0["f:metadata"]["f:annotations"].as_object()).is_some_and(
                |owned| {
                    owned
                        .keys()
                        .any(|k| k.strip_prefix("f:").is_some_and(|k| k.starts_with(ANNOTATION_PREFIX)))
                },
            )
        })
        .filter_map(|entry| entry.manager.clone())
        .collect();
    writers.sort_unstable();
    writers.dedup();
    writers
}

fn required<'a>(annotations: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str, Error> {
    annotations
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| Error::annotation(key, format!("missing, required beside {PUBLIC_KEY}")))
}

fn parse_epoch(text: &str) -> Result<u64, Error> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(Error::annotation(KEY_EPOCH, "want a decimal integer without sign or leading zeros"));
    }
    text.parse::<u64>().map_err(|e| Error::annotation(KEY_EPOCH, e.to_string()))
}

fn parse_created(text: &str) -> Result<Timestamp, Error> {
    let reason = "want RFC 3339 UTC to the second, like 2026-11-28T20:40:52Z";
    let ts: Timestamp = text.parse().map_err(|_| Error::annotation(KEY_CREATED, reason))?;
    if format_created(ts) != text {
        return Err(Error::annotation(KEY_CREATED, reason));
    }
    Ok(ts)
}

fn format_created(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrivateKey;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn parse_table() {
        let public = PrivateKey::generate().public_key();
        let key = public.to_string();
        let k = key.as_str();
        let fp = public.fingerprint();
        let ts = "2026-11-28T20:40:52Z";
        // (annotations, Ok(Some(epoch)) | Ok(None) | Err(annotation named))
        type Want = Result<Option<u64>, &'static str>;
        let cases: Vec<(BTreeMap<String, String>, Want)> = vec![
            (map(&[]), Ok(None)),
            (map(&[("other.io/x", "y")]), Ok(None)),
            (map(&[(PUBLIC_KEY, k), (KEY_EPOCH, "0"), (KEY_CREATED, ts)]), Ok(Some(0))),
            (
                map(&[(PUBLIC_KEY, k), (KEY_EPOCH, "17"), (KEY_CREATED, ts), ("meshcrypt.dev/future", "x")]),
                Ok(Some(17)),
            ),
            (map(&[(PUBLIC_KEY, "short"), (KEY_EPOCH, "0"), (KEY_CREATED, ts)]), Err(PUBLIC_KEY)),
            (map(&[(PUBLIC_KEY, k)]), Err(KEY_EPOCH)),
            (map(&[(PUBLIC_KEY, k), (KEY_EPOCH, "0")]), Err(KEY_CREATED)),
            (map(&[(KEY_EPOCH, "3")]), Err(KEY_EPOCH)),
            (map(&[(KEY_CREATED, ts)]), Err(KEY_CREATED)),
            (
                map(&[(PUBLIC_KEY, k), (KEY_EPOCH, "0"), (KEY_CREATED, ts), (KEY_FINGERPRINT, &fp)]),
                Ok(Some(0)),
            ),
            (map(&[(KEY_FINGERPRINT, &fp)]), Err(KEY_FINGERPRINT)),
            (map(&[(PUBLIC_KEY, k), (KEY_EPOCH, "-1"), (KEY_CREATED, ts)]), Err(KEY_EPOCH)),
            (map(&[(PUBLIC_KEY, k), (KEY_EPOCH, "+1"), (KEY_CREATED, ts)]), Err(KEY_EPOCH)),
            (map(&[(PUBLIC_KEY, k), (KEY_EPOCH, "01"), (KEY_CREATED, ts)]), Err(KEY_EPOCH)),
            (map(&[(PUBLIC_KEY, k), (KEY_EPOCH, ""), (KEY_CREATED, ts)]), Err(KEY_EPOCH)),
            (map(&[(PUBLIC_KEY, k), (KEY_EPOCH, "18446744073709551616"), (KEY_CREATED, ts)]), Err(KEY_EPOCH)),
            (
                map(&[(PUBLIC_KEY, k), (KEY_EPOCH, "1"), (KEY_CREATED, "2026-11-28 20:40:52")]),
                Err(KEY_CREATED),
            ),
            (
                map(&[(PUBLIC_KEY, k), (KEY_EPOCH, "1"), (KEY_CREATED, "2026-11-28T21:40:52+01:00")]),
                Err(KEY_CREATED),
            ),
            (
                map(&[(PUBLIC_KEY, k), (KEY_EPOCH, "1"), (KEY_CREATED, "2026-11-28T20:40:52.5Z")]),
                Err(KEY_CREATED),
            ),
        ];
        for (input, want) in cases {
            let got = NodeKeyAnnotations::parse(&input);
            match (&got, want) {
                (Ok(parsed), Ok(epoch)) => assert_eq!(parsed.as_ref().map(|p| p.epoch), epoch, "{input:?}"),
                (Err(Error::Annotation { key, .. }), Err(named)) => assert_eq!(key, named, "{input:?}"),
                _ => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn annotation_writers_are_the_managers_owning_a_meshcrypt_annotation() {
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "managedFields": [
                {"manager": "meshcrypt", "operation": "Apply", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {"f:meshcrypt.dev/public-key": {}}}}},
                {"manager": "kubectl-annotate", "operation": "Update", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {"f:meshcrypt.dev/key-created": {}}}}},
                {"manager": "karpenter", "operation": "Update", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {"f:karpenter.sh/nodepool-hash": {}}}}},
                {"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:status": {"f:conditions": {}}}},
            ]},
        }))
        .unwrap();
        assert_eq!(annotation_writers(&node.metadata), ["kubectl-annotate", "meshcrypt"]);
    }

    proptest! {
        #[test]
        fn arbitrary_annotations_never_panic(
            key in proptest::option::of(".{0,60}"),
            epoch in proptest::option::of(".{0,24}"),
            created in proptest::option::of(".{0,32}"),
        ) {
            let mut input = BTreeMap::new();
            for (name, value) in [(PUBLIC_KEY, key), (KEY_EPOCH, epoch), (KEY_CREATED, created)] {
                if let Some(value) = value {
                    input.insert(name.to_owned(), value);
                }
            }
            let _ = NodeKeyAnnotations::parse(&input);
        }

        #[test]
        fn encode_then_parse_round_trips(seed in any::<[u8; 32]>(), epoch in any::<u64>(), secs in 0i64..4_102_444_800) {
            let Ok(public_key) = PublicKey::from_bytes(seed) else { return Ok(()) };
            let value = NodeKeyAnnotations { public_key, epoch, created: Timestamp::from_second(secs).unwrap() };
            let parsed = NodeKeyAnnotations::parse(&value.to_annotations()).unwrap();
            prop_assert_eq!(parsed, Some(value));
        }
    }
}
