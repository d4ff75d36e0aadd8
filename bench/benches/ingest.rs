//! Ingest engine throughput: MO telemetry envelopes published on the
//! in-process bus, decoded, batched, written to the embedded time-series
//! store and recorded in the MO history, end to end through
//! `ingest::engine::run`.
//!
//! Baseline in the same run: the bus alone (publish, consume, commit) with
//! the same messages, so the ratio shows what the engine adds.
//!
//! `cargo bench -p smartsolar-bench --bench ingest`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bus::{Bus, MemoryBus, MemoryBusConfig, Topics};
use codec::envelope::{encode_bus_envelope, BusEnvelope, Transport};
use codec::CorrelationId;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ingest::engine::EngineConfig;
use ingest::sink::{MoHistory, MoSink, SinkError};
use ingest::tsdb::embedded::Embedded;

/// Messages per measured iteration.
const BATCH: u64 = 20_000;
/// Distinct units the messages come from.
const UNITS: u64 = 1_000;

/// Counts the MOs the engine has finished with.
#[derive(Default)]
struct Counting(AtomicU64);

#[async_trait]
impl MoSink for Counting {
    async fn record_mo_history(&self, entries: &[MoHistory<'_>]) -> Result<(), SinkError> {
        self.0.fetch_add(entries.len() as u64, Ordering::Release);
        Ok(())
    }
}

fn envelopes() -> Vec<(String, Vec<u8>)> {
    let now = sim::now_s();
    (0..BATCH)
        .map(|i| {
            let imei = format!("35{:013}", i % UNITS);
            let message = sim::telemetry(now, i);
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_le_bytes());
            let env = BusEnvelope {
                imei: &imei,
                correlation_id: CorrelationId(id),
                received_at_ms: now as i64 * 1000,
                transport: Transport::Tcp,
                ident: None,
                message: &message,
                mo_number: None,
            };
            let bytes = encode_bus_envelope(&env);
            (imei, bytes)
        })
        .collect()
}

async fn publish_all(bus: &MemoryBus, topic: &str, msgs: &[(String, Vec<u8>)]) {
    for (key, payload) in msgs {
        bus.publish(topic, key.as_bytes(), payload).await.unwrap();
    }
}

async fn wait_for(counter: &AtomicU64, target: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while counter.load(Ordering::Acquire) < target {
        assert!(Instant::now() < deadline, "ingest did not finish the batch");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn bench_ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let msgs = envelopes();
    let topics = Topics::default();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    // Baseline: the bus alone, one consumer committing every message.
    group.bench_function("bus_only_publish_consume_commit", |b| {
        let bus = MemoryBus::new(MemoryBusConfig {
            partitions: 16,
            capacity: 50_000,
        });
        let counter = Arc::new(AtomicU64::new(0));
        let mut consumer = rt.block_on(bus.subscribe(&[&topics.mo], "bench")).unwrap();
        let seen = counter.clone();
        rt.spawn(async move {
            while let Ok(d) = consumer.recv().await {
                consumer.commit(&d).await.unwrap();
                seen.fetch_add(1, Ordering::Release);
            }
        });
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = counter.load(Ordering::Acquire) + BATCH;
                    publish_all(&bus, &topics.mo, &msgs).await;
                    wait_for(&counter, target).await;
                }
                start.elapsed()
            })
        });
        bus.close();
    });

    // The engine: decode, shard by IMEI, batch, write to the embedded store,
    // record history, commit.
    group.bench_function("engine_telemetry_to_embedded_store", |b| {
        let bus = MemoryBus::new(MemoryBusConfig {
            partitions: 16,
            capacity: 50_000,
        });
        let sink = Arc::new(Counting::default());
        let tsdb = Arc::new(Embedded::in_memory());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let engine = {
            let (bus, topics, sink, tsdb) = (
                Arc::new(bus.clone()) as Arc<dyn Bus>,
                topics.clone(),
                sink.clone(),
                tsdb.clone(),
            );
            rt.spawn(async move {
                ingest::engine::run(bus, topics, tsdb, sink, EngineConfig::default(), async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            })
        };
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = sink.0.load(Ordering::Acquire) + BATCH;
                    publish_all(&bus, &topics.mo, &msgs).await;
                    wait_for(&sink.0, target).await;
                }
                start.elapsed()
            })
        });
        let _ = stop_tx.send(());
        let _ = rt.block_on(engine);
    });
    group.finish();
}

criterion_group!(benches, bench_ingest);
criterion_main!(benches);
