//! Criterion benches of key handling: parsing a public key and a Node's key annotations, which the
//! agent does for every Node on every change.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use meshcrypt_keyexchange::{NodeKeyAnnotations, PrivateKey, PublicKey};

fn bench_parsing(c: &mut Criterion) {
    let public = PrivateKey::generate().public_key();
    let text = public.to_string();
    c.bench_function("public_key_parse", |b| b.iter(|| black_box(&text).parse::<PublicKey>().unwrap()));

    let annotations = NodeKeyAnnotations {
        public_key: public,
        epoch: 3,
        created: jiff::Timestamp::from_second(1_790_000_000).unwrap(),
    }
    .to_annotations();
    c.bench_function("node_annotations_parse", |b| {
        b.iter(|| NodeKeyAnnotations::parse(black_box(&annotations)).unwrap())
    });
}

criterion_group!(benches, bench_parsing);
criterion_main!(benches);
