//! Builds the engines the configuration names (bus, time-series store) and
//! starts the services on them. `serve` starts them all in one process over
//! one bus; the other subcommands start one each, for the scaled topology.

use std::sync::Arc;

use anyhow::{Context, Result};
use bus::kafka::KafkaBus;
use bus::{Bus, DiskBus, MemoryBus, MemoryBusConfig};
use control_plane::app::AppState;
use ingest::tsdb::embedded::{Embedded, EmbeddedConfig};
use ingest::tsdb::influx::Influx;
use ingest::tsdb::questdb::QuestDb;
use ingest::tsdb::TimeSeries;
use tokio_util::sync::CancellationToken;

use crate::config::{BusKind, Config, TsdbKind};
use crate::runtimes::ServiceRuntime;

/// Which services a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Roles {
    pub(crate) api: bool,
    pub(crate) gateway: bool,
    pub(crate) ingest: bool,
}

impl Roles {
    pub(crate) const ALL: Self = Self {
        api: true,
        gateway: true,
        ingest: true,
    };
    pub(crate) const API: Self = Self {
        api: true,
        gateway: false,
        ingest: false,
    };
    pub(crate) const GATEWAY: Self = Self {
        api: false,
        gateway: true,
        ingest: false,
    };
    pub(crate) const INGEST: Self = Self {
        api: false,
        gateway: false,
        ingest: true,
    };
}

/// Default hard cap of one dead-letter partition on the disk bus (16 partitions:
/// 256 MiB a topic). Nothing in `serve` consumes dead letters but the import
/// endpoint, so without a cap they would grow forever; over it the oldest go
/// (counted in `smartsolar_bus_dropped_total`).
const DEAD_LETTER_PARTITION_BYTES: u64 = 16 << 20;

/// The bus the configuration names. The disk and in-process buses only
/// connect the services of one process, so they are only useful for `serve`.
pub(crate) async fn build_bus(config: &Config) -> Result<Arc<dyn Bus>> {
    let topics = &config.gateway.topics;
    Ok(match config.bus.kind {
        BusKind::Disk => {
            let mut disk = config.bus.disk.clone();
            for dead in [&topics.mo_dead_letter, &topics.mt_reply_dead_letter] {
                disk.topic_max_partition_bytes
                    .entry(dead.clone())
                    .or_insert(DEAD_LETTER_PARTITION_BYTES);
            }
            let dir = config.data_dir.join("bus");
            let names = [
                topics.mo.clone(),
                topics.mt.clone(),
                topics.mt_reply.clone(),
                topics.mo_dead_letter.clone(),
                topics.mt_reply_dead_letter.clone(),
                topics.gateway_control.clone(),
            ];
            // Opening recovers every topic (reads its segments): off the async threads.
            let bus = tokio::task::spawn_blocking(move || {
                let bus = DiskBus::open(dir, disk)?;
                bus.ensure_topics(&names.each_ref().map(String::as_str))?;
                Ok::<_, bus::BusError>(bus)
            })
            .await
            .context("opening the disk bus")?
            .context("opening the disk bus")?;
            Arc::new(bus)
        }
        BusKind::Memory => Arc::new(MemoryBus::new(MemoryBusConfig::default())),
        BusKind::Kafka => {
            let bus = KafkaBus::new(config.bus.kafka.clone()).context("connecting to Kafka")?;
            let names = [
                &topics.mo,
                &topics.mt,
                &topics.mt_reply,
                &topics.mo_dead_letter,
                &topics.mt_reply_dead_letter,
                &topics.gateway_control,
            ];
            bus.ensure_topics(&names.map(String::as_str))
                .await
                .context("creating Kafka topics")?;
            Arc::new(bus)
        }
    })
}

