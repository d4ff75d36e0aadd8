//! The Kafka bus against a real Kafka-protocol broker, on its own and under the ingest engine.
//!
//! The broker is `SMARTSOLAR_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`),
//! started by `scripts/services.sh` (tansu). These tests FAIL when no broker
//! answers: a missing service must not pass as green.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bus::kafka::{KafkaBus, KafkaBusConfig};
use bus::{Bus, Consumer, Delivery};
use tokio::time::timeout;

fn brokers() -> String {
    std::env::var("SMARTSOLAR_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Fails fast and clearly when the broker is not there (librdkafka itself
/// would retry forever).
fn require_broker() -> String {
    let b = brokers();
    let first = b.split(',').next().unwrap_or_default().to_owned();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&first)
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("bad SMARTSOLAR_TEST_KAFKA_BROKERS {b:?}"));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap_or_else(|e| {
        panic!("no Kafka broker at {b} ({e}): start it with `scripts/services.sh start`")
    });
    b
}

fn unique(name: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{n}", std::process::id())
}

fn bus(partitions: i32) -> KafkaBus {
    KafkaBus::new(KafkaBusConfig {
        brokers: require_broker(),
        partitions,
        ..Default::default()
    })
    .expect("kafka bus")
}

async fn recv_n(c: &mut Box<dyn Consumer>, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    for i in 0..n {
        let d = timeout(Duration::from_secs(60), c.recv())
            .await
            .unwrap_or_else(|_| panic!("message {i} of {n} within 60 s"))
            .expect("recv");
        out.push(d);
    }
    out
}

