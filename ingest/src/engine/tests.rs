use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use codec::envelope::{decode_dead_letter, encode_bus_envelope, Transport};
use codec::mo::{Event, EventLog, StatusReport, TelemetryRecord, TelemetryValue};
use codec::{mo_to_vec, Seq};

use super::*;
use crate::sink::RecordingSink;
use crate::tsdb::embedded::Embedded;
use crate::tsdb::{Query, QueryResult};
use bus::{MemoryBus, MemoryBusConfig};

const IMEI: &str = "350000000000001";

fn envelope(imei: &str, n: u8, msg: &MoMessage<'_>) -> Vec<u8> {
    let body = mo_to_vec(msg);
    encode_bus_envelope(&BusEnvelope {
        imei,
        correlation_id: CorrelationId([n; 16]),
        received_at_ms: 1_700_000_000_000,
        transport: Transport::Tcp,
        ident: None,
        message: &body,
        mo_number: None,
    })
}

fn telemetry(imei: &str, n: u8, time: u64, current: f64) -> Vec<u8> {
    let values = [
        TelemetryValue {
            field: "current",
            value: Number::Float(current),
        },
        TelemetryValue {
            field: "pulse_count",
            value: Number::Int(i64::from(n)),
        },
    ];
    let records = [TelemetryRecord {
        time,
        values: Seq::new(&values),
    }];
    envelope(
        imei,
        n,
        &MoMessage::Telemetry(TelemetryBatch {
            records: Seq::new(&records),
        }),
    )
}

fn event(imei: &str, n: u8) -> Vec<u8> {
    let text = format!("event {n}");
    let events = [Event {
        time: u64::from(n),
        text: &text,
    }];
    envelope(
        imei,
        n,
        &MoMessage::EventLog(EventLog {
            events: Seq::new(&events),
        }),
    )
}

fn quick() -> EngineConfig {
    EngineConfig {
        shards: 3,
        batch_max: 16,
        batch_delay_ms: 5,
        drain_timeout_ms: 2_000,
        retry_initial_ms: 5,
        ..Default::default()
    }
}

struct Harness {
    bus: MemoryBus,
    tsdb: Embedded,
    sink: Arc<RecordingSink>,
}

impl Harness {
    fn new() -> Self {
        Self {
            bus: MemoryBus::new(MemoryBusConfig {
                partitions: 4,
                capacity: 10_000,
            }),
            tsdb: Embedded::in_memory(),
            sink: Arc::new(RecordingSink::new()),
        }
    }

    fn start(
        &self,
        tsdb: Arc<dyn TimeSeries>,
        config: EngineConfig,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), EngineError>>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = tokio::spawn(run(
            Arc::new(self.bus.clone()),
            Topics::default(),
            tsdb,
            self.sink.clone(),
            config,
            async move {
                let _ = rx.await;
            },
        ));
        (tx, h)
    }

    async fn publish(&self, imei: &str, payload: &[u8]) {
        self.bus
            .publish("RTC-MO", imei.as_bytes(), payload)
            .await
            .unwrap();
    }

    /// Waits until the engine committed everything on the MO topic.
    async fn settled(&self) {
        for _ in 0..500 {
            if self.bus.backlog("RTC-MO") == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("MO backlog stuck at {}", self.bus.backlog("RTC-MO"));
    }

    fn telemetry_of(&self, imei: &str) -> QueryResult {
        self.tsdb
            .query_sync(&Query::new("telemetry", imei, 0, i64::MAX / 2))
            .unwrap()
    }
}

async fn dead_letters(bus: &MemoryBus, n: usize) -> Vec<(String, String)> {
    let mut c = bus
        .subscribe(&["RTC-MO.Dead-Letter"], "test-dlq")
        .await
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(5), c.recv())
            .await
            .expect("dead letter")
            .unwrap();
        let dl = decode_dead_letter(&d.payload).unwrap();
        assert_eq!(dl.queue_name, QueueName::Mo);
        out.push((dl.reason.into_owned(), dl.payload.into_owned()));
    }
    out
}

