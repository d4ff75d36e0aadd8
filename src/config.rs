//! The one typed configuration, three layers merged by figment: defaults (no file and no
//! variables runs on embedded engines), an optional TOML file, `SMARTSOLAR_*` variables.
//! A variable is `SMARTSOLAR_` and a key's path with `__` between sections
//! (`SMARTSOLAR_BUS__DISK__FSYNC`), or a short name from [`ALIASES`]; any other, unless
//! another program's ([`NOT_CONFIG`]), is an unknown key: an error, as in the file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use control_plane::ControlPlaneConfig;
use figment::error::Kind;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Empty, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
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
    /// Threads of the services beside the gateway (`[runtime]`).
    pub(crate) runtime: crate::runtimes::RuntimeSettings,
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
            runtime: crate::runtimes::RuntimeSettings::default(),
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
    #[serde(alias = "influxdb")]
    Influx,
    /// QuestDB (ILP writes, SQL reads).
    Questdb,
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
    /// Reads `path` (if given) and the process's environment.
    pub(crate) fn load(path: Option<&Path>) -> Result<Self> {
        Self::from_sources(path, std::env::vars_os())
    }

    /// Merges the defaults, the TOML file at `path` (if given) and the
    /// `SMARTSOLAR_*` variables among `vars`, then validates the result.
    pub(crate) fn from_sources(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self> {
        // The defaults need no provider: every struct is `#[serde(default)]`.
        let mut figment = Figment::new();
        if let Some(path) = path {
            figment = figment.merge(Toml::file_exact(path));
        }
        for variable in variables(vars)? {
            figment = figment.merge(variable);
        }
        // Lossy: a variable's text "30" or "false" becomes the number or flag
        // its key wants, while a string key keeps "1234" as text.
        let config: Self = figment.extract_lossy().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks settings that parse but make no sense.
    pub(crate) fn validate(&self) -> Result<()> {
        self.alerts.validate().map_err(anyhow::Error::msg)
    }
}

/// Every configuration variable starts with this.
const PREFIX: &str = "SMARTSOLAR_";
/// How an error names a variable it is about.
const VARIABLE: &str = "environment variable ";
/// Joins the sections of a key in a variable's name.
const NESTING: &str = "__";

/// How a variable's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// The text as it is, converted to the key's type ("30", "false").
    Text,
    /// As `Text`, but text starting with `[` or `{` is a list or an inline
    /// table (`[a, b]`, `{ telemetry = 730 }`): how a nested variable sets
    /// keys that hold lists or tables.
    Structured,
    /// `off` leaves the key unset: switches a listener off.
    OffUnsets,
    /// Blank text leaves the key unset.
    BlankUnsets,
    /// Comma-separated items, trimmed, empty ones dropped.
    CommaList,
}

