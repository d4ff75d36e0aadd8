//! Shard routing: the IMEI → shard/partition function (FNV-1a) that the gateway uses for its MT
//! shards and the bus for its partitions (`gateway::shard_index` =
//! `bus::partition_for`), per message on both hot paths. Baseline: hashing the
//! same bytes with the standard library's SipHash (`DefaultHasher`).
//!
//! Run: `cargo bench -p smartsolar-bench --bench routing -- --warm-up-time 1 --measurement-time 3`

use std::hash::{Hash, Hasher};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn routing(c: &mut Criterion) {
    let imeis: Vec<String> = (0..1024).map(|i| format!("35{i:013}")).collect();
    let mut g = c.benchmark_group("shard_routing");
    g.throughput(Throughput::Elements(imeis.len() as u64));
    g.bench_function("partition_for_16", |b| {
        b.iter(|| {
            imeis
                .iter()
                .map(|i| bus::partition_for(black_box(i.as_bytes()), 16))
                .sum::<u32>()
        })
    });
    g.bench_function("baseline_siphash_mod_16", |b| {
        b.iter(|| {
            imeis
                .iter()
                .map(|i| {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    black_box(i.as_bytes()).hash(&mut h);
                    (h.finish() % 16) as u32
                })
                .sum::<u32>()
        })
    });
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
