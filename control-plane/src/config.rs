//! The control-plane's part of the typed configuration.

use std::net::SocketAddr;

use serde::Deserialize;

/// Settings of the relational API. Every field has a default so an empty
/// configuration runs on embedded SQLite; the binary fills these from an
/// optional TOML file and `SMARTSOLAR_*` environment variables.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// Where the HTTP API listens (`SMARTSOLAR_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// `sqlite://...` or `postgres://...` (`SMARTSOLAR_DATABASE_URL`).
    pub database_url: String,
    /// Database connections of the process (`SMARTSOLAR_DB_MAX_CONNECTIONS`). PostgreSQL: at
    /// most this many, half for single reads and half for transactions. SQLite: this many
    /// read connections of each kind, and the one writer.
    pub db_max_connections: u32,
    /// Ensured at start with SYSTEM permissions and GLOBAL visibility
    /// (`SMARTSOLAR_ADMIN_USER` / `SMARTSOLAR_ADMIN_PASSWORD`).
    pub admin_user: Option<String>,
    pub admin_password: Option<String>,
    /// Largest accepted request body in bytes; larger answers 413
    /// (`SMARTSOLAR_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Default and largest `results_per_page` of list endpoints
    /// (`SMARTSOLAR_DEFAULT_RESULTS_PER_PAGE`, `SMARTSOLAR_MAX_RESULTS_PER_PAGE`).
    pub default_results_per_page: u64,
    pub max_results_per_page: u64,
    /// A token expires this long after its last successful use
    /// (`SMARTSOLAR_TOKEN_TTL_SECS`, default 3 hours as in the spec).
    pub token_ttl_secs: i64,
    /// Failed logins for one username within `login_window_secs` before
    /// further attempts are refused with 429 (`SMARTSOLAR_LOGIN_MAX_FAILURES`,
    /// `SMARTSOLAR_LOGIN_WINDOW_SECS`).
    pub login_max_failures: u32,
    pub login_window_secs: i64,
    /// Software versions whose units wake up on an SMS: enabling or
    /// disabling such a unit also sends a WAKEUP SMS
    /// (`SMARTSOLAR_WAKEUP_ENABLED_SOFTWARE`, comma separated; default the
    /// spec's list).
    pub wakeup_enabled_software: Vec<String>,
    /// Seconds a WAKEUP SMS may stay undelivered before it is `Expired`
    /// (`SMARTSOLAR_WAKEUP_SMS_TIMEOUT_SECS`, spec: 3600).
    pub wakeup_sms_timeout_secs: i64,
    /// Where SMS are sent: an `http(s)://` URL posts each SMS there as JSON
    /// (`SMARTSOLAR_SMS_HTTP_URL`). Unset: no SMS goes out, and each is
    /// recorded `NotSent` with the reason. See `actions::sms`.
    pub sms_http_url: Option<String>,
    /// Sent as `Authorization: Bearer <token>` to the SMS HTTP provider
    /// (`SMARTSOLAR_SMS_HTTP_TOKEN`).
    pub sms_http_token: Option<String>,
    /// A CSV of cells and their positions (`SMARTSOLAR_CELL_LOCATOR_CSV`):
    /// OpenCellID's export columns (`mcc,net,area,cell,lon,lat,range`, or
    /// `mnc,lac,cid`), read at start. Locates units whose cell reports carry
    /// no coordinates. See `rtc::locator`.
    pub cell_locator_csv: Option<String>,
    /// An OpenCellID-compatible cell lookup (`SMARTSOLAR_CELL_LOCATOR_URL`,
    /// e.g. `https://opencellid.org/cell/get`), asked for cells the CSV does
    /// not have, with `key=` [`Self::cell_locator_token`].
    pub cell_locator_url: Option<String>,
    /// The API key of the cell lookup (`SMARTSOLAR_CELL_LOCATOR_TOKEN`).
    pub cell_locator_token: Option<String>,
    /// The first part of every new product serial number, before
    /// `-<number>-<check>` (`SMARTSOLAR_SERIAL_PREFIX`).
    pub serial_prefix: String,
    /// Default page size of `/v1/products/locations` (spec: 1000)
    /// (`SMARTSOLAR_LOCATIONS_PER_PAGE`).
    pub locations_per_page: u64,
    /// Largest page of the bulk endpoints `/v1/products/locations` and
    /// `/v1/current_enable_status` (`SMARTSOLAR_BULK_MAX_RESULTS_PER_PAGE`).
    pub bulk_max_results_per_page: u64,
    /// Encrypts subscribers' webhook secrets at rest
    /// (`SMARTSOLAR_WEBHOOK_SECRET_KEY`): any string, ideally 32 random
    /// bytes in base64; the AES-256 key is its SHA-256. Unset: a
    /// development key derived from a fixed, public label is used and a
    /// warning is logged. Never logged itself.
    pub webhook_secret_key: Option<Secret>,
    /// Timeout of one webhook POST, connection included
    /// (`SMARTSOLAR_WEBHOOK_TIMEOUT_MS`).
    pub webhook_timeout_ms: u64,
    /// Attempts per delivery before it is marked `failed`
    /// (`SMARTSOLAR_WEBHOOK_MAX_ATTEMPTS`).
    pub webhook_max_attempts: u32,
    /// Retry delay after the first failure, doubled per further failure up
    /// to the maximum, with jitter (`SMARTSOLAR_WEBHOOK_BACKOFF_BASE_MS`,
    /// `SMARTSOLAR_WEBHOOK_BACKOFF_MAX_MS`).
    pub webhook_backoff_base_ms: u64,
    pub webhook_backoff_max_ms: u64,
    /// How often an idle delivery worker looks for work
    /// (`SMARTSOLAR_WEBHOOK_POLL_INTERVAL_MS`).
    pub webhook_poll_interval_ms: u64,
    /// Deliveries one worker sends at once (at most one per subscriber).
    pub webhook_batch_size: u32,
    /// Address ranges (CIDR) subscriber URLs may not point at, checked on
    /// subscribe and again on every connection
    /// (`SMARTSOLAR_WEBHOOK_DENY_CIDRS`, comma-separated). The default
    /// denies loopback, private, link-local, shared and unspecified ranges,
    /// so an ENTITY ADMIN cannot make the server call its own local
    /// services; a deployment (or a test) with a local receiver allows it by
    /// setting the list without `127.0.0.0/8,::1/128`.
    pub webhook_deny_cidrs: Vec<String>,
    /// The operator console's map tiles: a URL template with `{z}`, `{x}`
    /// and `{y}` (and optionally `{s}`), e.g. a local tile server's
    /// `http://tiles.internal/{z}/{x}/{y}.png` (`SMARTSOLAR_CONSOLE_TILE_URL`).
    /// Unset: the console plots the units' coordinates without a map.
    pub console_tile_url: Option<String>,
    /// The attribution the tile server's licence asks for
    /// (`SMARTSOLAR_CONSOLE_TILE_ATTRIBUTION`).
    pub console_tile_attribution: Option<String>,
}

