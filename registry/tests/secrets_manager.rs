//! The exchange against moto's Secrets Manager server (a real HTTP server speaking the AWS API) on
//! a loopback port: publish and fetch 5,000 nodes, rewrite only what changed, read during a
//! rewrite, retry without a new version, refuse a tampered manifest, and fail cleanly when the
//! server is gone. Region, endpoint and credentials are given explicitly: never the default chain.

use ed25519_dalek::SigningKey;
use meshcrypt_keyexchange::PrivateKey;
use meshcrypt_registry::testing::{MotoServer, nodes};
use meshcrypt_registry::{
    Bundle, Error, Fetched, Names, SecretStore, SecretsManager, Stage, Trust, fetch, publish, seal,
};
use rand_core::OsRng;

fn names() -> Names {
    Names { prefix: "meshcrypt".into(), cluster: "prod-a".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_nodes_travel_through_secrets_manager_and_only_changes_are_rewritten() {
    let moto = MotoServer::start();
    let store = SecretsManager::new(moto.client());
    let key = SigningKey::generate(&mut OsRng);
    let pinned = key.verifying_key();
    let trust = Trust { cluster: "prod-a", key: &pinned, last_generation: None };
    assert_eq!(fetch(&store, &names(), &trust, None).await.unwrap(), Fetched::Missing);

    let first = Bundle { cluster: "prod-a".into(), generation: 1, nodes: nodes(5_000, 1) };
    let sealed = seal(&first, &key).unwrap();
    let wrote = publish(&store, &names(), &sealed, None).await.unwrap();
    assert_eq!(wrote.written, sealed.shards.len() + 1);
    let Fetched::Bundle { version, manifest, bundle } = fetch(&store, &names(), &trust, None).await.unwrap()
    else {
        panic!("a bundle")
    };
    assert_eq!(bundle, first);
    assert_eq!(fetch(&store, &names(), &trust, Some(&version)).await.unwrap(), Fetched::Unchanged);

    // A retried publish (same generation, same content) adds no version.
    publish(&store, &names(), &sealed, None).await.unwrap();
    assert_eq!(store.current_version(&names().manifest()).await.unwrap(), Some(version.clone()));

    // One node's key changes near the end: the shards before it are not rewritten.
    let mut changed = first.nodes.clone();
    changed[4_990].public_key = PrivateKey::generate().public_key();
    let second = Bundle { generation: 2, nodes: changed, ..first.clone() };
    let resealed = seal(&second, &key).unwrap();
    let wrote = publish(&store, &names(), &resealed, Some(&manifest)).await.unwrap();
    assert!(wrote.unchanged > 0 && wrote.written < resealed.shards.len() + 1, "{wrote:?}");
    let trust = Trust { last_generation: Some(1), ..trust };
    let Fetched::Bundle { bundle, .. } = fetch(&store, &names(), &trust, Some(&version)).await.unwrap()
    else {
        panic!("the new bundle")
    };
    assert_eq!(bundle, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_during_a_rewrite_takes_the_previous_shard_and_a_tampered_manifest_is_refused() {
    let moto = MotoServer::start();
    let store = SecretsManager::new(moto.client());
    let key = SigningKey::generate(&mut OsRng);
    let pinned = key.verifying_key();
    let trust = Trust { cluster: "prod-a", key: &pinned, last_generation: None };
    let old = Bundle { cluster: "prod-a".into(), generation: 1, nodes: nodes(1_500, 1) };
    publish(&store, &names(), &seal(&old, &key).unwrap(), None).await.unwrap();

    // The writer of generation 2 has put shard 0 and not yet the manifest.
    let mut changed = old.nodes.clone();
    changed[0].public_key = PrivateKey::generate().public_key();
    let new = seal(&Bundle { generation: 2, nodes: changed, ..old.clone() }, &key).unwrap();
    store.put(&names().shard(0), &new.shards[0], &"a".repeat(64)).await.unwrap();
    assert_eq!(
        store.get(&names().shard(0), Stage::Current).await.unwrap().as_deref(),
        Some(&new.shards[0][..])
    );
    let Fetched::Bundle { bundle, .. } = fetch(&store, &names(), &trust, None).await.unwrap() else {
        panic!()
    };
    assert_eq!(bundle, old, "generation 1, whole, from shard 0's previous version");

    // Someone with write access but not the signing key raises the generation.
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&store.get(&names().manifest(), Stage::Current).await.unwrap().unwrap())
            .unwrap();
    manifest["generation"] = 99.into();
    store.put(&names().manifest(), &serde_json::to_vec(&manifest).unwrap(), &"b".repeat(64)).await.unwrap();
    assert!(matches!(fetch(&store, &names(), &trust, None).await, Err(Error::BadSignature(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_secrets_manager_is_an_error_the_caller_can_ride_out() {
    let moto = MotoServer::start();
    let store = SecretsManager::new(moto.client());
    drop(moto);
    let key = SigningKey::generate(&mut OsRng).verifying_key();
    let trust = Trust { cluster: "prod-a", key: &key, last_generation: None };
    match fetch(&store, &names(), &trust, None).await {
        Err(Error::SecretsManager { op: "DescribeSecret", .. }) => {}
        other => panic!("want a DescribeSecret failure, got {other:?}"),
    }
}