fn value(d: &Delivery) -> u32 {
    u32::from_be_bytes(d.payload[..].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_order_and_every_group_sees_every_message() {
    let bus = bus(4);
    let topic = unique("it-order");
    bus.ensure_topics(&[&topic]).await.unwrap();
    let n = 60u32;
    for i in 0..n {
        let key = format!("35000000000000{}", i % 5);
        timeout(
            Duration::from_secs(30),
            bus.publish(&topic, key.as_bytes(), &i.to_be_bytes()),
        )
        .await
        .expect("delivery report within 30 s")
        .expect("publish acked");
    }
    for group in ["ingest", "archive"] {
        let mut c = bus.subscribe(&[&topic], &unique(group)).await.unwrap();
        let got = recv_n(&mut c, n as usize).await;
        let mut last: HashMap<Vec<u8>, (u32, u32)> = HashMap::new();
        for d in &got {
            assert_eq!(d.topic, topic);
            if let Some((prev, part)) = last.insert(d.key.to_vec(), (value(d), d.partition)) {
                assert!(prev < value(d), "per-key order broken");
                assert_eq!(part, d.partition, "a key stays on one partition");
            }
        }
        let all: HashSet<u32> = got.iter().map(value).collect();
        assert_eq!(all.len(), n as usize, "group {group} sees every message");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_messages_are_redelivered_committed_ones_are_not() {
    let bus = bus(1);
    let topic = unique("it-commit");
    let group = unique("g");
    bus.ensure_topics(&[&topic]).await.unwrap();
    for i in 0..10u32 {
        bus.publish(&topic, b"350000000000001", &i.to_be_bytes())
            .await
            .unwrap();
    }
    {
        let mut c = bus.subscribe(&[&topic], &group).await.unwrap();
        let got = recv_n(&mut c, 10).await;
        assert_eq!(
            got.iter().map(value).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        // Processed the first four only, then the member goes away.
        c.commit(&got[3]).await.unwrap();
    }
    let mut c = bus.subscribe(&[&topic], &group).await.unwrap();
    let again = recv_n(&mut c, 6).await;
    assert_eq!(
        again.iter().map(value).collect::<Vec<_>>(),
        vec![4, 5, 6, 7, 8, 9]
    );
}

/// A gateway's own topics (`subscribe_sole`): a process restarted after `kill -9` reads every
/// partition at once from where its predecessor committed, although the predecessor never
/// left. Here the predecessor is still connected (forgotten, not dropped), the harder case:
/// as a group member it would keep half the partitions, and the broker never expires a
/// member that still heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_reader_takes_over_from_one_that_never_left() {
    let bus = bus(4);
    let topic = unique("it-sole");
    let group = unique("g");
    bus.ensure_topics(&[&topic]).await.unwrap();
    let publish = |range: std::ops::Range<u32>| {
        let (bus, topic) = (&bus, &topic);
        async move {
            for i in range {
                let key = format!("35000000000000{i}");
                bus.publish(topic, key.as_bytes(), &i.to_be_bytes())
                    .await
                    .unwrap();
            }
        }
    };
    publish(0..8).await;
    let mut first = bus.subscribe_sole(&[&topic], &group).await.unwrap();
    let mut got: Vec<u32> = Vec::new();
    for d in recv_n(&mut first, 8).await {
        first.commit(&d).await.unwrap();
        got.push(value(&d));
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (0..8).collect::<Vec<_>>(),
        "one reader gets every partition"
    );
    std::mem::forget(first);

    publish(8..16).await;
    let mut second = bus.subscribe_sole(&[&topic], &group).await.unwrap();
    let mut again: Vec<u32> = recv_n(&mut second, 8).await.iter().map(value).collect();
    again.sort_unstable();
    assert_eq!(
        again,
        (8..16).collect::<Vec<_>>(),
        "the successor resumes after the committed messages, on every partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_engine_runs_over_kafka() {
    use std::sync::Arc;

    use bus::Topics;
    use codec::envelope::{encode_bus_envelope, BusEnvelope, Transport};
    use codec::mo::{TelemetryBatch, TelemetryRecord, TelemetryValue};
    use codec::{mo_to_vec, CorrelationId, MoMessage, Number, Seq};
    use ingest::engine::{run, EngineConfig};
    use ingest::sink::RecordingSink;
    use ingest::tsdb::embedded::Embedded;
    use ingest::tsdb::Query;

    let bus = bus(4);
    let topics = Topics {
        mo: unique("it-mo"),
        mo_dead_letter: unique("it-mo-dlq"),
        ..Topics::default()
    };
    bus.ensure_topics(&[&topics.mo, &topics.mo_dead_letter])
        .await
        .unwrap();
    let imei = "350000000000009";
    for i in 0..25u8 {
        let values = [TelemetryValue {
            field: "voltage",
            value: Number::Float(12.0 + f64::from(i)),
        }];
        let records = [TelemetryRecord {
            time: 1_700_000_000 + u64::from(i),
            values: Seq::new(&values),
        }];
        let body = mo_to_vec(&MoMessage::Telemetry(TelemetryBatch {
            records: Seq::new(&records),
        }));
        let env = encode_bus_envelope(&BusEnvelope {
            imei,
            correlation_id: CorrelationId([i; 16]),
            received_at_ms: 1_700_000_000_000,
            transport: Transport::Quic,
            ident: None,
            message: &body,
            mo_number: None,
        });
        bus.publish(&topics.mo, imei.as_bytes(), &env)
            .await
            .unwrap();
    }
    bus.publish(&topics.mo, imei.as_bytes(), b"junk")
        .await
        .unwrap();

    let tsdb = Embedded::in_memory();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn(run(
        Arc::new(bus.clone()),
        topics.clone(),
        Arc::new(tsdb.clone()),
        Arc::new(RecordingSink::new()),
        EngineConfig {
            group: unique("ingest"),
            ..Default::default()
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let q = Query::new("telemetry", imei, 0, i64::MAX / 2);
    let mut stored = 0;
    for _ in 0..600 {
        stored = tsdb.query_sync(&q).unwrap().times.len();
        if stored == 25 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 25, "all telemetry stored through Kafka");
    let mut dlq = bus
        .subscribe(&[&topics.mo_dead_letter], &unique("dlq"))
        .await
        .unwrap();
    let d = recv_n(&mut dlq, 1).await.remove(0);
    let dl = codec::envelope::decode_dead_letter(&d.payload).unwrap();
    assert!(
        dl.reason.contains("undecodable bus envelope"),
        "{}",
        dl.reason
    );
    stop.send(()).unwrap();
    timeout(Duration::from_secs(30), engine)
        .await
        .expect("engine drains")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_answers_with_a_broker_and_fails_without_one() {
    bus(1).ping().await.expect("the test broker answers");
    // A port nothing listens on: the metadata request times out.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nobody = KafkaBus::new(KafkaBusConfig {
        brokers: closed.to_string(),
        ..Default::default()
    })
    .unwrap();
    assert!(nobody.ping().await.is_err());
}
