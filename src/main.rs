//! `smartsolar`: one binary for every SMARTSolar service. Parses the command
//! line and the configuration, then hands over to the crate that does the work.

mod admin;
mod cli;
mod config;
mod runtimes;
mod services;

use clap::Parser;

/// mimalloc instead of glibc's malloc: see the note in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let args = cli::Args::parse();
    let config = config::Config::load(args.config.as_deref())?;
    cli::run(args.command, config).await
}