/// The time-series store the configuration names.
pub(crate) async fn build_timeseries(config: &Config) -> Result<Arc<dyn TimeSeries>> {
    Ok(match config.tsdb.kind {
        TsdbKind::Embedded => {
            let dir = config.data_dir.join("tsdb");
            let store = Embedded::open(EmbeddedConfig {
                data_dir: Some(dir.clone()),
                ..config.tsdb.embedded.clone()
            })
            .with_context(|| {
                format!(
                    "opening the embedded time-series store in {}",
                    dir.display()
                )
            })?;
            Arc::new(store)
        }
        TsdbKind::Influx => Arc::new(
            Influx::connect(config.tsdb.influx.clone())
                .await
                .context("connecting to InfluxDB")?,
        ),
        TsdbKind::Questdb => {
            Arc::new(QuestDb::new(config.tsdb.questdb.clone()).context("configuring QuestDB")?)
        }
    })
}

/// Starts the given services and waits until `shutdown` is cancelled and
/// they have drained.
pub(crate) async fn run(
    config: Config,
    roles: Roles,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<()> {
    let cp = &config.control_plane;
    // The embedded bus and store first: their directory locks refuse a second process on the
    // same data directory before it touches the first one's database.
    let bus = build_bus(&config).await?;
    let tsdb = build_timeseries(&config).await?;
    let db = control_plane::startup::open_database(cp).await?;
    if roles.api {
        crate::cli::ensure_admin(&db, &config).await?;
        control_plane::webhooks::check_config(cp)?;
    }
    let topics = config.gateway.topics.clone();
    let state = AppState::new(db, cp.clone())
        .with_timeseries(tsdb.clone())
        .with_bus(bus.clone(), topics.clone());
    // Beside the gateway, ingest and the API run on threads of their own (`runtimes.rs`).
    // Declared before `tasks`, so they are dropped after it.
    let dedicated = |name, threads, wanted: bool| {
        ServiceRuntime::dedicated(name, if wanted && roles.gateway { threads } else { 0 })
    };
    let ingest_runtime = dedicated("ingest", config.runtime.ingest_threads, roles.ingest)?;
    let api_runtime = dedicated("api", config.runtime.api_threads, roles.api)?;
    let mut tasks = tokio::task::JoinSet::new();
    if let (Some(addr), Some(metrics)) = (config.metrics_addr, metrics) {
        tasks.spawn(crate::admin::serve(
            addr,
            metrics,
            state.clone(),
            shutdown.clone(),
        ));
    }

    if roles.ingest {
        // Two engines over one sink: unit messages on the MO topic, and the
        // replies, command outputs and final balances the gateway puts on the
        // MT-reply topic (payment acknowledgements arrive there).
        let locator = control_plane::rtc::locator_from_config(&config.control_plane)?;
        let sink = Arc::new(
            control_plane::rtc::ControlPlaneSink::new(state.clone()).with_locator(locator),
        );
        let reply_engine = ingest::engine::EngineConfig {
            group: control_plane::rtc::REPLY_GROUP.to_string(),
            ..config.ingest.clone()
        };
        for (topics, engine) in [
            (topics.clone(), config.ingest.clone()),
            (control_plane::rtc::reply_topics(&topics), reply_engine),
        ] {
            let (bus, tsdb, sink, stop) =
                (bus.clone(), tsdb.clone(), sink.clone(), shutdown.clone());
            ingest_runtime.spawn(&mut tasks, async move {
                ingest::engine::run(bus, topics, tsdb, sink, engine, stop.cancelled_owned())
                    .await
                    .context("ingest engine")
            });
        }
        tracing::info!("ingest engines started (MO and MT replies)");
        if config.alerts.enabled {
            // One alert engine per ingest process; engines of several
            // processes share the units through bucket leases.
            let worker = format!(
                "{}-{}-{:08x}",
                config.gateway.node_id,
                std::process::id(),
                rand_suffix()
            );
            let (state, alerts, stop) = (state.clone(), config.alerts.clone(), shutdown.clone());
            tracing::info!(%worker, interval_secs = alerts.pass_interval_secs, "alert analysis started");
            ingest_runtime.spawn(&mut tasks, async move {
                control_plane::alerts::run(state, alerts, worker, stop.cancelled_owned()).await;
                Ok(())
            });
        }
    }
    if roles.gateway {
        let presence = Arc::new(control_plane::rtc::PresenceDb::new(state.clone()));
        let deps = gateway::Deps {
            bus: bus.clone(),
            directory: Arc::new(control_plane::rtc::UnitDirectoryDb::new(state.clone())),
            presence: presence.clone(),
            // In the database, so gateways in other processes see it too.
            registry: Arc::new(control_plane::rtc::DbPresenceRegistry::new(state.clone())),
            fallback: Arc::new(control_plane::rtc::FallbackSms::new(state.clone())),
            // The database is the record of what each unit must still get: read when a unit
            // connects or polls, so no restart of any process loses a command.
            pending: Arc::new(control_plane::rtc::PendingMtDb::new(state.clone())),
        };
        let mut gw_config = config.gateway.clone();
        // The generated certificate lives in the data dir, so units can pin it across restarts.
        gw_config
            .tls_dir
            .get_or_insert_with(|| config.data_dir.clone());
        let gw = gateway::Gateway::bind(gw_config, deps)
            .await
            .context("starting the gateway")?;
        tracing::info!(addrs = ?gw.local_addrs(), node = %config.gateway.node_id, "gateway listening");
        let stop = shutdown.clone();
        tasks.spawn(async move {
            gw.run(stop.cancelled_owned()).await;
            // The last online/offline records, written after the sessions closed.
            presence.flush().await;
            Ok(())
        });
    }
    if roles.api {
        api_runtime.spawn(&mut tasks, maintenance(state.clone(), shutdown.clone()));
        let (worker_state, worker_stop) = (state.clone(), shutdown.clone());
        // Spawned from the API's runtime, so the worker runs there.
        api_runtime.spawn(&mut tasks, async move {
            control_plane::webhooks::spawn_worker(worker_state, worker_stop.cancelled_owned())
                .await
                .context("webhook worker")
        });
        // Bound on the API's runtime: a socket's readiness is driven by the runtime that
        // created it, and the main one is the gateway's.
        let addr = cp.http_addr;
        let listener = api_runtime
            .run(tokio::net::TcpListener::bind(addr))
            .await?
            .with_context(|| format!("binding the HTTP API to {addr}"))?;
        tracing::info!(addr = %cp.http_addr, database = %crate::cli::redact(&cp.database_url), "SMARTSolar API listening");
        let stop = shutdown.clone();
        let served = state.clone();
        api_runtime.spawn(&mut tasks, async move {
            control_plane::http::serve(listener, served, stop.cancelled_owned())
                .await
                .context("HTTP API")
        });
    }
    // The first service to fail stops the others.
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        let outcome = done.context("a service panicked").and_then(|r| r);
        if let Err(e) = outcome {
            tracing::error!(error = ?e, "service failed; shutting down");
            shutdown.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

/// A few random bits, so two processes with the same node id and pid (in
/// containers) still hold leases under different names.
fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// How long the record of an applied MO is kept for deduplication: far
/// longer than any redelivery of the same message by the bus.
const APPLIED_MO_RETENTION_DAYS: i64 = 7;

/// Once a minute: marks WAKEUP SMS not delivered within their timeout as
/// `Expired`, and forgets applied-MO records past their retention.
async fn maintenance(state: AppState, shutdown: CancellationToken) -> Result<()> {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let expired = async {
            let mut tx = state.db.begin_background().await?;
            let n = control_plane::actions::sms::expire_undelivered(
                &mut tx,
                control_plane::values::now(),
            )
            .await?;
            tx.commit().await?;
            Ok::<u64, control_plane::error::ApiError>(n)
        };
        match expired.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "undelivered SMS expired"),
            // A database hiccup is retried on the next tick.
            Err(e) => tracing::warn!(error = %e, "expiring undelivered SMS failed"),
        }
        let before =
            control_plane::values::now() - chrono::Duration::days(APPLIED_MO_RETENTION_DAYS);
        if let Err(e) = control_plane::rtc::prune_applied(&state.db, before).await {
            tracing::warn!(error = %e, "pruning applied-MO records failed");
        }
    }
}
