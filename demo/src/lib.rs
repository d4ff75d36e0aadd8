//! The demo fleet (`smartsolar demo`): provisions units through the HTTP API as a factory
//! would, then runs them as simulated units over QUIC and TCP against a running `serve`,
//! so a fresh install shows units connecting, telemetry charting, payments reaching units
//! and alerts firing without an operator writing a line.
//!
//! - [`model`]: how a unit behaves (solar day, loads, battery, credit, misbehaviour), no I/O;
//! - `unit`: one unit's connection, reports and answers to MT commands (built on `sim`);
//! - this file: configuration, provisioning through the API, starting the units.

pub mod model;
mod unit;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{json, Value as Json};
use tokio_util::sync::CancellationToken;

use model::{Model, Profile};
use unit::{Transport, UnitSpec};

/// What can stop the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The API could not be reached.
    #[error("calling {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The API refused a request.
    #[error("{what}: HTTP {status}: {body}")]
    Api {
        what: String,
        status: u16,
        body: String,
    },
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The simulator could not start (QUIC endpoint).
    #[error("simulator: {0}")]
    Sim(#[from] sim::SimError),
}

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The API's base URL, e.g. `http://127.0.0.1:8080`.
    pub api: String,
    /// A user that may create products (FACTORY or SYSTEM) and change their state.
    pub username: String,
    pub password: String,
    /// Units in the fleet.
    pub units: usize,
    /// The gateway's framed TCP address (`None`: no TCP units).
    pub tcp: Option<SocketAddr>,
    /// Whether the TCP listener speaks TLS (the gateway's default); the units then trust
    /// `quic_cert` on TCP too.
    pub tcp_tls: bool,
    /// The gateway's QUIC address (`None`: no QUIC units).
    pub quic: Option<SocketAddr>,
    /// The gateway's certificate (PEM), which QUIC units, and TCP units over TLS, trust.
    pub quic_cert: Option<PathBuf>,
    /// Between two telemetry reports of a unit.
    pub report_every: Duration,
    /// Simulated time per real time (144: a day every ten minutes).
    pub time_scale: f64,
    /// The first unit's number; units are `3599000` followed by eight digits.
    pub first_unit: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            api: "http://127.0.0.1:8080".into(),
            username: String::new(),
            password: String::new(),
            units: 200,
            tcp: None,
            tcp_tls: true,
            quic: None,
            quic_cert: None,
            report_every: Duration::from_secs(10),
            time_scale: 144.0,
            first_unit: 0,
        }
    }
}

/// The IMEI of demo unit `n` (15 digits; the `3599000` prefix keeps demo units recognisable).
pub fn imei(n: u64) -> String {
    format!("3599000{:08}", n % 100_000_000)
}

/// The demo unit's device key: derived from its IMEI, so running the demo again against the
/// same database finds the units it provisioned before. A factory draws real keys at random.
pub fn device_key(imei: &str) -> String {
    // splitmix64 over the IMEI's digits: well spread, and nothing to keep secret in a demo.
    let mut x: u64 = imei.parse().unwrap_or(0) ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    format!("{:016x}{:08x}", next(), next() >> 32)
}

/// Where demo unit `n` is installed: scattered over western Kenya around Kisumu, one of the
/// regions pay-as-you-go solar serves (deterministic, like the keys).
pub fn location(n: u64) -> (f64, f64) {
    let spread = |salt: u64| {
        let h = device_key(&imei(n.wrapping_add(salt)));
        u64::from_str_radix(&h[..8], 16).unwrap_or(0) as f64 / f64::from(u32::MAX)
    };
    // Five decimals (about a metre): what a GPS fix gives, and short enough for the
    // 12-character `connection.latitude`.
    let round = |v: f64| (v * 1e5).round() / 1e5;
    (
        round(-0.1 + 1.2 * (spread(0) - 0.5)),
        round(34.75 + 1.6 * (spread(1) - 0.5)),
    )
}

/// Whether the `index`th unit is enabled by the demo: all but one in ten (the last of each
/// ten, a well-behaved unit), which wait for an operator to enable them.
pub const fn enabled_at_start(index: usize) -> bool {
    index % 10 != 9
}

/// `state_type_id`s (the reference data): a new unit is STORED; the demo ships and activates it.
const SHIPPED: i64 = 3;
const ACTIVATED: i64 = 5;

/// Requests in flight while provisioning.
const PROVISIONING_CONCURRENCY: usize = 8;

