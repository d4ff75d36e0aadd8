//! The application state every handler and service shares: the database,
//! the catalogue, configuration, the bus and the time-series store. Below the
//! HTTP layer (`http`) and the handler modules, so that none of them imports
//! the router that imports them.

use std::sync::Arc;

use crate::auth::{AuthCache, Clock};
use crate::catalogue::Catalogue;
use crate::config::ControlPlaneConfig;
use crate::db::Db;
use bus::{Bus, MemoryBus, MemoryBusConfig, Topics};
use ingest::tsdb::embedded::Embedded;
use ingest::tsdb::TimeSeries;

/// What every handler shares. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The contents of [`AppState`].
pub struct Inner {
    pub db: Db,
    pub catalogue: Catalogue,
    pub config: ControlPlaneConfig,
    pub clock: Clock,
    pub auth: AuthCache,
    /// Where SMS to units go (see `actions::sms`).
    pub sms: Arc<dyn crate::actions::sms::SmsProvider>,
    /// Unit telemetry (`/products/<imei>/data`, `/upload_tool_log`).
    pub timeseries: Arc<dyn TimeSeries>,
    /// The message bus (dead-letter import and replay).
    pub bus: Arc<dyn Bus>,
    /// Topic names on [`Inner::bus`].
    pub topics: Topics,
    /// The dead-letter consumers, kept between import calls.
    pub dead_letters: crate::data::dead_letters::Importers,
    /// The unit directory's cache (`rtc::UnitDirectoryDb`), shared with the API's writes so
    /// a changed key is forgotten at once (`rtc::credentials_changed`).
    pub directory_cache: crate::rtc::DirectoryCache,
    /// The rendered SQL of a GET by primary key, per table and viewer (issue 20).
    pub get_by_pk: crate::db::RenderCache<(String, crate::query::Viewer)>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// State over an open, migrated database.
    ///
    /// The time-series store defaults to a memory-only embedded store and
    /// the bus to a private in-process bus with the default topic names:
    /// enough for tests and for a control-plane alone. A process that keeps
    /// telemetry or shares the bus with ingest and the gateway passes its
    /// own with [`Self::with_timeseries`] and [`Self::with_bus`].
    pub fn new(db: Db, config: ControlPlaneConfig) -> Self {
        let sms = crate::actions::sms::provider_from_config(&config);
        Self::with_sms(db, config, sms)
    }

    /// State with a given SMS provider (tests use a recording one).
    pub fn with_sms(
        db: Db,
        config: ControlPlaneConfig,
        sms: Arc<dyn crate::actions::sms::SmsProvider>,
    ) -> Self {
        let auth = AuthCache::new(config.login_window_secs);
        let get_by_pk = crate::db::RenderCache::new(db.backend());
        Self(Arc::new(Inner {
            get_by_pk,
            db,
            catalogue: Catalogue::builtin(),
            config,
            clock: Clock::default(),
            auth,
            sms,
            timeseries: Arc::new(Embedded::in_memory()),
            bus: Arc::new(MemoryBus::new(MemoryBusConfig::default())),
            topics: Topics::default(),
            dead_letters: Default::default(),
            directory_cache: Default::default(),
        }))
    }

    /// Uses `timeseries` as the time-series store.
    ///
    /// # Panics
    /// When the state has already been cloned (configure it before serving).
    pub fn with_timeseries(mut self, timeseries: Arc<dyn TimeSeries>) -> Self {
        self.inner_mut().timeseries = timeseries;
        self
    }

    /// Uses `bus` with the topic names `topics`.
    ///
    /// # Panics
    /// When the state has already been cloned (configure it before serving).
    pub fn with_bus(mut self, bus: Arc<dyn Bus>, topics: Topics) -> Self {
        let inner = self.inner_mut();
        inner.bus = bus;
        inner.topics = topics;
        inner.dead_letters = Default::default();
        self
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.0).expect("configure AppState before cloning it")
    }
}

/// Checks the database, the bus and the time-series store, in that order,
/// and names the first that does not answer. Every service process holds
/// all three (the gateway looks units up in the database and publishes on
/// the bus; ingest writes to all three), so one check serves them all.
pub async fn readiness(state: &AppState) -> Result<(), String> {
    probe("database", state.db.ping()).await?;
    probe("bus", state.bus.ping()).await?;
    probe("time-series store", state.timeseries.ping()).await
}

/// How long one dependency may take to answer a readiness check: a probe
/// (Kubernetes, a load balancer) gives up after a few seconds, and the answer
/// should then name the dependency that hangs rather than time out itself.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn probe<E: std::fmt::Display>(
    what: &str,
    ping: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{what} unreachable: {e}")),
        Err(_) => Err(format!(
            "{what} unreachable: no answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}
