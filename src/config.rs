//! The one typed configuration: an optional TOML file, then `SMARTSOLAR_*`
//! environment variables on top. Every setting has a default, so no file
//! and no variables runs everything on embedded defaults.

use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result};
use control_plane::ControlPlaneConfig;
use serde::Deserialize;

/// Everything the `smartsolar` binary can be configured with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// The relational API (`[control_plane]` in the file).
    pub(crate) control_plane: ControlPlaneConfig,
    /// Where Prometheus metrics are served (`SMARTSOLAR_METRICS_ADDR`);
    /// unset: no metrics listener.
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
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
        Ok(config)
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
    fn bad_values_and_unknown_keys_are_errors() {
        let mut c = Config::default();
        let err = c
            .apply_env(|k| (k == "SMARTSOLAR_HTTP_ADDR").then(|| "nope".into()))
            .unwrap_err();
        assert!(err.to_string().contains("SMARTSOLAR_HTTP_ADDR"));
        assert!(toml::from_str::<Config>("[control_plane]\nhttp_adr = \"x\"\n").is_err());
    }
}