/// The short names used before nested keys, kept for deploy files, scripts
/// and tests: variable, key, and how its text reads. A nested variable for
/// the same key reads its text the same way.
#[rustfmt::skip] // A table: one line per variable.
const ALIASES: &[(&str, &str, Syntax)] = { use Syntax::{BlankUnsets, CommaList, OffUnsets, Text}; &[
    ("SMARTSOLAR_HTTP_ADDR",                 "control_plane.http_addr",                 Text),
    ("SMARTSOLAR_DATABASE_URL",              "control_plane.database_url",              Text),
    ("SMARTSOLAR_DB_MAX_CONNECTIONS",        "control_plane.db_max_connections",        Text),
    ("SMARTSOLAR_MAX_BODY_BYTES",            "control_plane.max_body_bytes",            Text),
    ("SMARTSOLAR_DEFAULT_RESULTS_PER_PAGE",  "control_plane.default_results_per_page",  Text),
    ("SMARTSOLAR_MAX_RESULTS_PER_PAGE",      "control_plane.max_results_per_page",      Text),
    ("SMARTSOLAR_TOKEN_TTL_SECS",            "control_plane.token_ttl_secs",            Text),
    ("SMARTSOLAR_LOGIN_MAX_FAILURES",        "control_plane.login_max_failures",        Text),
    ("SMARTSOLAR_LOGIN_WINDOW_SECS",         "control_plane.login_window_secs",         Text),
    ("SMARTSOLAR_WAKEUP_SMS_TIMEOUT_SECS",   "control_plane.wakeup_sms_timeout_secs",   Text),
    ("SMARTSOLAR_WAKEUP_ENABLED_SOFTWARE",   "control_plane.wakeup_enabled_software",   CommaList),
    ("SMARTSOLAR_SERIAL_PREFIX",             "control_plane.serial_prefix",             Text),
    ("SMARTSOLAR_LOCATIONS_PER_PAGE",        "control_plane.locations_per_page",        Text),
    ("SMARTSOLAR_BULK_MAX_RESULTS_PER_PAGE", "control_plane.bulk_max_results_per_page", Text),
    ("SMARTSOLAR_SMS_HTTP_URL",              "control_plane.sms_http_url",              BlankUnsets),
    ("SMARTSOLAR_SMS_HTTP_TOKEN",            "control_plane.sms_http_token",            Text),
    ("SMARTSOLAR_CELL_LOCATOR_CSV",          "control_plane.cell_locator_csv",          BlankUnsets),
    ("SMARTSOLAR_CELL_LOCATOR_URL",          "control_plane.cell_locator_url",          BlankUnsets),
    ("SMARTSOLAR_CELL_LOCATOR_TOKEN",        "control_plane.cell_locator_token",        Text),
    ("SMARTSOLAR_WEBHOOK_TIMEOUT_MS",        "control_plane.webhook_timeout_ms",        Text),
    ("SMARTSOLAR_WEBHOOK_MAX_ATTEMPTS",      "control_plane.webhook_max_attempts",      Text),
    ("SMARTSOLAR_WEBHOOK_BACKOFF_BASE_MS",   "control_plane.webhook_backoff_base_ms",   Text),
    ("SMARTSOLAR_WEBHOOK_BACKOFF_MAX_MS",    "control_plane.webhook_backoff_max_ms",    Text),
    ("SMARTSOLAR_WEBHOOK_POLL_INTERVAL_MS",  "control_plane.webhook_poll_interval_ms",  Text),
    ("SMARTSOLAR_WEBHOOK_SECRET_KEY",        "control_plane.webhook_secret_key",        Text),
    ("SMARTSOLAR_WEBHOOK_DENY_CIDRS",        "control_plane.webhook_deny_cidrs",        CommaList),
    ("SMARTSOLAR_CONSOLE_TILE_URL",          "control_plane.console_tile_url",          BlankUnsets),
    ("SMARTSOLAR_CONSOLE_TILE_ATTRIBUTION",  "control_plane.console_tile_attribution",  BlankUnsets),
    ("SMARTSOLAR_ADMIN_USER",                "control_plane.admin_user",                Text),
    ("SMARTSOLAR_ADMIN_PASSWORD",            "control_plane.admin_password",            Text),
    ("SMARTSOLAR_ALERTS_ENABLED",            "alerts.enabled",                          Text),
    ("SMARTSOLAR_ALERTS_PASS_INTERVAL_SECS", "alerts.pass_interval_secs",               Text),
    ("SMARTSOLAR_ALERTS_BUCKETS",            "alerts.buckets",                          Text),
    ("SMARTSOLAR_ALERTS_LEASE_SECS",         "alerts.lease_secs",                       Text),
    ("SMARTSOLAR_DATA_DIR",                  "data_dir",                                Text),
    ("SMARTSOLAR_METRICS_ADDR",              "metrics_addr",                            Text),
    ("SMARTSOLAR_BUS",                       "bus.kind",                                Text),
    ("SMARTSOLAR_KAFKA_BROKERS",             "bus.kafka.brokers",                       Text),
    ("SMARTSOLAR_TSDB",                      "tsdb.kind",                               Text),
    ("SMARTSOLAR_INFLUX_URL",                "tsdb.influx.url",                         Text),
    ("SMARTSOLAR_INFLUX_DB",                 "tsdb.influx.database",                    Text),
    ("SMARTSOLAR_QUESTDB_URL",               "tsdb.questdb.url",                        Text),
    ("SMARTSOLAR_TSDB_HEAD_VALUES",          "tsdb.embedded.head_values",               Text),
    ("SMARTSOLAR_GATEWAY_NODE_ID",           "gateway.node_id",                         Text),
    ("SMARTSOLAR_GATEWAY_CAPTURE_PATH",      "gateway.capture_path",                    Text),
    ("SMARTSOLAR_GATEWAY_TCP_TLS",           "gateway.tcp_tls",                         Text),
    ("SMARTSOLAR_GATEWAY_HTTP_TLS",          "gateway.http_tls",                        Text),
    ("SMARTSOLAR_GATEWAY_QUIC_ADDR",         "gateway.quic_listen",                     OffUnsets),
    ("SMARTSOLAR_GATEWAY_TCP_ADDR",          "gateway.tcp_listen",                      OffUnsets),
    ("SMARTSOLAR_GATEWAY_HTTP_ADDR",         "gateway.http_listen",                     OffUnsets),
]};

