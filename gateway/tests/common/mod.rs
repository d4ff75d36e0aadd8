//! Test harness: a gateway on 127.0.0.1:0 wired to an in-process bus and in-memory
//! directory, presence, fallback and record of pending MT commands.
#![allow(dead_code, unreachable_pub, clippy::new_without_default)]

use std::sync::Arc;
use std::time::Duration;

use bus::memory::{MemoryBus, MemoryBusConfig};
use bus::{Bus, Consumer, Delivery, Topics};
use codec::{decode_bus_envelope, CorrelationId};
use gateway::{
    Deps, Gateway, GatewayConfig, LocalAddrs, MemoryDirectory, MemoryPendingMt, MemoryPresence,
    MtClient, RecordingFallback, RecordingPresence, UnitCredentials,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const KEY: &str = "abcdefghijklmnopqrstuvwx";

pub fn imei(n: u32) -> String {
    format!("0137779468{n:05}")
}

/// What several gateways of one deployment share.
#[derive(Clone)]
pub struct World {
    pub bus: MemoryBus,
    pub directory: MemoryDirectory,
    pub registry: MemoryPresence,
    pub presence: RecordingPresence,
    pub fallback: RecordingFallback,
    pub pending: MemoryPendingMt,
}

impl World {
    pub fn new() -> Self {
        let directory = MemoryDirectory::new();
        for n in 0..50 {
            directory.insert(UnitCredentials::new(imei(n), KEY));
        }
        Self {
            bus: MemoryBus::new(MemoryBusConfig {
                partitions: 4,
                capacity: 10_000,
            }),
            directory,
            registry: MemoryPresence::new(),
            presence: RecordingPresence::default(),
            fallback: RecordingFallback::default(),
            pending: MemoryPendingMt::default(),
        }
    }

    pub fn deps(&self) -> Deps {
        Deps {
            bus: Arc::new(self.bus.clone()),
            directory: Arc::new(self.directory.clone()),
            presence: Arc::new(self.presence.clone()),
            registry: Arc::new(self.registry.clone()),
            fallback: Arc::new(self.fallback.clone()),
            pending: Arc::new(self.pending.clone()),
        }
    }

    pub fn mt_client(&self) -> MtClient {
        MtClient::new(Arc::new(self.bus.clone()), Topics::default())
    }

    pub async fn start(&self, config: GatewayConfig) -> Running {
        self.start_on(config, Arc::new(self.bus.clone())).await
    }

    /// A gateway publishing to `bus` instead of the world's in-process bus.
    pub async fn start_on(&self, config: GatewayConfig, bus: Arc<dyn Bus>) -> Running {
        let deps = Deps { bus, ..self.deps() };
        let gw = Gateway::bind(config, deps).await.unwrap();
        let addrs = gw.local_addrs();
        let cert = gw.certificate_der().to_vec();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gw.run(async move {
            let _ = stopped.await;
        }));
        Running {
            addrs,
            cert,
            stop: Some(stop),
            task,
        }
    }

    pub async fn subscribe(&self, topic: &str) -> Box<dyn Consumer> {
        self.bus.subscribe(&[topic], "test").await.unwrap()
    }
}

pub struct Running {
    pub addrs: LocalAddrs,
    pub cert: Vec<u8>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    pub fn quic_endpoint(&self) -> quinn::Endpoint {
        sim::quic_endpoint(&self.cert, Duration::from_secs(5)).unwrap()
    }

    /// Unit `n` connected over TCP and admitted (its key is `KEY`).
    pub async fn tcp_unit(&self, n: u32) -> sim::UnitConn {
        let mut unit = sim::UnitConn::tcp(self.addrs.tcp.unwrap()).await.unwrap();
        unit.handshake(Some(&imei(n)), KEY).await.unwrap();
        unit
    }

    /// Unit `n` connected over QUIC (its own endpoint, which lives as long as the
    /// connection) and admitted.
    pub async fn quic_unit(&self, n: u32) -> sim::UnitConn {
        let ep = self.quic_endpoint();
        let mut unit = sim::UnitConn::quic(&ep, self.addrs.quic.unwrap())
            .await
            .unwrap();
        unit.handshake(Some(&imei(n)), KEY).await.unwrap();
        unit
    }

    /// Triggers shutdown and waits for the drain to finish.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("gateway drains in time")
            .unwrap();
    }
}

pub fn config(node: &str) -> GatewayConfig {
    let mut c = GatewayConfig::loopback(node);
    c.shards = 2;
    c.rate_per_sec = 10_000.0;
    c.rate_burst = 10_000;
    c
}

pub async fn next(c: &mut Box<dyn Consumer>) -> Delivery {
    let d = tokio::time::timeout(Duration::from_secs(10), c.recv())
        .await
        .expect("a message in time")
        .unwrap();
    c.commit(&d).await.unwrap();
    d
}

pub async fn nothing_within(c: &mut Box<dyn Consumer>, wait: Duration) -> bool {
    tokio::time::timeout(wait, c.recv()).await.is_err()
}

/// (imei, correlation id, message bytes) of a bus envelope.
pub fn open(d: &Delivery) -> (String, CorrelationId, Vec<u8>) {
    let env = decode_bus_envelope(&d.payload).unwrap();
    (
        env.imei.to_owned(),
        env.correlation_id,
        env.message.to_vec(),
    )
}

pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}
