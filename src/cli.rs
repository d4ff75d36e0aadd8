//! The subcommands, one function each.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use control_plane::schema::Backend;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::services::Roles;

/// SMARTSolar: relational API, RTC gateway and ingest.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Args {
    /// A TOML configuration file; `SMARTSOLAR_*` environment variables override it.
    #[arg(long, env = "SMARTSOLAR_CONFIG", global = true)]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run everything in one process on the configured (default: embedded) engines.
    Serve,
    /// Run only the relational API (and the webhook delivery worker).
    ControlPlane,
    /// Run only the unit gateway (QUIC, TCP, legacy HTTP).
    Gateway,
    /// Run only the ingest engine (bus to database and time-series store).
    Ingest,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API users.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Run a demo fleet against a running `serve` (same configuration): provision units
    /// through the API and run them as simulated units over QUIC and TCP until Ctrl-C.
    Demo {
        /// Units in the fleet.
        #[arg(long, default_value_t = 200)]
        units: usize,
        /// The API's base URL (default: the configured HTTP address).
        #[arg(long)]
        api: Option<String>,
        /// A user who may create products (default: SMARTSOLAR_ADMIN_USER).
        #[arg(long)]
        user: Option<String>,
        /// Its password (default: SMARTSOLAR_ADMIN_PASSWORD).
        #[arg(long, env = "SMARTSOLAR_DEMO_PASSWORD")]
        password: Option<String>,
        /// Seconds between two telemetry reports of a unit.
        #[arg(long, default_value_t = 10)]
        report_secs: u64,
        /// Simulated time per real time (144: a day every ten minutes).
        #[arg(long, default_value_t = 144.0)]
        time_scale: f64,
        /// The first unit's number (IMEIs 3599000 followed by eight digits).
        #[arg(long, default_value_t = 0)]
        first_unit: u64,
        /// The gateway's certificate (PEM) for QUIC units (default: the configured one, or
        /// the development certificate under the data directory).
        #[arg(long)]
        quic_cert: Option<PathBuf>,
    },
    /// Load the configuration (the file, then `SMARTSOLAR_*` variables) as every service
    /// does at start, and print where it listens and which engines it uses; an unknown key or
    /// a bad value fails here, before a deploy.
    CheckConfig,
    /// Print the DDL generated from the table catalogue.
    Schema {
        #[arg(long, value_parser = ["sqlite", "postgres"])]
        backend: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserAction {
    /// Create a user, or reset an existing user's password and permissions.
    Add {
        username: String,
        /// The password (or set SMARTSOLAR_NEW_USER_PASSWORD to keep it out of shell history).
        #[arg(long, env = "SMARTSOLAR_NEW_USER_PASSWORD")]
        password: String,
        #[arg(long, default_value = "OVERVIEW", value_parser = ["OVERVIEW", "TECHNICAL", "ADMIN", "FACTORY", "SYSTEM"])]
        permissions: String,
        #[arg(long, default_value = "GLOBAL", value_parser = ["GLOBAL", "ENTITY"])]
        visibility: String,
        #[arg(long)]
        entity_id: Option<i64>,
    },
}

pub(crate) async fn run(command: Command, config: Config) -> Result<()> {
    match command {
        Command::Serve => serve(config, Roles::ALL).await,
        Command::ControlPlane => serve(config, Roles::API).await,
        Command::Gateway => serve(config, Roles::GATEWAY).await,
        Command::Ingest => serve(config, Roles::INGEST).await,
        Command::Migrate => {
            control_plane::startup::open_database(&config.control_plane).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::User {
            action:
                UserAction::Add {
                    username,
                    password,
                    permissions,
                    visibility,
                    entity_id,
                },
        } => {
            let db = control_plane::startup::open_database(&config.control_plane).await?;
            control_plane::startup::ensure_user(
                &db,
                &username,
                &password,
                &permissions,
                &visibility,
                entity_id,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "user {username} saved with {permissions} permissions and {visibility} visibility"
            );
            Ok(())
        }
        Command::Demo {
            units,
            api,
            user,
            password,
            report_secs,
            time_scale,
            first_unit,
            quic_cert,
        } => {
            let cp = &config.control_plane;
            let (Some(username), Some(password)) = (
                user.or_else(|| cp.admin_user.clone()),
                password.or_else(|| cp.admin_password.clone()),
            ) else {
                bail!("give --user and --password, or set SMARTSOLAR_ADMIN_USER and SMARTSOLAR_ADMIN_PASSWORD as for serve")
            };
            let gw = &config.gateway;
            let demo = demo::DemoConfig {
                api: api.unwrap_or_else(|| format!("http://{}", loopback(cp.http_addr))),
                username,
                password,
                units,
                tcp: gw.tcp_listen.map(loopback),
                tcp_tls: gw.tcp_tls,
                quic: gw.quic_listen.map(loopback),
                quic_cert: quic_cert
                    .or_else(|| gw.tls_cert_path.clone())
                    .or_else(|| Some(gateway::generated_certificate_path(&config.data_dir))),
                report_every: std::time::Duration::from_secs(report_secs),
                time_scale,
                first_unit,
            };
            let stop = CancellationToken::new();
            let trigger = stop.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                trigger.cancel();
            });
            demo::run(demo, stop).await?;
            Ok(())
        }
        // `main` loaded the configuration before this: a problem has failed already.
        Command::CheckConfig => {
            print!("{}", essentials(&config));
            Ok(())
        }
        Command::Schema { backend } => {
            let backend = if backend == "postgres" {
                Backend::Postgres
            } else {
                Backend::Sqlite
            };
            print!(
                "{}",
                control_plane::schema::create_catalogue(
                    &control_plane::catalogue::Catalogue::builtin(),
                    backend
                )
            );
            Ok(())
        }
    }
}