/// `SMARTSOLAR_` variables that configure something else: the binary's own
/// command-line options (`SMARTSOLAR_CONFIG`, passwords kept out of shell
/// history), and scripts, tests and benchmarks whose environment the binary
/// inherits. A name ending in `_` covers every name it begins.
#[rustfmt::skip]
const NOT_CONFIG: &[&str] = &[
    "SMARTSOLAR_CONFIG", "SMARTSOLAR_DEMO_PASSWORD", "SMARTSOLAR_NEW_USER_PASSWORD",
    "SMARTSOLAR_TEST_", "SMARTSOLAR_BENCH_", "SMARTSOLAR_CLUSTER_", "SMARTSOLAR_BUS_KILL_TEST_",
    "SMARTSOLAR_BIN", "SMARTSOLAR_FUZZ_EXAMPLES", "SMARTSOLAR_INFLUX_PORT", "SMARTSOLAR_KAFKA_PORT",
    "SMARTSOLAR_OPENAPI_VENV", "SMARTSOLAR_PERF_DIR", "SMARTSOLAR_REQUIRE_PROMTOOL",
    "SMARTSOLAR_SERVICES_DIR",
];

fn is_config(name: &str, text: &std::ffi::OsStr) -> bool {
    name.starts_with(PREFIX)
        && !is_service_link(name, text)
        && !NOT_CONFIG
            .iter()
            .any(|other| name == *other || (other.ends_with('_') && name.starts_with(other)))
}

/// Whether `name` is one of the variables Kubernetes gives every pod for each service in its
/// namespace (`<SERVICE>_SERVICE_HOST`, `<SERVICE>_SERVICE_PORT[_<NAME>]`, `<SERVICE>_PORT`,
/// `<SERVICE>_PORT_<n>_<PROTO>[_ADDR|_PORT|_PROTO]`): a service named `smartsolar` or
/// `smartsolar-api` must not stop the binary from starting. Nested names (with `__`) are
/// never taken for one, nor a bare `..._PORT` whose value is not Kubernetes' `tcp://...`
/// form (`SMARTSOLAR_HTTP_PORT=9000` is a mistake to report, not a service link).
fn is_service_link(name: &str, text: &std::ffi::OsStr) -> bool {
    if name.contains(NESTING) {
        return false;
    }
    if name.ends_with("_SERVICE_HOST") || name.contains("_SERVICE_PORT") {
        return true;
    }
    if name.ends_with("_PORT") {
        let text = text.to_string_lossy();
        return ["tcp://", "udp://", "sctp://"]
            .iter()
            .any(|scheme| text.starts_with(scheme));
    }
    // `..._PORT_8080_TCP`, `..._PORT_8080_TCP_ADDR`, ...
    name.split("_PORT_").skip(1).any(|rest| {
        let mut parts = rest.split('_');
        let number = parts.next().unwrap_or("");
        let proto = parts.next().unwrap_or("");
        !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit())
            && matches!(proto, "TCP" | "UDP" | "SCTP")
    })
}

/// One environment variable as a figment provider, so that an error about
/// its key names the variable.
struct Variable {
    name: String,
    key: String,
    value: Value,
}

impl Provider for Variable {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{VARIABLE}{}", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let table = figment::util::nest(&self.key, self.value.clone())
            .into_dict()
            .expect("a dotted key nests into a table");
        Ok(Profile::Default.collect(table))
    }
}

