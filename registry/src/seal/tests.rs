//! Sealing and opening: round trips (5,000 nodes included), a read during a rewrite, and every
//! way a bundle is refused.

use ed25519_dalek::SigningKey;
use meshcrypt_keyexchange::PrivateKey;
use proptest::prelude::*;
use rand_core::OsRng;

use super::*;
use crate::bundle::BundleNode;
use crate::testing::nodes;

fn bundle(generation: u64, nodes: Vec<BundleNode>) -> Bundle {
    Bundle { cluster: "prod-a".into(), generation, nodes }
}

fn trust<'a>(key: &'a VerifyingKey, last: Option<u64>) -> Trust<'a> {
    Trust { cluster: "prod-a", key, last_generation: last }
}

fn read(sealed: &Sealed, trust: &Trust<'_>) -> Result<Bundle, Error> {
    open(&Manifest::verify(&sealed.manifest, trust)?, &sealed.shards)
}

#[test]
fn a_small_bundle_is_one_shard_and_round_trips() {
    let key = SigningKey::generate(&mut OsRng);
    let b = bundle(1, nodes(3, 1));
    let sealed = seal(&b, &key).unwrap();
    assert_eq!(sealed.shards.len(), 1);
    assert_eq!(read(&sealed, &trust(&key.verifying_key(), None)).unwrap(), b);
}

#[test]
fn five_thousand_nodes_shard_under_the_secret_limit_and_round_trip() {
    let key = SigningKey::generate(&mut OsRng);
    for prefixes in [1, 8] {
        let b = bundle(42, nodes(5_000, prefixes));
        let sealed = seal(&b, &key).unwrap();
        let total: usize = sealed.shards.iter().map(Vec::len).sum();
        assert_eq!(sealed.shards.len(), total.div_ceil(MAX_SHARD_BYTES), "{prefixes} prefixes a node");
        assert!(sealed.shards.len() > 1);
        assert!(sealed.shards.iter().all(|s| s.len() <= MAX_SHARD_BYTES));
        assert!(sealed.manifest.len() < MAX_SHARD_BYTES, "the manifest fits one secret too");
        eprintln!(
            "FIGURE {prefixes} prefixes/node: {total} bytes, {} shards, manifest {} bytes",
            sealed.shards.len(),
            sealed.manifest.len()
        );
        assert_eq!(read(&sealed, &trust(&key.verifying_key(), Some(41))).unwrap(), b);
    }
}

#[test]
fn a_read_during_a_rewrite_never_assembles_a_mix() {
    let key = SigningKey::generate(&mut OsRng);
    let old = bundle(7, nodes(2_000, 1));
    let mut changed = old.nodes.clone();
    changed[1_000].public_key = PrivateKey::generate().public_key();
    let new = bundle(8, changed);
    let (old_sealed, new_sealed) = (seal(&old, &key).unwrap(), seal(&new, &key).unwrap());
    assert_eq!(old_sealed.shards.len(), new_sealed.shards.len());
    let pinned = key.verifying_key();
    // The writer has put shard 0 of generation 8; the manifest still says 7.
    let manifest = Manifest::verify(&old_sealed.manifest, &trust(&pinned, None)).unwrap();
    let mut mixed = old_sealed.shards.clone();
    mixed[0].clone_from(&new_sealed.shards[0]);
    assert!(matches!(open(&manifest, &mixed), Err(Error::Torn { index: 0 })));
    // Shard 0's previous version (AWSPREVIOUS) completes generation 7.
    mixed[0].clone_from(&old_sealed.shards[0]);
    assert_eq!(open(&manifest, &mixed).unwrap(), old);
    // Once the manifest says 8, generation 8 is read whole.
    assert_eq!(read(&new_sealed, &trust(&pinned, Some(7))).unwrap(), new);
}

/// Re-signs `manifest` (JSON) after `change`, with `key`.
fn resign(manifest: &[u8], key: &SigningKey, change: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let mut m: Manifest = serde_json::from_slice(manifest).unwrap();
    m.signature = None;
    change(&mut m);
    let signature = key.sign(&signed_bytes(&m).unwrap());
    m.signature = Some(STANDARD.encode(signature.to_bytes()));
    serde_json::to_vec(&m).unwrap()
}

fn edit(manifest: &[u8], change: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let mut m: Manifest = serde_json::from_slice(manifest).unwrap();
    change(&mut m);
    serde_json::to_vec(&m).unwrap()
}

