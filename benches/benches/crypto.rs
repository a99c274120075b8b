//! Criterion benches of the per-packet cryptography the data plane runs: sealing
//! (`Tunn::encapsulate`) and opening (`Tunn::decapsulate`) one data packet at 64 B and 1420 B, and
//! a batch of 64 full-size packets as the fast path handles them, on a boringtun `Tunn` pair that
//! has completed a handshake in memory.

use std::hint::black_box;

use boringtun::noise::{Tunn, TunnResult};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand_core::OsRng;
use x25519_dalek::{PublicKey, StaticSecret};

/// Room for WireGuard's 32 bytes around the largest inner packet benched.
const OUT: usize = 1420 + 64;
/// Packets per batch in the batched benches (what one TSO super-packet of 64 KiB splits into).
const BATCH: usize = 64;

/// Two sessions, `a` the initiator, after a complete handshake.
fn pair() -> (Tunn, Tunn) {
    let (sa, sb) = (StaticSecret::random_from_rng(OsRng), StaticSecret::random_from_rng(OsRng));
    let (pa, pb) = (PublicKey::from(&sa), PublicKey::from(&sb));
    let mut a = Tunn::new(sa, pb, None, None, 1 << 8, None);
    let mut b = Tunn::new(sb, pa, None, None, 2 << 8, None);
    let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
    let init = match a.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => panic!("no initiation"),
    };
    let response = match b.decapsulate(None, &init, &mut out) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => panic!("no response"),
    };
    // The initiator answers with a keepalive that confirms the session to the responder.
    let keepalive = match a.decapsulate(None, &response, &mut buf) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => panic!("no keepalive"),
    };
    assert!(matches!(b.decapsulate(None, &keepalive, &mut out), TunnResult::Done));
    (a, b)
}

/// A valid IPv4 packet of `len` bytes (boringtun checks the inner header after decrypting).
fn ipv4(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 244, 10, 1]);
    p[16..20].copy_from_slice(&[10, 244, 20, 1]);
    p
}

fn seal(a: &mut Tunn, packet: &[u8], out: &mut [u8]) -> usize {
    match a.encapsulate(packet, out) {
        TunnResult::WriteToNetwork(d) => d.len(),
        _ => panic!("encapsulate failed"),
    }
}

fn bench_single(c: &mut Criterion) {
    let mut group = c.benchmark_group("packet");
    group.sample_size(30);
    for len in [64usize, 1420] {
        let packet = ipv4(len);
        group.throughput(Throughput::Bytes(len as u64));
        let (mut a, mut b) = pair();
        let mut out = vec![0u8; OUT];
        group.bench_function(format!("seal/{len}"), |bench| {
            bench.iter(|| seal(&mut a, black_box(&packet), &mut out))
        });
        let mut sealed = vec![0u8; OUT];
        group.bench_function(format!("open/{len}"), |bench| {
            bench.iter_batched_ref(
                || {
                    let n = seal(&mut a, &packet, &mut sealed);
                    sealed[..n].to_vec()
                },
                |datagram| match b.decapsulate(None, black_box(datagram), &mut out) {
                    TunnResult::WriteToTunnelV4(p, _) => p.len(),
                    _ => panic!("decapsulate failed"),
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn bench_batched(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch64");
    group.sample_size(20);
    let len = 1420usize;
    let packet = ipv4(len);
    group.throughput(Throughput::Bytes((len * BATCH) as u64));
    let (mut a, mut b) = pair();
    // One contiguous output buffer, one slot per packet, as the fast path's send batch.
    let mut outs = vec![0u8; OUT * BATCH];
    group.bench_function("seal/1420", |bench| {
        bench.iter(|| {
            let mut total = 0;
            for slot in outs.chunks_mut(OUT) {
                total += seal(&mut a, black_box(&packet), slot);
            }
            total
        })
    });
    let mut plain = vec![0u8; OUT * BATCH];
    group.bench_function("open/1420", |bench| {
        bench.iter_batched_ref(
            || {
                let mut batch = Vec::with_capacity(BATCH);
                for _ in 0..BATCH {
                    let mut d = vec![0u8; OUT];
                    let n = seal(&mut a, &packet, &mut d);
                    d.truncate(n);
                    batch.push(d);
                }
                batch
            },
            |batch| {
                let mut total = 0;
                for (datagram, slot) in batch.iter().zip(plain.chunks_mut(OUT)) {
                    match b.decapsulate(None, black_box(datagram), slot) {
                        TunnResult::WriteToTunnelV4(p, _) => total += p.len(),
                        _ => panic!("decapsulate failed"),
                    }
                }
                total
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_single, bench_batched);
criterion_main!(benches);