async fn serve(mut config: Config, roles: Roles) -> Result<()> {
    if config.control_plane.webhook_secret_key.is_none() {
        // Subscriber keys are encrypted under it: generated once, kept in the data dir.
        let key = control_plane::webhooks::secrets::load_or_create_key(&config.data_dir)?;
        config.control_plane.webhook_secret_key = Some(key);
    }
    // Without a listener nobody would drain the histograms: no recorder.
    let metrics = match config.metrics_addr {
        Some(_) => Some(crate::admin::install_recorder()?),
        None => None,
    };
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        trigger.cancel();
    });
    crate::services::run(config, roles, metrics, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Ensures `SMARTSOLAR_ADMIN_USER` exists with SYSTEM permissions and GLOBAL
/// visibility, when configured.
pub(crate) async fn ensure_admin(db: &control_plane::db::Db, config: &Config) -> Result<()> {
    let cp = &config.control_plane;
    match (&cp.admin_user, &cp.admin_password) {
        (Some(user), Some(password)) => {
            control_plane::startup::ensure_user(db, user, password, "SYSTEM", "GLOBAL", None)
                .await
                .map_err(|e| anyhow::anyhow!("ensuring admin user: {e}"))?;
            tracing::info!(%user, "admin user ensured");
            Ok(())
        }
        (Some(_), None) | (None, Some(_)) => {
            bail!("set both SMARTSOLAR_ADMIN_USER and SMARTSOLAR_ADMIN_PASSWORD, or neither")
        }
        (None, None) => Ok(()),
    }
}

/// What `check-config` prints: listeners and engines, no secret.
fn essentials(config: &Config) -> String {
    let listener =
        |addr: Option<std::net::SocketAddr>| addr.map_or("off".into(), |a| a.to_string());
    let cp = &config.control_plane;
    let gw = &config.gateway;
    [
        ("control_plane.http_addr", cp.http_addr.to_string()),
        ("control_plane.database_url", redact(&cp.database_url)),
        ("data_dir", config.data_dir.display().to_string()),
        ("bus.kind", format!("{:?}", config.bus.kind).to_lowercase()),
        (
            "tsdb.kind",
            format!("{:?}", config.tsdb.kind).to_lowercase(),
        ),
        ("gateway.node_id", gw.node_id.clone()),
        ("gateway.quic_listen", listener(gw.quic_listen)),
        ("gateway.tcp_listen", listener(gw.tcp_listen)),
        ("gateway.http_listen", listener(gw.http_listen)),
        ("metrics_addr", listener(config.metrics_addr)),
    ]
    .iter()
    .map(|(key, value)| format!("{key} = {value}\n"))
    .collect()
}

/// Where to reach a listener on this machine: a wildcard listen address becomes loopback.
fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// The database URL without its password, for logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
