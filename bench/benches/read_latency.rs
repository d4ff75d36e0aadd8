//! Read latency under write load, on SQLite (issue 19).
//!
//! SQLite has one writer connection: every write transaction (ingest, alerts,
//! API writes) holds it until it commits. A read that runs through it waits for
//! every write queued before it. This bench serves the real API over a SQLite
//! file with 100 units made by `create_hub2`, and measures, with and without
//! write load:
//!
//! - **dashboard2**: `GET /v1/dashboard2` over real HTTP (it reads through a
//!   read-only transaction on a reader connection);
//! - **reader_tx** / **writer_tx**: the same statement (a page of products and
//!   their count) in `Db::begin_read` and in `Db::begin`, the path the fleet,
//!   dashboard and RTC reads took before: the comparison shows what the move
//!   to the reader pool removes.
//!
//! Write load: `SMARTSOLAR_BENCH_WRITERS` tasks (default 4), each looping over
//! a write transaction that updates a product and holds the writer for 2 ms
//! (an ingest batch's worth) before it commits.
//!
//! Run: `cargo bench -p smartsolar-bench --bench read_latency -- --warm-up-time 1 --measurement-time 5`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control_plane::app::AppState;
use control_plane::catalogue::{Column, ColumnType};
use control_plane::db::Db;
use control_plane::ControlPlaneConfig;
use criterion::{criterion_group, criterion_main, Criterion};
use sea_query::{Alias, Expr, Order, Query, SelectStatement};
use serde_json::{json, Value as Json};

const UNITS: usize = 100;

struct Rig {
    db: Db,
    base: String,
    token: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/bench.db", dir.path().display());
        let db = Db::connect(&url, 8).await.unwrap();
        db.migrate().await.unwrap();
        control_plane::startup::ensure_user(
            &db,
            "bench",
            "bench-password",
            "SYSTEM",
            "GLOBAL",
            None,
        )
        .await
        .unwrap();
        let state = AppState::new(db.clone(), ControlPlaneConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            control_plane::http::serve(listener, state, std::future::pending())
                .await
                .unwrap();
        });
        let client = reqwest::Client::new();
        let login: Json = client
            .post(format!("{base}/v1/auth/login"))
            .form(&[("username", "bench"), ("password", "bench-password")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["message"]["login_successful"]["API_token"]
            .as_str()
            .unwrap()
            .to_string();
        let rig = Self {
            db,
            base,
            token,
            client,
            _dir: dir,
        };
        for n in 0..UNITS {
            let imei = format!("{:015}", 358_000_000_000_000u64 + n as u64);
            let (status, body) = rig
                .call(
                    reqwest::Method::POST,
                    "/v1/products/create_hub2",
                    Some(json!({"imei": imei, "imsi": format!("2{}", &imei[1..]),
                                "device_key": format!("dk{imei}"), "manufacturer": "Bench"})),
                )
                .await;
            assert!(status.is_success(), "{body}");
        }
        rig
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Json>,
    ) -> (reqwest::StatusCode, Json) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", format!("Token token={}", self.token));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Json::Null))
    }

    /// Writers that each hold the writer connection for 2 ms per transaction.
    fn start_writers(&self, rt: &tokio::runtime::Runtime, n: usize) -> Arc<AtomicBool> {
        let stop = Arc::new(AtomicBool::new(false));
        for w in 0..n {
            let (db, stop) = (self.db.clone(), stop.clone());
            rt.spawn(async move {
                let imei = format!("{:015}", 358_000_000_000_000u64 + w as u64);
                while !stop.load(Ordering::Relaxed) {
                    let mut tx = db.begin().await.unwrap();
                    let stmt = Query::update()
                        .table(Alias::new("product"))
                        .value(Alias::new("modified_by"), format!("writer {w}"))
                        .and_where(Expr::col(Alias::new("product_imei")).eq(imei.as_str()))
                        .to_owned();
                    tx.execute(&stmt).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    tx.commit().await.unwrap();
                }
            });
        }
        stop
    }
}

/// A page of products, as the fleet reads do.
fn page() -> SelectStatement {
    Query::select()
        .column(Alias::new("product_imei"))
        .from(Alias::new("product"))
        .order_by(Alias::new("product_imei"), Order::Asc)
        .limit(10)
        .to_owned()
}

fn read_latency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rig = rt.block_on(Rig::start());
    let writers: usize = std::env::var("SMARTSOLAR_BENCH_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let imei = Column::computed("product_imei", ColumnType::String);
    let mut group = c.benchmark_group("read_latency");
    for (load, n) in [("idle", 0), ("under_writes", writers)] {
        let stop = rig.start_writers(&rt, n);
        group.bench_function(format!("dashboard2/{load}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let (s, body) =
                            rig.call(reqwest::Method::GET, "/v1/dashboard2", None).await;
                        assert!(s.is_success(), "{body}");
                    }
                    start.elapsed()
                })
            })
        });
        for (path, writer) in [("reader_tx", false), ("writer_tx", true)] {
            group.bench_function(format!("{path}/{load}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let mut tx = if writer {
                                rig.db.begin().await.unwrap()
                            } else {
                                rig.db.begin_read().await.unwrap()
                            };
                            let rows = tx.fetch_all(&page(), &[&imei]).await.unwrap();
                            assert_eq!(rows.len(), 10);
                            tx.commit().await.unwrap();
                        }
                        start.elapsed()
                    })
                })
            });
        }
        stop.store(true, Ordering::Relaxed);
        // Let the writers finish their last transaction.
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    }
    group.finish();
}

criterion_group!(benches, read_latency);
criterion_main!(benches);
