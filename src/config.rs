//! The one typed configuration: an optional TOML file, then `SMARTSOLAR_*`
//! environment variables on top. Every setting has a default, so no file
//! and no variables runs everything on embedded defaults.

use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result};
use control_plane::ControlPlaneConfig;
use serde::Deserialize;

/// Everything the `smartsolar` binary can be configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// The relational API (`[control_plane]` in the file).
    pub(crate) control_plane: ControlPlaneConfig,
    /// Unit connections (`[gateway]`); its `topics` name the bus topics for
    /// every service.
    pub(crate) gateway: gateway::GatewayConfig,
    /// The ingest engine (`[ingest]`).
    pub(crate) ingest: ingest::engine::EngineConfig,
    /// Alert analysis, run by ingest processes (`[alerts]`, `[alerts.thresholds]`).
    pub(crate) alerts: control_plane::AlertsConfig,
    /// The message bus (`[bus]`).
    pub(crate) bus: BusSettings,
    /// The time-series store (`[tsdb]`).
    pub(crate) tsdb: TsdbSettings,
    /// Where embedded engines keep their files (`SMARTSOLAR_DATA_DIR`).
    pub(crate) data_dir: std::path::PathBuf,
    /// Where Prometheus metrics are served (`SMARTSOLAR_METRICS_ADDR`);
    /// unset: no metrics listener.
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            control_plane: ControlPlaneConfig::default(),
            gateway: gateway::GatewayConfig::default(),
            ingest: ingest::engine::EngineConfig::default(),
            alerts: control_plane::AlertsConfig::default(),
            bus: BusSettings::default(),
            tsdb: TsdbSettings::default(),
            data_dir: "data".into(),
            metrics_addr: None,
        }
    }
}

/// Which bus connects the services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BusKind {
    /// The durable embedded bus under `data_dir/bus`: only for `serve`, where
    /// every service shares one process; survives restarts and `kill -9`.
    #[default]
    Disk,
    /// In-process, in memory: only for `serve`; lost on exit (tests, benchmarks).
    Memory,
    /// Kafka (or any Kafka-protocol broker) through rdkafka.
    Kafka,
}

impl std::str::FromStr for BusKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disk" => Ok(Self::Disk),
            "memory" => Ok(Self::Memory),
            "kafka" => Ok(Self::Kafka),
            _ => Err("expected disk, memory or kafka".into()),
        }
    }
}

/// `[bus]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BusSettings {
    /// `SMARTSOLAR_BUS`.
    pub(crate) kind: BusKind,
    /// `[bus.disk]`: partitions, segment size, retention caps of the disk bus.
    pub(crate) disk: bus::DiskBusConfig,
    /// `[bus.kafka]`; `SMARTSOLAR_KAFKA_BROKERS`.
    pub(crate) kafka: bus::kafka::KafkaBusConfig,
}

/// Which time-series store keeps telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TsdbKind {
    /// The embedded store under `data_dir/tsdb`.
    #[default]
    Embedded,
    /// InfluxDB 1.x over HTTP.
    Influx,
    /// QuestDB (ILP writes, SQL reads).
    Questdb,
}

impl std::str::FromStr for TsdbKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(Self::Embedded),
            "influx" | "influxdb" => Ok(Self::Influx),
            "questdb" => Ok(Self::Questdb),
            _ => Err("expected embedded, influx or questdb".into()),
        }
    }
}

/// `[tsdb]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TsdbSettings {
    /// `SMARTSOLAR_TSDB`.
    pub(crate) kind: TsdbKind,
    /// `[tsdb.influx]`; `SMARTSOLAR_INFLUX_URL`, `SMARTSOLAR_INFLUX_DB`.
    pub(crate) influx: ingest::tsdb::influx::InfluxConfig,
    /// `[tsdb.questdb]`; `SMARTSOLAR_QUESTDB_URL`.
    pub(crate) questdb: ingest::tsdb::questdb::QuestDbConfig,
    /// `[tsdb.embedded]`: head size, compaction, retention per measurement
    /// (its `data_dir` is always `data_dir/tsdb`);
    /// `SMARTSOLAR_TSDB_HEAD_VALUES`.
    pub(crate) embedded: ingest::tsdb::embedded::EmbeddedConfig,
}

