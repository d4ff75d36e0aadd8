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
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
                .await
                .unwrap();
            sqlx::raw_sql(setup).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::raw_sql(setup).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
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
    let name = url.rsplit_once('/').unwrap().1;
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
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(ended.len() >= 4, "{} sessions ended", ended.len());
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        assert_eq!(db.fetch_i64(&count()).await.unwrap(), 20_000);
    }
    for _ in 0..5 {
        let mut tx = db.begin().await.unwrap();
        assert_eq!(tx.fetch_i64(&count()).await.unwrap(), 20_000);
        tx.commit().await.unwrap();
    }
}

both_backends!(readers_survive_cancelled_queries);
