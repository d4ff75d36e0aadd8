//! `load-test`: simulated units against a gateway, or captured traffic played back; reports
//! connections held, memory per idle connection, MO throughput, MT round-trip percentiles,
//! handshake and HTTP latency, errors, and writes a JSON summary. Loopback only; every run is
//! bounded (`--max-secs`) and stops by itself.
//!
//! ```text
//! load-test run --tcp 15000 --quic 35000 --http 100 --periodic-secs 30 --mo-secs 10 \
//!     --mt-rate 1000 --mt-secs 10 --storm-percent 20 --out summary.json
//! load-test run --tcp 200 --quic 50 --capture traffic.jsonl --mo-secs 0 --mt-secs 0
//! load-test replay traffic.jsonl --speed 10 --clones 20 --out replay.json
//! load-test run --api http://127.0.0.1:8080 --api-user … --gateway-tcp … --gateway-quic … \
//!     --ca-cert gateway-cert.pem --tcp 500 --quic 500 --http 0 --replay traffic.jsonl \
//!     --replay-speed 10 --replay-max-frames 100000 --out summary.json
//! ```
//! `run` and `replay` spawn `load-test serve` (the gateway; `--bus memory|disk`) as a child
//! process and talk to it over stdin/stdout. Framed units speak protocol version 2 unless
//! `--protocol 1`.
//!
//! # Layout
//! - `serve`: the gateway under test (`load-test serve`), driven over stdin/stdout.
//! - `child`: that gateway as a child process of `run` and `replay`, and what both share.
//! - `fleet`: the simulated units of `run` and their phases (connect, MO, storm, stop).
//! - `run`: `load-test run` against the child gateway; `target`: the same against a running
//!   deployment (`--api`).
//! - `replay`: `load-test replay`, a capture played back; `playback`: the capture as per-unit
//!   scripts and the playback clock, shared with target mode's replay phase (`--replay`).
//! - `unit`, `track`: one simulated unit's tasks, and what was sent, for verification.

mod child;
mod fleet;
mod playback;
mod replay;
mod run;
mod serve;
mod target;
mod track;
mod unit;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use replay::{replay, ReplayArgs};
use run::{run, RunArgs};
use serve::{serve, BusArgs};

/// Hard caps, so a typo cannot take the machine down.
const MAX_UNITS: u32 = 200_000;
const MAX_MT_RATE: u32 = 100_000;

#[derive(Parser)]
#[command(
    name = "load-test",
    about = "Load generator for the SMARTSolar RTC gateway (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a gateway (N known units, the bus of `--bus`) controlled over stdin/stdout.
    Serve {
        /// Units in the directory.
        #[arg(long)]
        units: u32,
        /// Enable the legacy HTTP listener.
        #[arg(long)]
        http: bool,
        /// Capture mode: write what units send to this file.
        #[arg(long)]
        capture: Option<PathBuf>,
        #[command(flatten)]
        bus: BusArgs,
    },
    /// Spawn `serve`, connect simulated units, run the phases, write a JSON summary.
    Run(Box<RunArgs>),
    /// Spawn `serve` and play a capture file back with many units cloned from it.
    Replay(ReplayArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Both sides hold one descriptor per TCP unit: raise the soft limit to the hard one.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < 65_536 => eprintln!("note: file descriptor limit is {n}"),
        Ok(_) => {}
        Err(e) => eprintln!("note: cannot raise the file descriptor limit: {e}"),
    }
    let max_secs = match &cli.cmd {
        Cmd::Serve { .. } => None,
        Cmd::Run(a) => Some(a.max_secs),
        Cmd::Replay(a) => Some(a.max_secs),
    };
    if let Some(secs) = max_secs {
        // Bounded in time whatever happens: the child `serve` stops when our stdin pipe closes.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            eprintln!("load-test: --max-secs {secs} reached, aborting");
            std::process::exit(3);
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Serve {
            units,
            http,
            capture,
            bus,
        } => rt.block_on(serve(units, http, capture, bus)),
        Cmd::Run(a) => rt.block_on(run(*a)),
        Cmd::Replay(a) => rt.block_on(replay(a)),
    }
}