#[test]
fn refusals_table() {
    let key = SigningKey::generate(&mut OsRng);
    let other = SigningKey::generate(&mut OsRng);
    let pinned = key.verifying_key();
    let good = seal(&bundle(10, nodes(300, 2)), &key).unwrap();
    let two = seal(&bundle(10, nodes(1_000, 2)), &key).unwrap();
    assert!(two.shards.len() >= 2);
    type Case<'a> = (&'static str, Sealed, Trust<'a>, fn(&Result<Bundle, Error>) -> bool);
    let pinned = &pinned;
    let with = |manifest: Vec<u8>, shards: &[Vec<u8>]| Sealed {
        signed: good.signed.clone(),
        manifest,
        shards: shards.to_vec(),
    };
    let mut flipped = good.shards.clone();
    flipped[0][10] ^= 1;
    let cases: Vec<Case<'_>> = vec![
        ("the good one", good.clone(), trust(pinned, Some(10)), |r| r.is_ok()),
        (
            "unsigned",
            with(edit(&good.manifest, |m| m.signature = None), &good.shards),
            trust(pinned, None),
            |r| matches!(r, Err(Error::Unsigned)),
        ),
        (
            "signature not base64",
            with(edit(&good.manifest, |m| m.signature = Some("!".into())), &good.shards),
            trust(pinned, None),
            |r| matches!(r, Err(Error::BadSignature(_))),
        ),
        (
            "signed by another key",
            with(resign(&good.manifest, &other, |_| {}), &good.shards),
            trust(pinned, None),
            |r| matches!(r, Err(Error::BadSignature(_))),
        ),
        (
            "generation raised after signing",
            with(edit(&good.manifest, |m| m.generation = 11), &good.shards),
            trust(pinned, None),
            |r| matches!(r, Err(Error::BadSignature(_))),
        ),
        (
            "a shard digest replaced after signing",
            with(edit(&good.manifest, |m| m.shards[0].sha256 = "00".repeat(32)), &good.shards),
            trust(pinned, None),
            |r| matches!(r, Err(Error::BadSignature(_))),
        ),
        ("a shard altered", with(good.manifest.clone(), &flipped), trust(pinned, None), |r| {
            matches!(r, Err(Error::Torn { index: 0 }))
        }),
        ("a shard missing", with(two.manifest.clone(), &two.shards[1..]), trust(pinned, None), |r| {
            matches!(r, Err(Error::ShardCount { .. }))
        }),
        (
            "shards swapped",
            with(two.manifest.clone(), &{
                let mut swapped = two.shards.clone();
                swapped.swap(0, 1);
                swapped
            }),
            trust(pinned, None),
            |r| matches!(r, Err(Error::Torn { index: 0 })),
        ),
        ("replayed: older than the last accepted", good.clone(), trust(pinned, Some(11)), |r| {
            matches!(r, Err(Error::Rollback { last: 11, found: 10 }))
        }),
        (
            "another cluster's manifest",
            good.clone(),
            Trust { cluster: "prod-c", key: pinned, last_generation: None },
            |r| matches!(r, Err(Error::ForeignCluster { .. })),
        ),
        (
            "a manifest signing another cluster's shards",
            with(
                resign(&good.manifest, &key, |m| {
                    m.shards = foreign_content_refs();
                }),
                &foreign_shards(),
            ),
            trust(pinned, None),
            |r| matches!(r, Err(Error::Inconsistent { .. })),
        ),
        (
            "a newer format",
            with(resign(&good.manifest, &key, |m| m.v = 2), &good.shards),
            trust(pinned, None),
            |r| matches!(r, Err(Error::Version(2))),
        ),
        ("not JSON", with(b"garbage".to_vec(), &good.shards), trust(pinned, None), |r| {
            matches!(r, Err(Error::Decode { what: "manifest", .. }))
        }),
    ];
    for (name, sealed, trust, ok) in cases {
        let got = read(&sealed, &trust);
        assert!(ok(&got), "{name}: {got:?}");
    }
}

/// The shards of a bundle that names cluster "prod-b", and their references, for the
/// inconsistency row (made once).
fn foreign() -> &'static Sealed {
    static FOREIGN: std::sync::OnceLock<Sealed> = std::sync::OnceLock::new();
    FOREIGN.get_or_init(|| {
        let key = SigningKey::generate(&mut OsRng);
        seal(&Bundle { cluster: "prod-b".into(), ..bundle(10, nodes(5, 1)) }, &key).unwrap()
    })
}

fn foreign_shards() -> Vec<Vec<u8>> {
    foreign().shards.clone()
}

fn foreign_content_refs() -> Vec<ShardRef> {
    let m: Manifest = serde_json::from_slice(&foreign().manifest).unwrap();
    m.shards
}

#[test]
fn a_bundle_that_breaks_the_rules_is_not_sealed() {
    let key = SigningKey::generate(&mut OsRng);
    let mut b = bundle(1, nodes(2, 1));
    b.nodes.swap(0, 1);
    assert!(matches!(seal(&b, &key), Err(Error::Invalid(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_valid_bundle_round_trips(count in 0u32..400, prefixes in 0u32..6, generation in any::<u64>()) {
        let key = SigningKey::generate(&mut OsRng);
        let b = bundle(generation, nodes(count, prefixes));
        let sealed = seal(&b, &key).unwrap();
        prop_assert_eq!(read(&sealed, &trust(&key.verifying_key(), Some(generation))).unwrap(), b);
    }
}