/// A configuration value that must never be printed: `Debug` shows `***`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

/// The ranges of [`default_webhook_deny_cidrs`] that are this host itself.
pub const LOOPBACK_CIDRS: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// The default deny list without loopback: for a receiver on this host
/// (tests, a local relay). Set explicitly; never the default.
pub fn webhook_deny_cidrs_allowing_loopback() -> Vec<String> {
    let mut cidrs = default_webhook_deny_cidrs();
    cidrs.retain(|c| !LOOPBACK_CIDRS.contains(&c.as_str()));
    cidrs
}

/// The default of `webhook_deny_cidrs`.
pub fn default_webhook_deny_cidrs() -> Vec<String> {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "127.0.0.0/8",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    ]
    .map(String::from)
    .to_vec()
}

/// The spec's "Current WAKEUP ENABLED software".
pub const WAKEUP_ENABLED_SOFTWARE: [&str; 14] = [
    "2.15",
    "2.16",
    "3.2",
    "3.3",
    "3.4",
    "3.5",
    "3.6",
    "3.6a",
    "hub-stc-1",
    "hub-stc-2",
    "hub-stc-3",
    "hub-stc-4",
    "hub-stc-5",
    "hub-stc-6",
];

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://data/smartsolar.db".into(),
            db_max_connections: 16,
            admin_user: None,
            admin_password: None,
            max_body_bytes: 1024 * 1024,
            default_results_per_page: 10,
            max_results_per_page: 100,
            token_ttl_secs: 3 * 3600,
            login_max_failures: 5,
            login_window_secs: 900,
            wakeup_enabled_software: WAKEUP_ENABLED_SOFTWARE.map(String::from).to_vec(),
            wakeup_sms_timeout_secs: 3600,
            sms_http_url: None,
            sms_http_token: None,
            cell_locator_csv: None,
            cell_locator_url: None,
            cell_locator_token: None,
            serial_prefix: "HB000501".into(),
            locations_per_page: 1000,
            bulk_max_results_per_page: 100_000,
            webhook_secret_key: None,
            webhook_timeout_ms: 10_000,
            webhook_max_attempts: 15,
            webhook_backoff_base_ms: 1_000,
            webhook_backoff_max_ms: 3_600_000,
            webhook_poll_interval_ms: 500,
            webhook_batch_size: 32,
            webhook_deny_cidrs: default_webhook_deny_cidrs(),
            console_tile_url: None,
            console_tile_attribution: None,
        }
    }
}

