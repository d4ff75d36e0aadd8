//! Runtimes of their own for the services that share a process with the gateway.
//!
//! Tokio shares its worker threads between tasks, not between services: in `serve` the
//! gateway has a task per unit connection, ingest a handful. During an MO burst the
//! gateway's tasks took almost every poll, and ingest stored 0–61 MO/s while the gateway
//! acknowledged tens of thousands (docs/performance.md, issue 21). On threads of their own,
//! ingest and the API are scheduled by the kernel as threads among threads, so each gets
//! its share of the CPU whatever the number of connections.

use std::future::Future;

use anyhow::{Context, Result};
use serde::Deserialize;
use tokio::task::JoinSet;

/// `[runtime]`: worker threads of the services that get their own runtime when they share a
/// process with the gateway (`serve`). 0: they run on the process's main runtime.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RuntimeSettings {
    /// Ingest engines and alert analysis.
    pub(crate) ingest_threads: usize,
    /// The HTTP API (and so MT commands sent by operators), webhook delivery, maintenance.
    pub(crate) api_threads: usize,
}

impl Default for RuntimeSettings {
    /// As many threads as cores for each: a service alone on the machine (the API while units
    /// are quiet, ingest draining a backlog) can use all of it, and under full load each of
    /// gateway, ingest and API gets about a third.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self {
            ingest_threads: cores,
            api_threads: cores,
        }
    }
}

/// The most worker threads a service's runtime may have.
const MAX_THREADS: usize = 1024;

/// Where a service's tasks run: the main runtime, or a runtime of its own.
pub(crate) struct ServiceRuntime {
    /// `None`: the main runtime.
    own: Option<tokio::runtime::Runtime>,
}

impl ServiceRuntime {
    /// The main runtime.
    pub(crate) fn main() -> Self {
        Self { own: None }
    }

    /// A runtime of `threads` worker threads named `smartsolar-<name>`; the main one for 0.
    pub(crate) fn dedicated(name: &str, threads: usize) -> Result<Self> {
        if threads == 0 {
            return Ok(Self::main());
        }
        // A mistyped count would otherwise fail as "Resource temporarily unavailable" from
        // thread creation, or start tens of thousands of idle threads.
        if threads > MAX_THREADS {
            anyhow::bail!(
                "runtime.{name}_threads = {threads}: at most {MAX_THREADS} (0 runs it on the main runtime)"
            );
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(format!("smartsolar-{name}"))
            .enable_all()
            .build()
            .with_context(|| format!("starting the {name} runtime"))?;
        Ok(Self { own: Some(runtime) })
    }

    /// Runs `service` on this runtime; `tasks` (on the main runtime) learns how it ended.
    pub(crate) fn spawn<F>(&self, tasks: &mut JoinSet<Result<()>>, service: F)
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        match &self.own {
            None => {
                tasks.spawn(service);
            }
            Some(runtime) => {
                let handle = runtime.spawn(service);
                tasks.spawn(async move { handle.await.context("a service panicked")? });
            }
        }
    }

    /// Runs `work` on this runtime and waits for it: for what must be created there, such as
    /// a listening socket, whose readiness the runtime that created it drives.
    pub(crate) async fn run<F, T>(&self, work: F) -> Result<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        match &self.own {
            None => Ok(work.await),
            Some(runtime) => runtime.spawn(work).await.context("a service panicked"),
        }
    }
}

impl Drop for ServiceRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks stop, which is not allowed on an async
        // thread; by now every service on it has returned (`services::run` joined them).
        if let Some(runtime) = self.own.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// What a ticking service did while the main runtime's only thread was held for 300 ms
    /// (as a gateway poll that does not yield would hold it): its ticks then, and the name
    /// of the thread it ran on.
    fn ticks_while_main_is_busy(service: &ServiceRuntime) -> (u64, Option<String>) {
        let main = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("main runtime");
        main.block_on(async {
            let (ticks, stop) = (
                Arc::new(AtomicU64::new(0)),
                Arc::new(AtomicBool::new(false)),
            );
            let thread = Arc::new(Mutex::new(None));
            let mut tasks = JoinSet::new();
            let (t, s, th) = (ticks.clone(), stop.clone(), thread.clone());
            service.spawn(&mut tasks, async move {
                *th.lock().unwrap() = std::thread::current().name().map(str::to_owned);
                while !s.load(Ordering::Relaxed) {
                    t.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(())
            });
            // Started everywhere first.
            while ticks.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let before = ticks.load(Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(300));
            let during = ticks.load(Ordering::Relaxed) - before;
            stop.store(true, Ordering::Relaxed);
            while let Some(done) = tasks.join_next().await {
                done.expect("joined").expect("service ended well");
            }
            let name = thread.lock().unwrap().clone();
            (during, name)
        })
    }

    #[test]
    fn a_service_on_its_own_runtime_runs_while_the_main_one_is_busy() {
        let (during, thread) =
            ticks_while_main_is_busy(&ServiceRuntime::dedicated("test", 1).unwrap());
        assert!(
            during >= 10,
            "the dedicated service ticked {during} times in 300 ms"
        );
        assert_eq!(thread.as_deref(), Some("smartsolar-test"));
        // The same service on the main runtime: nothing while it is held. This is what ingest
        // suffered beside the gateway.
        let (during, _) = ticks_while_main_is_busy(&ServiceRuntime::main());
        assert_eq!(during, 0, "a service on the held main runtime cannot run");
        // 0 threads: the main runtime.
        let (during, _) = ticks_while_main_is_busy(&ServiceRuntime::dedicated("none", 0).unwrap());
        assert_eq!(during, 0);
    }

    #[test]
    fn an_absurd_thread_count_is_refused_by_name() {
        let e = ServiceRuntime::dedicated("ingest", 100_000)
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("runtime.ingest_threads = 100000"),
            "{e}"
        );
        assert!(ServiceRuntime::dedicated("ingest", MAX_THREADS).is_ok());
    }

    #[test]
    fn a_panic_on_a_dedicated_runtime_is_an_error_of_the_service() {
        let main = tokio::runtime::Runtime::new().unwrap();
        let service = ServiceRuntime::dedicated("test", 1).unwrap();
        main.block_on(async {
            let mut tasks = JoinSet::new();
            service.spawn(&mut tasks, async { panic!("boom") });
            let outcome = tasks
                .join_next()
                .await
                .expect("one task")
                .expect("wrapper joined");
            let e = outcome.expect_err("the panic is reported");
            assert!(format!("{e:#}").contains("panicked"), "{e:#}");
            let listener = service
                .run(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .await
                .unwrap()
                .unwrap();
            assert!(listener.local_addr().unwrap().port() > 0);
        });
    }
}
