//! The child gateway (`load-test serve`) as `run` and `replay` drive it, and the helpers both
//! modes share: QUIC endpoints, the RSS sampler, the progress bar.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use load_test::{device_key, ensure_loopback, imei, rss_kib, ServeStats};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::serve::BusArgs;
use crate::track;
use crate::unit::Target;

pub(crate) struct Child {
    pub(crate) proc: tokio::process::Child,
    pub(crate) stdin: tokio::process::ChildStdin,
    pub(crate) lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pub(crate) pid: u32,
    pub(crate) tcp: SocketAddr,
    pub(crate) quic: SocketAddr,
    pub(crate) http: Option<SocketAddr>,
    pub(crate) cert: Vec<u8>,
}

impl Child {
    pub(crate) async fn spawn(
        units: u32,
        http: bool,
        capture: Option<&PathBuf>,
        bus: &BusArgs,
    ) -> anyhow::Result<Self> {
        // `LOAD_TEST_GATEWAY_WRAPPER="heaptrack -o /tmp/gw"` runs the gateway under a profiler.
        let wrapper = std::env::var("LOAD_TEST_GATEWAY_WRAPPER").unwrap_or_default();
        let mut wrapper = wrapper.split_whitespace();
        let mut cmd = match wrapper.next() {
            Some(program) => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(wrapper).arg(std::env::current_exe()?);
                cmd
            }
            None => tokio::process::Command::new(std::env::current_exe()?),
        };
        cmd.args(["serve", "--units", &units.to_string()]);
        if http {
            cmd.arg("--http");
        }
        if let Some(c) = capture {
            cmd.arg("--capture").arg(c);
        }
        cmd.args(["--bus", bus.bus.name()]);
        if let Some(d) = &bus.data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut proc = cmd
            .spawn()
            .with_context(|| format!("starting the gateway: {:?}", cmd.as_std()))?;
        let stdin = proc.stdin.take().context("stdin")?;
        let mut lines = BufReader::new(proc.stdout.take().context("stdout")?).lines();
        // The first JSON line (a wrapper may print its own lines first).
        let ready: serde_json::Value = loop {
            let line = lines.next_line().await?.context("serve did not start")?;
            if line.starts_with('{') {
                break serde_json::from_str(&line)?;
            }
            eprintln!("{line}");
        };
        let addr = |k: &str| -> anyhow::Result<Option<SocketAddr>> {
            let a: Option<SocketAddr> = serde_json::from_value(ready[k].clone())?;
            a.map(ensure_loopback).transpose()
        };
        Ok(Self {
            tcp: addr("tcp")?.context("tcp listener")?,
            quic: addr("quic")?.context("quic listener")?,
            http: addr("http")?,
            cert: hex::decode(ready["cert"].as_str().context("cert")?)?,
            pid: ready["pid"].as_u64().context("pid")? as u32,
            proc,
            stdin,
            lines,
        })
    }

    pub(crate) async fn ask(&mut self, cmd: &str) -> anyhow::Result<serde_json::Value> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let line = self.lines.next_line().await?.context("serve exited")?;
        Ok(serde_json::from_str(&line)?)
    }

    pub(crate) async fn stats(&mut self) -> anyhow::Result<ServeStats> {
        Ok(serde_json::from_value(self.ask("stats").await?)?)
    }

    /// Closes stdin (the gateway drains and exits) and waits.
    pub(crate) async fn stop(self) {
        let Self {
            mut proc, stdin, ..
        } = self;
        drop(stdin);
        let _ = tokio::time::timeout(Duration::from_secs(30), proc.wait()).await;
    }

    /// Where the child gateway listens, for `units` units of its directory.
    pub(crate) fn target(&self, quic_units: u32, units: u32) -> anyhow::Result<Target> {
        Ok(Target {
            tcp: self.tcp,
            quic: self.quic,
            http: self.http,
            endpoints: quic_endpoints(&self.cert, quic_units)?,
            ids: (0..units)
                .map(|i| track::Identity {
                    imei: imei(i),
                    key: device_key(i),
                })
                .collect(),
            tls: None,
            http_tls: false,
        })
    }
}

/// One QUIC client endpoint (UDP socket) per 2,000 units, trusting `cert`.
pub(crate) fn quic_endpoints(cert: &[u8], quic_units: u32) -> anyhow::Result<Vec<quinn::Endpoint>> {
    Ok((0..quic_units.div_ceil(2000).max(1))
        .map(|_| sim::quic_endpoint(cert, Duration::from_secs(20)))
        .collect::<Result<_, _>>()?)
}

/// Samples the gateway's RSS every 500 ms; keeps the peak.
pub(crate) fn rss_sampler(pid: u32) -> Arc<AtomicU64> {
    let peak = Arc::new(AtomicU64::new(0));
    let p = Arc::clone(&peak);
    tokio::spawn(async move {
        while let Some(kib) = rss_kib(pid) {
            p.fetch_max(kib, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    peak
}

pub(crate) fn progress(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix:>10} {wide_msg}")
            .expect("valid template"),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}