/// The alert analysis engine (`[alerts]` in the file; see `alerts`).
/// Thresholds are here, not in the rules, so operators tune them without a
/// release.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Whether ingest processes (and `serve`) run the engine
    /// (`SMARTSOLAR_ALERTS_ENABLED`).
    pub enabled: bool,
    /// Seconds between the starts of two passes (`SMARTSOLAR_ALERTS_PASS_INTERVAL_SECS`).
    /// Each alert type is still analysed only at its own `analysis_frequency`.
    pub pass_interval_secs: u64,
    /// IMEI hash buckets the work is split into (`SMARTSOLAR_ALERTS_BUCKETS`). Every
    /// engine sharing a database must use the same number.
    pub buckets: u32,
    /// How long a bucket lease lasts without renewal (`SMARTSOLAR_ALERTS_LEASE_SECS`);
    /// longer than a pass, so a live engine keeps its buckets.
    pub lease_secs: u64,
    /// The rules' thresholds (`[alerts.thresholds]`).
    pub thresholds: AlertThresholds,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            pass_interval_secs: 60,
            buckets: 64,
            lease_secs: 300,
            thresholds: AlertThresholds::default(),
        }
    }
}

/// The largest accepted `*_secs` alert setting: ten years. Far beyond any
/// sensible interval, and far inside what `chrono::Duration::seconds`
/// accepts (it panics beyond `i64::MAX` milliseconds).
pub const MAX_ALERT_SECS: i64 = 10 * 366 * 24 * 3600;

impl AlertsConfig {
    /// Checks the settings the engine turns into durations; the error names
    /// the setting.
    pub fn validate(&self) -> Result<(), String> {
        let th = &self.thresholds;
        let unsigned = [
            ("alerts.pass_interval_secs", self.pass_interval_secs),
            ("alerts.lease_secs", self.lease_secs),
        ];
        let signed = [
            (
                "alerts.thresholds.telemetry_window_secs",
                th.telemetry_window_secs,
            ),
            (
                "alerts.thresholds.no_connection_secs",
                th.no_connection_secs,
            ),
            (
                "alerts.thresholds.credit_expiring_within_secs",
                th.credit_expiring_within_secs,
            ),
            (
                "alerts.thresholds.dead_letter_window_secs",
                th.dead_letter_window_secs,
            ),
            (
                "alerts.thresholds.failed_mt_window_secs",
                th.failed_mt_window_secs,
            ),
        ];
        let values = unsigned
            .into_iter()
            .map(|(name, v)| (name, i64::try_from(v).unwrap_or(i64::MAX)))
            .chain(signed);
        for (name, v) in values {
            if !(0..=MAX_ALERT_SECS).contains(&v) {
                return Err(format!(
                    "{name} = {v} is out of range (0 to {MAX_ALERT_SECS} seconds)"
                ));
            }
        }
        // A pass interval of 0 runs a pass every second.
        if self.lease_secs <= self.pass_interval_secs.max(1) {
            return Err(format!(
                "alerts.lease_secs = {} must exceed alerts.pass_interval_secs = {}, \
                 or a live engine loses its buckets between passes",
                self.lease_secs, self.pass_interval_secs
            ));
        }
        Ok(())
    }
}