impl Config {
    /// Reads `path` (if given) and applies environment overrides.
    pub(crate) fn load(path: Option<&Path>) -> Result<Self> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", p.display()))?
            }
            None => Self::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks settings that parse but make no sense.
    pub(crate) fn validate(&self) -> Result<()> {
        self.alerts.validate().map_err(anyhow::Error::msg)
    }

    /// Applies `SMARTSOLAR_*` overrides read through `var`.
    pub(crate) fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        fn set<T: FromStr>(
            var: &impl Fn(&str) -> Option<String>,
            name: &str,
            slot: &mut T,
        ) -> Result<()>
        where
            T::Err: std::fmt::Display,
        {
            if let Some(v) = var(name) {
                *slot = v
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{name}={v:?} is invalid: {e}"))?;
            }
            Ok(())
        }
        let cp = &mut self.control_plane;
        set(&var, "SMARTSOLAR_HTTP_ADDR", &mut cp.http_addr)?;
        set(&var, "SMARTSOLAR_DATABASE_URL", &mut cp.database_url)?;
        set(
            &var,
            "SMARTSOLAR_DB_MAX_CONNECTIONS",
            &mut cp.db_max_connections,
        )?;
        set(&var, "SMARTSOLAR_MAX_BODY_BYTES", &mut cp.max_body_bytes)?;
        set(
            &var,
            "SMARTSOLAR_DEFAULT_RESULTS_PER_PAGE",
            &mut cp.default_results_per_page,
        )?;
        set(
            &var,
            "SMARTSOLAR_MAX_RESULTS_PER_PAGE",
            &mut cp.max_results_per_page,
        )?;
        set(&var, "SMARTSOLAR_TOKEN_TTL_SECS", &mut cp.token_ttl_secs)?;
        set(
            &var,
            "SMARTSOLAR_LOGIN_MAX_FAILURES",
            &mut cp.login_max_failures,
        )?;
        set(
            &var,
            "SMARTSOLAR_LOGIN_WINDOW_SECS",
            &mut cp.login_window_secs,
        )?;
        set(
            &var,
            "SMARTSOLAR_WAKEUP_SMS_TIMEOUT_SECS",
            &mut cp.wakeup_sms_timeout_secs,
        )?;
        set(&var, "SMARTSOLAR_SERIAL_PREFIX", &mut cp.serial_prefix)?;
        set(
            &var,
            "SMARTSOLAR_LOCATIONS_PER_PAGE",
            &mut cp.locations_per_page,
        )?;
        set(
            &var,
            "SMARTSOLAR_BULK_MAX_RESULTS_PER_PAGE",
            &mut cp.bulk_max_results_per_page,
        )?;
        if let Some(v) = var("SMARTSOLAR_WAKEUP_ENABLED_SOFTWARE") {
            cp.wakeup_enabled_software = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = var("SMARTSOLAR_SMS_HTTP_URL") {
            cp.sms_http_url = Some(v).filter(|v| !v.trim().is_empty());
        }
        if let Some(v) = var("SMARTSOLAR_SMS_HTTP_TOKEN") {
            cp.sms_http_token = Some(v);
        }
        if let Some(v) = var("SMARTSOLAR_CELL_LOCATOR_CSV") {
            cp.cell_locator_csv = Some(v).filter(|v| !v.trim().is_empty());
        }
        if let Some(v) = var("SMARTSOLAR_CELL_LOCATOR_URL") {
            cp.cell_locator_url = Some(v).filter(|v| !v.trim().is_empty());
        }
        if let Some(v) = var("SMARTSOLAR_CELL_LOCATOR_TOKEN") {
            cp.cell_locator_token = Some(v);
        }
        set(
            &var,
            "SMARTSOLAR_WEBHOOK_TIMEOUT_MS",
            &mut cp.webhook_timeout_ms,
        )?;
        set(
            &var,
            "SMARTSOLAR_WEBHOOK_MAX_ATTEMPTS",
            &mut cp.webhook_max_attempts,
        )?;
        set(
            &var,
            "SMARTSOLAR_WEBHOOK_BACKOFF_BASE_MS",
            &mut cp.webhook_backoff_base_ms,
        )?;
        set(
            &var,
            "SMARTSOLAR_WEBHOOK_BACKOFF_MAX_MS",
            &mut cp.webhook_backoff_max_ms,
        )?;
        set(
            &var,
            "SMARTSOLAR_WEBHOOK_POLL_INTERVAL_MS",
            &mut cp.webhook_poll_interval_ms,
        )?;
        if let Some(v) = var("SMARTSOLAR_WEBHOOK_SECRET_KEY") {
            cp.webhook_secret_key = Some(control_plane::config::Secret::new(v));
        }
        if let Some(v) = var("SMARTSOLAR_WEBHOOK_DENY_CIDRS") {
            cp.webhook_deny_cidrs = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = var("SMARTSOLAR_CONSOLE_TILE_URL") {
            cp.console_tile_url = Some(v).filter(|v| !v.trim().is_empty());
        }
        if let Some(v) = var("SMARTSOLAR_CONSOLE_TILE_ATTRIBUTION") {
            cp.console_tile_attribution = Some(v).filter(|v| !v.trim().is_empty());
        }
        let alerts = &mut self.alerts;
        set(&var, "SMARTSOLAR_ALERTS_ENABLED", &mut alerts.enabled)?;
        set(
            &var,
            "SMARTSOLAR_ALERTS_PASS_INTERVAL_SECS",
            &mut alerts.pass_interval_secs,
        )?;
        set(&var, "SMARTSOLAR_ALERTS_BUCKETS", &mut alerts.buckets)?;
        set(&var, "SMARTSOLAR_ALERTS_LEASE_SECS", &mut alerts.lease_secs)?;
        set(&var, "SMARTSOLAR_DATA_DIR", &mut self.data_dir)?;
        set(&var, "SMARTSOLAR_BUS", &mut self.bus.kind)?;
        set(
            &var,
            "SMARTSOLAR_KAFKA_BROKERS",
            &mut self.bus.kafka.brokers,
        )?;
        set(&var, "SMARTSOLAR_TSDB", &mut self.tsdb.kind)?;
        set(&var, "SMARTSOLAR_INFLUX_URL", &mut self.tsdb.influx.url)?;
        set(&var, "SMARTSOLAR_INFLUX_DB", &mut self.tsdb.influx.database)?;
        set(&var, "SMARTSOLAR_QUESTDB_URL", &mut self.tsdb.questdb.url)?;
        set(
            &var,
            "SMARTSOLAR_TSDB_HEAD_VALUES",
            &mut self.tsdb.embedded.head_values,
        )?;
        set(
            &var,
            "SMARTSOLAR_GATEWAY_NODE_ID",
            &mut self.gateway.node_id,
        )?;
        if let Some(v) = var("SMARTSOLAR_GATEWAY_CAPTURE_PATH") {
            self.gateway.capture_path = Some(v.into());
        }
        set(
            &var,
            "SMARTSOLAR_GATEWAY_TCP_TLS",
            &mut self.gateway.tcp_tls,
        )?;
        if var("SMARTSOLAR_GATEWAY_HTTP_TLS").is_some() {
            let mut on = false;
            set(&var, "SMARTSOLAR_GATEWAY_HTTP_TLS", &mut on)?;
            self.gateway.http_tls = Some(on);
        }
        let gw = &mut self.gateway;
        for (name, slot) in [
            ("SMARTSOLAR_GATEWAY_QUIC_ADDR", &mut gw.quic_listen),
            ("SMARTSOLAR_GATEWAY_TCP_ADDR", &mut gw.tcp_listen),
            ("SMARTSOLAR_GATEWAY_HTTP_ADDR", &mut gw.http_listen),
        ] {
            if let Some(v) = var(name) {
                // "off" switches a transport off.
                *slot = if v == "off" {
                    None
                } else {
                    Some(
                        v.parse()
                            .map_err(|e| anyhow::anyhow!("{name}={v:?} is invalid: {e}"))?,
                    )
                };
            }
        }
        let cp = &mut self.control_plane;
        if let Some(v) = var("SMARTSOLAR_ADMIN_USER") {
            cp.admin_user = Some(v);
        }
        if let Some(v) = var("SMARTSOLAR_ADMIN_PASSWORD") {
            cp.admin_password = Some(v);
        }
        if let Some(v) = var("SMARTSOLAR_METRICS_ADDR") {
            self.metrics_addr =
                Some(v.parse().map_err(|e| {
                    anyhow::anyhow!("SMARTSOLAR_METRICS_ADDR={v:?} is invalid: {e}")
                })?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_on_embedded_sqlite() {
        let c = Config::default();
        assert_eq!(c.control_plane.http_addr.to_string(), "127.0.0.1:8080");
        assert!(c.control_plane.database_url.starts_with("sqlite://data/"));
    }

    #[test]
    fn the_durable_disk_bus_is_the_default_and_the_others_stay_selectable() {
        assert_eq!(Config::default().bus.kind, BusKind::Disk);
        let mut c: Config = toml::from_str(
            "[bus]\nkind = \"memory\"\n[bus.disk]\npartitions = 4\ntopic_max_partition_bytes = { \"RTC-MO.Dead-Letter\" = 1000 }\n",
        )
        .unwrap();
        assert_eq!(c.bus.kind, BusKind::Memory);
        assert_eq!(c.bus.disk.partitions, 4);
        assert_eq!(
            c.bus.disk.topic_max_partition_bytes["RTC-MO.Dead-Letter"],
            1000
        );
        c.apply_env(|k| (k == "SMARTSOLAR_BUS").then(|| "kafka".into()))
            .unwrap();
        assert_eq!(c.bus.kind, BusKind::Kafka);
        let err = c
            .apply_env(|k| (k == "SMARTSOLAR_BUS").then(|| "disc".into()))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("expected disk, memory or kafka"),
            "{err:#}"
        );
    }

    #[test]
    fn environment_overrides_file_values() {
        let mut c: Config = toml::from_str(
            "[control_plane]\nhttp_addr = \"127.0.0.1:9000\"\nmax_results_per_page = 50\n",
        )
        .unwrap();
        c.apply_env(|k| match k {
            "SMARTSOLAR_HTTP_ADDR" => Some("127.0.0.1:9100".into()),
            "SMARTSOLAR_ADMIN_USER" => Some("root@example.com".into()),
            "SMARTSOLAR_WAKEUP_ENABLED_SOFTWARE" => Some("3.6, hub-stc-9".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.control_plane.http_addr.port(), 9100);
        assert_eq!(c.control_plane.max_results_per_page, 50);
        assert_eq!(
            c.control_plane.admin_user.as_deref(),
            Some("root@example.com")
        );
        assert_eq!(
            c.control_plane.wakeup_enabled_software,
            vec!["3.6".to_string(), "hub-stc-9".to_string()]
        );
        assert_eq!(c.control_plane.wakeup_sms_timeout_secs, 3600);
    }

    #[test]
    fn alert_settings_come_from_the_file_and_the_environment() {
        let mut c: Config = toml::from_str(
            "[alerts]\nbuckets = 16\n[alerts.thresholds]\nlow_battery_voltage = 11.0\n",
        )
        .unwrap();
        c.apply_env(|k| match k {
            "SMARTSOLAR_ALERTS_ENABLED" => Some("false".into()),
            "SMARTSOLAR_ALERTS_PASS_INTERVAL_SECS" => Some("30".into()),
            _ => None,
        })
        .unwrap();
        assert!(!c.alerts.enabled);
        assert_eq!(c.alerts.pass_interval_secs, 30);
        assert_eq!(c.alerts.buckets, 16);
        assert_eq!(c.alerts.thresholds.low_battery_voltage, 11.0);
        assert_eq!(c.alerts.thresholds.min_samples, 12);
        assert!(toml::from_str::<Config>("[alerts.thresholds]\nlow_volts = 1\n").is_err());
    }

    #[test]
    fn bad_values_and_unknown_keys_are_errors() {
        let mut c = Config::default();
        let err = c
            .apply_env(|k| (k == "SMARTSOLAR_HTTP_ADDR").then(|| "nope".into()))
            .unwrap_err();
        assert!(err.to_string().contains("SMARTSOLAR_HTTP_ADDR"));
        assert!(toml::from_str::<Config>("[control_plane]\nhttp_adr = \"x\"\n").is_err());
    }

    #[test]
    fn alert_settings_are_validated() {
        Config::default().validate().unwrap();
        let mut c = Config::default();
        c.apply_env(|k| (k == "SMARTSOLAR_ALERTS_LEASE_SECS").then(|| "30".into()))
            .unwrap();
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("alerts.lease_secs"), "{err}");
    }
}