#[tokio::test]
async fn telemetry_to_tsdb_the_rest_to_the_sink_everything_committed() {
    let h = Harness::new();
    let (stop, task) = h.start(Arc::new(h.tsdb.clone()), quick());
    for i in 0..20u8 {
        h.publish(
            IMEI,
            &telemetry(IMEI, i, 1_700_000_000 + u64::from(i), f64::from(i) / 2.0),
        )
        .await;
    }
    let report = StatusReport {
        enabled: Some(true),
        balance: Some(3600),
        expected_expiry: Some(1_700_003_600),
        ..Default::default()
    };
    h.publish(IMEI, &envelope(IMEI, 100, &MoMessage::StatusReport(report)))
        .await;
    h.publish(IMEI, &event(IMEI, 101)).await;
    h.settled().await;
    let r = h.telemetry_of(IMEI);
    assert_eq!(r.times.len(), 20);
    assert_eq!(r.times[0], 1_700_000_000_000_000_000);
    assert_eq!(
        r.series("pulse_count").unwrap()[19].0,
        Some(&FieldValue::Int(19))
    );
    assert_eq!(h.sink.calls_of("status_report").len(), 1);
    let b = h.sink.calls_of("balance");
    assert_eq!(b.len(), 1);
    assert!(b[0].detail.contains("3600"), "{b:?}");
    assert_eq!(h.sink.calls_of("event_log").len(), 1);
    let hist = h.sink.calls_of("record_mo_history");
    assert_eq!(hist.len(), 22, "every decodable MO gets a history row");
    assert!(hist.iter().all(|c| c.detail == "processed"));
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn undecodable_and_rejected_messages_go_to_the_dead_letter_topic() {
    let h = Harness::new();
    h.sink
        .fail_next("event_log", SinkError::Permanent("unknown product".into()));
    let (stop, task) = h.start(Arc::new(h.tsdb.clone()), quick());
    h.publish(IMEI, b"\xc1 not msgpack").await;
    let bad_mo = encode_bus_envelope(&BusEnvelope {
        imei: IMEI,
        correlation_id: CorrelationId([7; 16]),
        received_at_ms: 1_700_000_000_000,
        transport: Transport::Quic,
        ident: None,
        message: b"\xff\x00garbage",
        mo_number: None,
    });
    h.publish(IMEI, &bad_mo).await;
    h.publish(IMEI, &event(IMEI, 9)).await;
    h.publish(IMEI, &telemetry(IMEI, 1, 1_700_000_000, 1.0))
        .await;
    h.settled().await;
    let dls = dead_letters(&h.bus, 3).await;
    assert!(dls[0].0.contains("undecodable bus envelope"), "{dls:?}");
    assert!(dls[0].1.contains(IMEI), "the key is kept as ident");
    assert!(dls[1].0.contains("undecodable MO message"), "{dls:?}");
    assert!(
        dls[1].1.contains("07070707070707070707070707070707"),
        "the envelope is kept: {}",
        dls[1].1
    );
    assert_eq!(dls[2].0, "unknown product");
    assert_eq!(
        h.telemetry_of(IMEI).times.len(),
        1,
        "the good message still went through"
    );
    let failed: Vec<_> = h
        .sink
        .calls_of("record_mo_history")
        .into_iter()
        .filter(|c| c.detail.starts_with("failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].detail, "failed: unknown product");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn transient_sink_failures_are_retried_and_order_per_unit_is_kept() {
    let h = Harness::new();
    h.sink
        .fail_next("event_log", SinkError::Transient("db busy".into()));
    h.sink
        .fail_next("event_log", SinkError::Transient("db busy".into()));
    let (stop, task) = h.start(Arc::new(h.tsdb.clone()), quick());
    let other = "350000000000002";
    for i in 0..30u8 {
        h.publish(IMEI, &event(IMEI, i)).await;
        h.publish(other, &event(other, i)).await;
    }
    h.settled().await;
    for imei in [IMEI, other] {
        let seen: Vec<CorrelationId> = h
            .sink
            .calls_of("event_log")
            .into_iter()
            .filter(|c| c.imei == imei)
            .map(|c| c.correlation_id)
            .collect();
        let want: Vec<CorrelationId> = (0..30u8).map(|i| CorrelationId([i; 16])).collect();
        assert_eq!(seen, want, "{imei}: every event once, in order");
    }
    assert!(h.sink.calls_of("command_response").is_empty());
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// A store that is down for the first `fail` writes.
struct Flaky {
    inner: Embedded,
    fail: AtomicUsize,
    writes: AtomicUsize,
}

#[async_trait]
impl TimeSeries for Flaky {
    async fn write(&self, points: &[Point]) -> Result<(), TsdbError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Err(TsdbError::Unavailable("down".into()));
        }
        self.inner.write(points).await
    }
    async fn query(&self, q: &crate::tsdb::Query) -> Result<QueryResult, TsdbError> {
        self.inner.query(q).await
    }
}

#[tokio::test]
async fn a_store_outage_holds_commits_and_backpressures_then_catches_up() {
    let h = Harness::new();
    let flaky = Arc::new(Flaky {
        inner: h.tsdb.clone(),
        fail: AtomicUsize::new(usize::MAX),
        writes: AtomicUsize::new(0),
    });
    let config = EngineConfig {
        max_in_flight: 8,
        shard_queue: 2,
        batch_max: 4,
        ..quick()
    };
    let (stop, task) = h.start(flaky.clone(), config);
    for i in 0..40u8 {
        h.publish(IMEI, &telemetry(IMEI, i, 1_700_000_000 + u64::from(i), 1.0))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(flaky.writes.load(Ordering::SeqCst) > 1, "retrying");
    assert_eq!(
        h.bus.backlog("RTC-MO"),
        40,
        "nothing committed while the store is down"
    );
    // The store comes back.
    flaky.fail.store(0, Ordering::SeqCst);
    h.settled().await;
    assert_eq!(h.telemetry_of(IMEI).times.len(), 40);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_drains_and_whatever_is_left_comes_again() {
    let h = Harness::new();
    let n = 200u16;
    for i in 0..n {
        let imei = format!("3500000000{:05}", i % 17);
        h.publish(
            &imei,
            &telemetry(&imei, (i % 250) as u8, 1_700_000_000 + u64::from(i), 1.0),
        )
        .await;
    }
    // Stop right away: whatever was taken is finished and committed.
    let (stop, task) = h.start(Arc::new(h.tsdb.clone()), quick());
    tokio::time::sleep(Duration::from_millis(3)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let left = h.bus.backlog("RTC-MO");
    let stored = h.tsdb.value_count() / 2;
    assert!(
        stored + left >= n as usize,
        "every message is stored or still on the bus: {stored} + {left}"
    );
    // A store that stays down during the drain: the drain gives up and commits nothing more.
    let down = Arc::new(Flaky {
        inner: h.tsdb.clone(),
        fail: AtomicUsize::new(usize::MAX),
        writes: AtomicUsize::new(0),
    });
    let (stop, task) = h.start(
        down,
        EngineConfig {
            drain_timeout_ms: 100,
            ..quick()
        },
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(
        h.bus.backlog("RTC-MO"),
        left,
        "nothing committed that was not stored"
    );
    // The next run finishes the job.
    let (stop, task) = h.start(Arc::new(h.tsdb.clone()), quick());
    h.settled().await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(h.tsdb.value_count(), 2 * n as usize);
}