/// What each alert rule compares against (see `alerts::rules`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertThresholds {
    /// Telemetry window of the battery, temperature and tamper rules, in seconds.
    pub telemetry_window_secs: i64,
    /// Fewer samples than this in the window: the battery and temperature
    /// rules do not decide (no raise, no clear).
    pub min_samples: u32,
    /// Low battery: mean `state_of_charge_percent` over the window below this…
    pub low_state_of_charge_percent: f64,
    /// …or mean `voltage` below this (volts).
    pub low_battery_voltage: f64,
    /// Over-temperature: at least `over_temperature_samples` samples of
    /// `temperature` above this (°C) in the window.
    pub over_temperature_celsius: f64,
    pub over_temperature_samples: u32,
    /// No connection: nothing heard from the unit for longer than this, in seconds.
    pub no_connection_secs: i64,
    /// DCM credit expiring: `expected_expiry` within this many seconds.
    pub credit_expiring_within_secs: i64,
    /// Repeated dead letters: at least this many in `dead_letter_window_secs`.
    pub dead_letters: u32,
    pub dead_letter_window_secs: i64,
    /// Failed MT deliveries: at least this many in `failed_mt_window_secs`.
    pub failed_mts: u32,
    pub failed_mt_window_secs: i64,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        Self {
            telemetry_window_secs: 24 * 3600,
            min_samples: 12,
            low_state_of_charge_percent: 20.0,
            low_battery_voltage: 11.5,
            over_temperature_celsius: 60.0,
            over_temperature_samples: 3,
            no_connection_secs: 72 * 3600,
            credit_expiring_within_secs: 24 * 3600,
            dead_letters: 3,
            dead_letter_window_secs: 24 * 3600,
            failed_mts: 3,
            failed_mt_window_secs: 24 * 3600,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_alert_settings_are_valid() {
        assert_eq!(AlertsConfig::default().validate(), Ok(()));
    }

    #[test]
    fn bad_alert_settings_name_the_setting() {
        let too_long = MAX_ALERT_SECS + 1;
        type Set = fn(&mut AlertsConfig, i64);
        let cases: [(&str, Set); 7] = [
            ("alerts.pass_interval_secs", |c, v| {
                c.pass_interval_secs = v as u64;
            }),
            ("alerts.lease_secs", |c, v| c.lease_secs = v as u64),
            ("alerts.thresholds.telemetry_window_secs", |c, v| {
                c.thresholds.telemetry_window_secs = v;
            }),
            ("alerts.thresholds.no_connection_secs", |c, v| {
                c.thresholds.no_connection_secs = v;
            }),
            ("alerts.thresholds.credit_expiring_within_secs", |c, v| {
                c.thresholds.credit_expiring_within_secs = v;
            }),
            ("alerts.thresholds.dead_letter_window_secs", |c, v| {
                c.thresholds.dead_letter_window_secs = v;
            }),
            ("alerts.thresholds.failed_mt_window_secs", |c, v| {
                c.thresholds.failed_mt_window_secs = v;
            }),
        ];
        for (name, set) in cases {
            let mut c = AlertsConfig::default();
            set(&mut c, too_long);
            let err = c.validate().unwrap_err();
            assert!(err.starts_with(name), "{name}: {err}");
        }
        // Beyond i64 (a negative duration once cast).
        let c = AlertsConfig {
            lease_secs: u64::MAX,
            ..AlertsConfig::default()
        };
        assert!(c.validate().unwrap_err().starts_with("alerts.lease_secs"));
        // Negative windows and thresholds.
        let mut c = AlertsConfig::default();
        c.thresholds.no_connection_secs = -1;
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("alerts.thresholds.no_connection_secs"));
        // A lease no longer than the pass interval.
        for lease_secs in [60, 30] {
            let c = AlertsConfig {
                lease_secs,
                ..AlertsConfig::default()
            };
            assert!(c.validate().unwrap_err().starts_with("alerts.lease_secs"));
        }
    }
}