/// A logged-in API client.
struct Api {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Api {
    async fn login(base: &str, username: &str, password: &str) -> Result<Self, DemoError> {
        let http = reqwest::Client::new();
        let url = format!("{base}/v1/auth/login");
        let r = http
            .post(&url)
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .map_err(|source| DemoError::Http { url, source })?;
        let body = Self::check("logging in", r).await?;
        let token = body["message"]["login_successful"]["API_token"]
            .as_str()
            .ok_or_else(|| DemoError::Api {
                what: "logging in".into(),
                status: 200,
                body: format!("no API_token in {body}"),
            })?;
        Ok(Self {
            http,
            base: base.to_string(),
            auth: format!("Token token={token}"),
        })
    }

    async fn check(what: &str, r: reqwest::Response) -> Result<Json, DemoError> {
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(serde_json::from_str(&text).unwrap_or(Json::Null))
        } else {
            Err(DemoError::Api {
                what: what.to_string(),
                status,
                body: text,
            })
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Json>,
    ) -> Result<Json, DemoError> {
        let url = format!("{}/v1{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("Authorization", &self.auth);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .map_err(|source| DemoError::Http { url, source })?;
        Self::check(&format!("{method} /v1{path}"), r).await
    }

    /// Creates the unit as the factory would; `false` when it already exists (an earlier
    /// demo run).
    async fn create_unit(&self, imei: &str, n: u64) -> Result<bool, DemoError> {
        let exists = self
            .call(reqwest::Method::GET, &format!("/products/{imei}"), None)
            .await;
        match exists {
            Ok(_) => return Ok(false),
            Err(DemoError::Api { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
        let (lat, lon) = location(n);
        self.call(
            reqwest::Method::POST,
            "/products/create_hub2",
            Some(json!({
                "imei": imei,
                "imsi": format!("6390200{:08}", n % 100_000_000),
                "device_key": device_key(imei),
                "product": {
                    "assembler": "demo",
                    "rtc_enabled_flag": true,
                    "gps_lat": lat,
                    "gps_lon": lon,
                },
            })),
        )
        .await?;
        Ok(true)
    }

    /// Takes a new unit out of the warehouse into the field (SHIPPED, then ACTIVATED),
    /// turns on credit management, arms its tamper switch and enables it unless `enable` is
    /// false (units left for the operator to enable in the quick tour).
    async fn activate(&self, imei: &str, enable: bool) -> Result<(), DemoError> {
        self.call(
            reqwest::Method::PUT,
            &format!("/products/{imei}/set_dcm_enabled_flag"),
            Some(json!({ "enabled": true })),
        )
        .await?;
        for state in [SHIPPED, ACTIVATED] {
            self.call(
                reqwest::Method::PUT,
                &format!("/products/{imei}/change_state"),
                Some(json!({ "new_state": state })),
            )
            .await?;
        }
        let actions: &[&str] = if enable {
            &["enable_tamper_switch", "enable"]
        } else {
            &["enable_tamper_switch"]
        };
        for action in actions {
            self.call(
                reqwest::Method::PUT,
                &format!("/products/{imei}/{action}"),
                None,
            )
            .await?;
        }
        Ok(())
    }
}

/// Reads the first certificate of a PEM file (DER).
fn read_certificate(path: &std::path::Path) -> Result<Vec<u8>, DemoError> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_file(path)
        .map(|c| c.as_ref().to_vec())
        .map_err(|e| {
            DemoError::Config(format!(
                "reading the gateway certificate {}: {e}",
                path.display()
            ))
        })
}

/// The transports the units use in turn: QUIC and TCP when both are there.
fn transports(config: &DemoConfig) -> Result<Vec<Transport>, DemoError> {
    let mut out = Vec::new();
    let cert = match &config.quic_cert {
        Some(path) if path.exists() => Some(read_certificate(path)?),
        _ => None,
    };
    match (config.quic, &config.quic_cert) {
        (Some(addr), Some(_)) if cert.is_some() => {
            let der = cert.as_deref().unwrap_or_default();
            let endpoint = sim::quic_endpoint(der, Duration::from_secs(10))?;
            out.push(Transport::Quic(endpoint, addr));
        }
        (Some(_), Some(cert)) => tracing::warn!(
            cert = %cert.display(),
            "no gateway certificate there: the demo units use TCP only"
        ),
        (Some(_), None) => {
            tracing::warn!("no gateway certificate given: the demo units use TCP only");
        }
        (None, _) => {}
    }
    match (config.tcp, config.tcp_tls, cert) {
        (Some(addr), false, _) => out.push(Transport::Tcp(addr)),
        (Some(addr), true, Some(der)) => out.push(Transport::TcpTls(addr, der)),
        (Some(_), true, None) => {
            tracing::warn!(
                "the TCP listener speaks TLS and no gateway certificate was found: no TCP units"
            );
        }
        (None, ..) => {}
    }
    if out.is_empty() {
        return Err(DemoError::Config(
            "no gateway transport to connect to: set a TCP or QUIC address".into(),
        ));
    }
    Ok(out)
}

/// Provisions the fleet, starts its units and runs them until `stop`.
pub async fn run(config: DemoConfig, stop: CancellationToken) -> Result<(), DemoError> {
    if config.units == 0 {
        return Err(DemoError::Config("--units must be at least 1".into()));
    }
    if !config.time_scale.is_finite() || config.time_scale <= 0.0 {
        return Err(DemoError::Config(format!(
            "--time-scale must be a positive number, got {}",
            config.time_scale
        )));
    }
    if config.report_every.is_zero() {
        return Err(DemoError::Config("--report-secs must be at least 1".into()));
    }
    let transports = transports(&config)?;
    let api = Api::login(&config.api, &config.username, &config.password).await?;
    let numbers: Vec<u64> = (0..config.units as u64)
        .map(|i| config.first_unit + i)
        .collect();

    // 1. The factory: every unit created (or found from an earlier run).
    let created: Vec<Result<(u64, bool), DemoError>> =
        futures_util::stream::iter(numbers.iter().map(|&n| {
            let api = &api;
            async move { api.create_unit(&imei(n), n).await.map(|new| (n, new)) }
        }))
        .buffer_unordered(PROVISIONING_CONCURRENCY)
        .collect()
        .await;
    let created: Vec<(u64, bool)> = created.into_iter().collect::<Result<_, _>>()?;
    let fresh: Vec<u64> = created.iter().filter(|c| c.1).map(|c| c.0).collect();
    tracing::info!(
        units = config.units,
        new = fresh.len(),
        "demo units provisioned"
    );

    // 2. The units come alive and report.
    let sim_hours = config.report_every.as_secs_f64() * config.time_scale / 3600.0;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, &n) in numbers.iter().enumerate() {
        let imei = imei(n);
        let spec = UnitSpec {
            device_key: device_key(&imei),
            imei,
            transport: transports[i % transports.len()].clone(),
            report_every: config.report_every,
            sim_hours_per_report: sim_hours,
            location: location(n),
        };
        // Spread over the day, so the map shows day and night at once.
        let mut model = Model::new(Profile::of(i), 6.0 + (i % 16) as f64, n);
        model.enabled = enabled_at_start(i);
        tasks.spawn(unit::run(spec, model, stop.child_token()));
    }

    // 3. Out of the factory into the field, once the first reports are in, so the first
    // alert analysis of each unit has something to read.
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(Duration::from_secs(3)) => {}
    }
    let first = config.first_unit;
    let activated: Vec<Result<(), DemoError>> =
        futures_util::stream::iter(fresh.iter().map(|&n| {
            let api = &api;
            async move {
                api.activate(&imei(n), enabled_at_start((n - first) as usize))
                    .await
            }
        }))
        .buffer_unordered(PROVISIONING_CONCURRENCY)
        .collect()
        .await;
    activated.into_iter().collect::<Result<Vec<()>, _>>()?;
    tracing::info!(
        units = config.units,
        transports = ?transports.iter().map(Transport::name).collect::<Vec<_>>(),
        console = %format!("{}/console", config.api),
        "demo fleet running"
    );
    stop.cancelled().await;
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imeis_are_fifteen_digits_and_keys_twenty_four_hex_digits() {
        for n in [0, 7, 99_999_999] {
            let i = imei(n);
            assert_eq!(i.len(), 15, "{i}");
            assert!(i.bytes().all(|b| b.is_ascii_digit()));
            let k = device_key(&i);
            assert_eq!(k.len(), 24, "{k}");
            assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(device_key(&imei(1)), device_key(&imei(2)));
        for n in 0..200 {
            let (lat, lon) = location(n);
            assert!((-0.7..0.5).contains(&lat) && (33.9..35.6).contains(&lon));
            assert!(lat.to_string().len() <= 12 && lon.to_string().len() <= 12);
        }
        assert_eq!(device_key(&imei(1)), device_key(&imei(1)));
    }
}