/// The configuration variables among `vars`, a table's before its keys'.
fn variables(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Vec<Variable>> {
    let mut by_key = BTreeMap::<String, Variable>::new();
    for (name, text) in vars {
        let Some(name) = name.to_str().filter(|name| is_config(name, &text)) else {
            continue;
        };
        let text = text
            .into_string()
            .map_err(|_| anyhow!("environment variable {name} is not valid UTF-8"))?;
        let (key, syntax) = match ALIASES.iter().find(|(alias, ..)| *alias == name) {
            Some((_, key, syntax)) => (key.to_string(), *syntax),
            None => {
                let key = nested_key(name)?;
                let syntax = ALIASES
                    .iter()
                    .find(|(_, aliased, _)| *aliased == key)
                    .map_or(Syntax::Structured, |(.., syntax)| *syntax);
                (key, syntax)
            }
        };
        let variable = Variable {
            name: name.to_owned(),
            key: key.clone(),
            value: syntax.read(&text),
        };
        if let Some(other) = by_key.insert(key.clone(), variable) {
            bail!(
                "environment variables {} and {name} both set `{key}`: keep one",
                other.name
            );
        }
    }
    Ok(by_key.into_values().collect())
}

/// `SMARTSOLAR_BUS__DISK__FSYNC` -> `bus.disk.fsync`.
fn nested_key(name: &str) -> Result<String> {
    let sections: Vec<String> = name[PREFIX.len()..]
        .split(NESTING)
        .map(str::to_ascii_lowercase)
        .collect();
    if sections.iter().any(|s| s.is_empty() || s.contains('.')) {
        bail!(
            "environment variable {name} names no key: sections are joined by a double underscore \
             (e.g. SMARTSOLAR_BUS__DISK__FSYNC), none empty or with a dot"
        );
    }
    Ok(sections.join("."))
}

impl Syntax {
    fn read(self, text: &str) -> Value {
        match self {
            Self::OffUnsets if text == "off" => Empty::None.into(),
            Self::BlankUnsets if text.trim().is_empty() => Empty::None.into(),
            Self::CommaList => text
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
                .into(),
            Self::Structured if text.starts_with(['[', '{']) => text
                .parse()
                .expect("figment's value parser falls back to text"),
            _ => text.into(),
        }
    }
}

/// One line per problem, each naming the file or variable and the key.
fn describe(errors: figment::Error) -> anyhow::Error {
    let problems: Vec<String> = errors
        .into_iter()
        .map(|error| {
            let source = match error.metadata.as_ref() {
                Some(Metadata {
                    source: Some(Source::File(path)),
                    ..
                }) => {
                    format!("config file {}", path.display())
                }
                Some(metadata) => metadata.name.to_string(),
                None => "the configuration".to_owned(),
            };
            // A misspelt variable: say what a right one looks like.
            let hint = match &error.kind {
                Kind::UnknownField(..) if source.starts_with(VARIABLE) => {
                    " (a variable is SMARTSOLAR_ and a key's path with `__` between sections, \
                     or one of the short names in the README's Configuration)"
                }
                _ => "",
            };
            match error.path.join(".") {
                key if key.is_empty() => format!("{source}: {}{hint}", error.kind),
                key => format!("{source}, key `{key}`: {}{hint}", error.kind),
            }
        })
        .collect();
    anyhow!("invalid configuration: {}", problems.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Config::from_sources` with `file` (if any) written to a file and
    /// `vars` as the environment.
    fn load(file: Option<&str>, vars: &[(&str, &str)]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("smartsolar.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let vars = vars.iter().map(|(k, v)| (k.into(), v.into()));
        Config::from_sources(file.map(|_| path.as_path()), vars)
    }

    fn error(file: Option<&str>, vars: &[(&str, &str)]) -> String {
        format!("{:#}", load(file, vars).unwrap_err())
    }

    #[test]
    fn defaults_run_on_embedded_sqlite() {
        let c = Config::default();
        assert_eq!(c.control_plane.http_addr.to_string(), "127.0.0.1:8080");
        assert!(c.control_plane.database_url.starts_with("sqlite://data/"));
        let loaded = load(None, &[("PATH", "/bin"), ("HOME", "/root")]).unwrap();
        assert_eq!(format!("{loaded:?}"), format!("{c:?}"));
    }

    #[test]
    fn the_durable_disk_bus_is_the_default_and_the_others_stay_selectable() {
        assert_eq!(Config::default().bus.kind, BusKind::Disk);
        let file = "[bus]\nkind = \"memory\"\n[bus.disk]\npartitions = 4\ntopic_max_partition_bytes = { \"RTC-MO.Dead-Letter\" = 1000 }\n";
        let c = load(Some(file), &[]).unwrap();
        assert_eq!(c.bus.kind, BusKind::Memory);
        assert_eq!(c.bus.disk.partitions, 4);
        assert_eq!(
            c.bus.disk.topic_max_partition_bytes["RTC-MO.Dead-Letter"],
            1000
        );
        let c = load(Some(file), &[("SMARTSOLAR_BUS", "kafka")]).unwrap();
        assert_eq!(c.bus.kind, BusKind::Kafka);
        assert_eq!(c.bus.disk.partitions, 4);
        let err = error(Some(file), &[("SMARTSOLAR_BUS", "disc")]);
        assert!(err.contains("SMARTSOLAR_BUS"), "{err}");
        assert!(err.contains("`disk`, `memory`, `kafka`"), "{err}");
    }

    #[test]
    fn environment_overrides_file_values() {
        let file = "[control_plane]\nhttp_addr = \"127.0.0.1:9000\"\nmax_results_per_page = 50\n";
        let c = load(
            Some(file),
            &[
                ("SMARTSOLAR_HTTP_ADDR", "127.0.0.1:9100"),
                ("SMARTSOLAR_ADMIN_USER", "root@example.com"),
                ("SMARTSOLAR_WAKEUP_ENABLED_SOFTWARE", "3.6, hub-stc-9"),
            ],
        )
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
    fn layers_apply_in_order_defaults_file_environment() {
        let file = "data_dir = \"/srv/file\"\n[control_plane]\nhttp_addr = \"127.0.0.1:9000\"\nmax_results_per_page = 50\n";
        let from_file = load(Some(file), &[]).unwrap();
        assert_eq!(from_file.control_plane.http_addr.port(), 9000);
        assert_eq!(from_file.data_dir, Path::new("/srv/file"));
        assert_eq!(from_file.control_plane.default_results_per_page, 10);
        let c = load(
            Some(file),
            &[
                ("SMARTSOLAR_CONTROL_PLANE__HTTP_ADDR", "127.0.0.1:9100"),
                ("SMARTSOLAR_DATA_DIR", "/srv/env"),
            ],
        )
        .unwrap();
        assert_eq!(c.control_plane.http_addr.port(), 9100);
        assert_eq!(c.data_dir, Path::new("/srv/env"));
        assert_eq!(c.control_plane.max_results_per_page, 50);
        assert_eq!(c.control_plane.default_results_per_page, 10);
        let err = error(
            None,
            &[
                ("SMARTSOLAR_HTTP_ADDR", "127.0.0.1:1"),
                ("SMARTSOLAR_CONTROL_PLANE__HTTP_ADDR", "127.0.0.1:2"),
            ],
        );
        assert!(
            err.contains("SMARTSOLAR_HTTP_ADDR")
                && err.contains("SMARTSOLAR_CONTROL_PLANE__HTTP_ADDR")
                && err.contains("control_plane.http_addr"),
            "{err}"
        );
    }

    #[test]
    fn nested_variables_reach_every_depth() {
        let file = "[gateway.topics]\nmt = \"file-mt\"\n";
        let c = load(
            Some(file),
            &[
                ("SMARTSOLAR_BUS__DISK__FSYNC", "false"),
                ("SMARTSOLAR_BUS__DISK__PARTITIONS", "3"),
                ("SMARTSOLAR_GATEWAY__TOPICS__MO", "env-mo"),
                (
                    "SMARTSOLAR_TSDB__EMBEDDED__RETENTION_DAYS__TELEMETRY",
                    "730",
                ),
                ("SMARTSOLAR_ALERTS__THRESHOLDS__LOW_BATTERY_VOLTAGE", "11.5"),
                ("SMARTSOLAR_GATEWAY__TCP_LISTEN", "off"),
                (
                    "SMARTSOLAR_CONTROL_PLANE__WEBHOOK_DENY_CIDRS",
                    "10.0.0.0/8, ::1/128",
                ),
                ("SMARTSOLAR_INGEST__SHARDS", "5"),
                (
                    "SMARTSOLAR_BUS__DISK__TOPIC_MAX_PARTITION_BYTES",
                    "{ \"RTC-MO.Dead-Letter\" = 1000 }",
                ),
                ("SMARTSOLAR_CONTROL_PLANE__SERIAL_PREFIX", "1234"),
            ],
        )
        .unwrap();
        assert!(!c.bus.disk.fsync);
        assert_eq!(c.bus.disk.partitions, 3);
        assert_eq!(c.gateway.topics.mo, "env-mo");
        assert_eq!(c.gateway.topics.mt, "file-mt");
        assert_eq!(c.tsdb.embedded.retention_days["telemetry"], 730);
        assert_eq!(c.alerts.thresholds.low_battery_voltage, 11.5);
        assert_eq!(c.gateway.tcp_listen, None);
        assert!(c.gateway.quic_listen.is_some());
        assert_eq!(
            c.control_plane.webhook_deny_cidrs,
            vec!["10.0.0.0/8".to_string(), "::1/128".to_string()]
        );
        assert_eq!(c.ingest.shards, 5);
        assert_eq!(
            c.bus.disk.topic_max_partition_bytes["RTC-MO.Dead-Letter"],
            1000
        );
        // Text that looks like a number stays text where the key wants text.
        assert_eq!(c.control_plane.serial_prefix, "1234");
    }

    #[test]
    fn every_alias_sets_the_key_its_nested_name_sets() {
        let default = format!("{:?}", Config::default());
        for (alias, key, _) in ALIASES {
            // The first sample its key takes that changes the configuration.
            let (sample, via_alias) = [
                "7",
                "3600",
                "false",
                "true",
                "127.0.0.1:7",
                "kafka",
                "influx",
            ]
            .into_iter()
            .filter_map(|v| Some((v, format!("{:?}", load(None, &[(alias, v)]).ok()?))))
            .find(|(_, c)| *c != default)
            .unwrap_or_else(|| panic!("{alias} changes nothing"));
            let nested = format!("{PREFIX}{}", key.to_ascii_uppercase().replace('.', NESTING));
            let via_nested = format!("{:?}", load(None, &[(&nested, sample)]).unwrap());
            assert_eq!(via_alias, via_nested, "{alias}={sample} against {nested}");
        }
    }

    #[test]
    fn the_short_names_keep_their_special_values() {
        let c = load(
            None,
            &[
                ("SMARTSOLAR_GATEWAY_HTTP_ADDR", "off"),
                ("SMARTSOLAR_GATEWAY_QUIC_ADDR", "127.0.0.1:4999"),
                ("SMARTSOLAR_KAFKA_BROKERS", "k1:9092,k2:9092"),
                ("SMARTSOLAR_SMS_HTTP_URL", " "),
                ("SMARTSOLAR_TSDB", "influxdb"),
                ("SMARTSOLAR_ADMIN_PASSWORD", "[not a list]"),
                ("SMARTSOLAR_GATEWAY_HTTP_TLS", "true"),
                ("SMARTSOLAR_GATEWAY_TCP_TLS", "no"),
            ],
        )
        .unwrap();
        assert_eq!(c.gateway.http_listen, None);
        assert_eq!(c.gateway.quic_listen.unwrap().port(), 4999);
        assert_eq!(c.bus.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(c.control_plane.sms_http_url, None);
        assert_eq!(c.tsdb.kind, TsdbKind::Influx);
        assert_eq!(
            c.control_plane.admin_password.as_deref(),
            Some("[not a list]")
        );
        assert_eq!(c.gateway.http_tls, Some(true));
        assert!(!c.gateway.tcp_tls);
    }

    #[test]
    fn alert_settings_come_from_the_file_and_the_environment() {
        let file = "[alerts]\nbuckets = 16\n[alerts.thresholds]\nlow_battery_voltage = 11.0\n";
        let c = load(
            Some(file),
            &[
                ("SMARTSOLAR_ALERTS_ENABLED", "false"),
                ("SMARTSOLAR_ALERTS_PASS_INTERVAL_SECS", "30"),
            ],
        )
        .unwrap();
        assert!(!c.alerts.enabled);
        assert_eq!(c.alerts.pass_interval_secs, 30);
        assert_eq!(c.alerts.buckets, 16);
        assert_eq!(c.alerts.thresholds.low_battery_voltage, 11.0);
        assert_eq!(c.alerts.thresholds.min_samples, 12);
        assert!(load(Some("[alerts.thresholds]\nlow_volts = 1\n"), &[]).is_err());
    }

    #[test]
    fn bad_values_and_unknown_keys_are_errors() {
        let err = error(None, &[("SMARTSOLAR_HTTP_ADDR", "nope")]);
        assert!(err.contains("SMARTSOLAR_HTTP_ADDR"), "{err}");
        let err = error(Some("[control_plane]\nhttp_adr = \"x\"\n"), &[]);
        assert!(
            err.contains("smartsolar.toml") && err.contains("`control_plane.http_adr`"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_variable_is_an_error_that_names_it() {
        for (name, key) in [
            ("SMARTSOLAR_BUS__DISK__FSYNK", "`bus.disk.fsynk`"),
            ("SMARTSOLAR_HTTP_ADR", "`http_adr`"),
            (
                "SMARTSOLAR_CONTROL_PLANE_HTTP_ADDR",
                "`control_plane_http_addr`",
            ),
        ] {
            let err = error(None, &[(name, "1")]);
            assert!(
                err.contains(&format!("environment variable {name}"))
                    && err.contains(key)
                    && err.contains("short names in the README"),
                "{err}"
            );
        }
        let err = error(None, &[("SMARTSOLAR_BUS____DISK", "1")]);
        assert!(err.contains("SMARTSOLAR_BUS____DISK"), "{err}");
        // Not configuration: other programs' variables, the command line's own.
        load(
            None,
            &[
                ("SMARTSOLAR_TEST_POSTGRES_URL", "postgres://x"),
                ("SMARTSOLAR_CONFIG", "/etc/smartsolar.toml"),
                ("SMARTSOLAR_CLUSTER_DIR", "/tmp/c"),
                ("smartsolar_bus", "nope"),
                ("OTHER_BUS__X", "1"),
                // Kubernetes' service links for services named smartsolar and smartsolar-api.
                ("SMARTSOLAR_SERVICE_HOST", "10.0.0.1"),
                ("SMARTSOLAR_SERVICE_PORT", "8080"),
                ("SMARTSOLAR_SERVICE_PORT_HTTP", "8080"),
                ("SMARTSOLAR_PORT", "tcp://10.0.0.1:8080"),
                ("SMARTSOLAR_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
                ("SMARTSOLAR_API_PORT_8080_TCP_ADDR", "10.0.0.1"),
                ("SMARTSOLAR_API_PORT_8080_TCP_PROTO", "tcp"),
            ],
        )
        .unwrap();
        // A nested name is never taken for a service link, nor a bare `_PORT` with a plain
        // number: that is a mistaken key, reported.
        for name in ["SMARTSOLAR_GATEWAY__QUIC_PORT", "SMARTSOLAR_HTTP_PORT"] {
            let err = error(None, &[(name, "9000")]);
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn a_wrong_type_names_the_variable_or_the_file() {
        let err = error(None, &[("SMARTSOLAR_BUS__DISK__FSYNC", "maybe")]);
        assert!(
            err.contains("environment variable SMARTSOLAR_BUS__DISK__FSYNC")
                && err.contains("expected a boolean"),
            "{err}"
        );
        let err = error(None, &[("SMARTSOLAR_ALERTS_BUCKETS", "-1")]);
        assert!(err.contains("SMARTSOLAR_ALERTS_BUCKETS"), "{err}");
        let err = error(Some("[bus.disk]\nfsync = \"maybe\"\n"), &[]);
        assert!(
            err.contains("smartsolar.toml") && err.contains("`bus.disk.fsync`"),
            "{err}"
        );
        let err = error(Some("[bus\n"), &[]);
        assert!(err.contains("smartsolar.toml"), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_error_that_names_it() {
        let path = Path::new("/nonexistent/smartsolar.toml");
        let err = format!("{:#}", Config::from_sources(Some(path), []).unwrap_err());
        assert!(err.contains("/nonexistent/smartsolar.toml"), "{err}");
    }

    #[test]
    fn alert_settings_are_validated() {
        Config::default().validate().unwrap();
        let err = error(None, &[("SMARTSOLAR_ALERTS_LEASE_SECS", "30")]);
        assert!(err.contains("alerts.lease_secs"), "{err}");
    }
}
