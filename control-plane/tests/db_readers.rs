//! The database's connections for single reads (`Readers` in `db.rs`), kept without sqlx's
//! ping round trips (issue 20). These prove that what the pings were for still holds, on
//! both backends: a read cancelled mid-way (a client gone) leaves a connection that answers
//! the next read correctly, the connections stay within the configured number, and
//! connections the server ended are replaced without failing a request.

mod common;

use std::time::Duration;

use common::Backend;
use control_plane::db::Db;
use sea_query::{Alias, Expr, Func, Query};

/// The connections the tests configure (`db_max_connections`): on SQLite that many readers,
/// on PostgreSQL the process's whole budget, half of it for single reads.
const CONNECTIONS: u32 = 6;

/// A fresh database with a table of 20,000 numbers, opened with [`CONNECTIONS`], and its URL.
async fn numbers(backend: Backend) -> (Db, String, Option<tempfile::TempDir>) {
    let (url, dir) = common::fresh_db_url(backend).await;
    let setup = "CREATE TABLE n (v INTEGER); \
                 WITH RECURSIVE c(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM c WHERE v < 20000) \
                 INSERT INTO n SELECT v FROM c";
    common::run_sql(backend, &url, setup).await;
    let db = Db::connect(&url, CONNECTIONS).await.unwrap();
    (db, url, dir)
}

fn count() -> sea_query::SelectStatement {
    Query::select()
        .expr(Func::count(Expr::col(Alias::new("v"))))
        .from(Alias::new("n"))
        .to_owned()
}

async fn readers_survive_cancelled_queries(backend: Backend) {
    let (db, url, _dir) = numbers(backend).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let db = db.clone();
        tasks.spawn(async move {
            // Every third read is abandoned after a few microseconds, often mid-way.
            let limit = Duration::from_micros(if i % 3 == 0 { 5 + 3 * i } else { 30_000_000 });
            match tokio::time::timeout(limit, db.fetch_i64(&count())).await {
                Ok(n) => Some(n.unwrap()),
                Err(_) => None,
            }
        });
    }
    let mut answered = 0;
    while let Some(result) = tasks.join_next().await {
        if let Some(n) = result.unwrap() {
            assert_eq!(n, 20_000);
            answered += 1;
        }
    }
    // Some were really cancelled (the path under test), the others all answered.
    assert!((133..200).contains(&answered), "{answered} of 200 answered");
    // Every connection, including those whose read was cut off, answers correctly now.
    let mut after = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let db = db.clone();
        after.spawn(async move { db.fetch_i64(&count()).await.unwrap() });
    }
    while let Some(n) = after.join_next().await {
        assert_eq!(n.unwrap(), 20_000);
    }
    // No more connections than configured: the server's own count of them (PostgreSQL; a
    // SQLite connection is a file handle, and the same code bounds both): the readers' half
    // of the budget, beside the one connection the transactions' pool opens at start.
    if let Backend::Postgres = backend {
        let name = url.rsplit_once('/').unwrap().1;
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        let sessions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert!(
            (2..=i64::from(CONNECTIONS / 2) + 1).contains(&sessions),
            "{sessions} connections for single reads"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_ended_by_the_server_are_replaced_without_an_error() {
    let (db, url, _) = numbers(Backend::Postgres).await;
    // Open several connections of both kinds, and leave them idle.
    let statement = count();
    let reads: Vec<_> = (0..3).map(|_| db.fetch_i64(&statement)).collect();
    for n in futures_util::future::join_all(reads).await {
        assert_eq!(n.unwrap(), 20_000);
    }
    let txs: Vec<_> = (0..3).map(|_| db.begin()).collect();
    for tx in futures_util::future::join_all(txs).await {
        tx.unwrap().commit().await.unwrap();
    }
    // What a server restart does to them: end every session of this database but ours.
    let ended = common::end_every_session(&url).await;
    assert!(ended >= 4, "{ended} sessions ended");
    for _ in 0..5 {
        assert_eq!(db.fetch_i64(&count()).await.unwrap(), 20_000);
    }
    for _ in 0..5 {
        let mut tx = db.begin().await.unwrap();
        assert_eq!(tx.fetch_i64(&count()).await.unwrap(), 20_000);
        tx.commit().await.unwrap();
    }
}

/// `plan_cache_mode` as a single read on `db` sees it, or inside a transaction.
async fn plan_cache_mode(db: &Db, in_tx: bool) -> String {
    let mode = Query::select()
        .expr_as(
            Expr::cust("current_setting('plan_cache_mode')"),
            Alias::new("mode"),
        )
        .to_owned();
    let column = control_plane::catalogue::Column::computed(
        "mode",
        control_plane::catalogue::ColumnType::Text,
    );
    let rows = if in_tx {
        let mut tx = db.begin().await.unwrap();
        let rows = tx.fetch_all(&mode, &[&column]).await.unwrap();
        tx.commit().await.unwrap();
        rows
    } else {
        db.fetch_all(&mode, &[&column]).await.unwrap()
    };
    rows[0]["mode"].as_str().unwrap().to_string()
}

/// The single-statement connections plan their prepared statements once
/// (`plan_cache_mode = force_generic_plan`, issue 20), unless the URL sets the mode itself;
/// transactions keep the server's default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_single_statements_use_generic_plans() {
    let (db, url, _) = numbers(Backend::Postgres).await;
    assert_eq!(plan_cache_mode(&db, false).await, "force_generic_plan");
    assert_eq!(plan_cache_mode(&db, true).await, "auto");
    let own = Db::connect(&format!("{url}?options[plan_cache_mode]=auto"), CONNECTIONS)
        .await
        .unwrap();
    assert_eq!(plan_cache_mode(&own, false).await, "auto");
}

both_backends!(readers_survive_cancelled_queries);
