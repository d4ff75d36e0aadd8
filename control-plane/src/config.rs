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
    /// Connections in the database pool (`SMARTSOLAR_DB_MAX_CONNECTIONS`).
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
}

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
        }
    }
}
