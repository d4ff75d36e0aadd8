//! Write transactions (`Tx`) on both backends: what commits, what rolls back, and a
//! transaction of one statement (`Tx::finish_with`, sent alone on PostgreSQL, without
//! `BEGIN` and `COMMIT`), including after the server ended every session.

mod common;

use common::Backend;
use control_plane::catalogue::{Column, ColumnType};
use control_plane::db::Db;
use sea_query::{Alias, Expr, Func, Query};

/// A fresh database with an empty table `t (v INTEGER UNIQUE)`, and its URL.
async fn table_t(backend: Backend) -> (Db, String, Option<tempfile::TempDir>) {
    let (url, dir) = common::fresh_db_url(backend).await;
    let setup = "CREATE TABLE t (v BIGINT UNIQUE)";
    common::run_sql(backend, &url, setup).await;
    let db = Db::connect(&url, 4).await.unwrap();
    (db, url, dir)
}

fn insert(v: i64) -> sea_query::InsertStatement {
    Query::insert()
        .into_table(Alias::new("t"))
        .columns([Alias::new("v")])
        .values_panic([v.into()])
        .returning(Query::returning().columns([Alias::new("v")]))
        .to_owned()
}

fn column() -> Column {
    Column::computed("v", ColumnType::Int)
}

/// The values in `t`, in order.
async fn values(db: &Db) -> Vec<i64> {
    let stmt = Query::select()
        .column(Alias::new("v"))
        .from(Alias::new("t"))
        .order_by(Alias::new("v"), sea_query::Order::Asc)
        .to_owned();
    db.fetch_all(&stmt, &[&column()])
        .await
        .unwrap()
        .iter()
        .map(|r| r["v"].as_i64().unwrap())
        .collect()
}

async fn what_commits_and_what_rolls_back(backend: Backend) {
    let (db, _, _dir) = table_t(backend).await;
    let v = column();
    // One statement alone: committed, its row returned.
    let row = db
        .begin()
        .await
        .unwrap()
        .finish_with(&insert(1), &[&v])
        .await
        .unwrap();
    assert_eq!(row.unwrap()["v"], 1);
    // A statement, then the last one: both committed together.
    let mut tx = db.begin().await.unwrap();
    tx.fetch_optional(&insert(2), &[&v]).await.unwrap();
    tx.finish_with(&insert(3), &[&v]).await.unwrap();
    assert_eq!(values(&db).await, [1, 2, 3]);
    // The last statement fails (a duplicate): nothing of the transaction stays.
    let mut tx = db.begin().await.unwrap();
    tx.fetch_optional(&insert(4), &[&v]).await.unwrap();
    assert!(tx.finish_with(&insert(1), &[&v]).await.is_err());
    // Alone, failing: nothing written, and the connection serves the next one.
    assert!(db
        .begin()
        .await
        .unwrap()
        .finish_with(&insert(2), &[&v])
        .await
        .is_err());
    // Dropped after a statement: rolled back; dropped before any: nothing happens.
    let mut tx = db.begin().await.unwrap();
    tx.fetch_optional(&insert(5), &[&v]).await.unwrap();
    drop(tx);
    drop(db.begin().await.unwrap());
    assert_eq!(values(&db).await, [1, 2, 3]);
    // The pool's connections all still work, inside transactions and alone.
    for k in 6..14 {
        let mut tx = db.begin().await.unwrap();
        tx.fetch_optional(&insert(k * 10), &[&v]).await.unwrap();
        tx.commit().await.unwrap();
        let row = db
            .begin()
            .await
            .unwrap()
            .finish_with(&insert(k), &[&v])
            .await
            .unwrap();
        assert_eq!(row.unwrap()["v"], k);
    }
    assert_eq!(values(&db).await.len(), 3 + 16);
}

/// After a server restart (here: every session ended by `pg_terminate_backend`), a
/// statement sent alone on a connection the server ended runs once more on a new one: the
/// server's 57P01 came before any row, so the statement had not run. Each runs exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statements_alone_survive_ended_sessions_exactly_once() {
    let (db, url, _) = table_t(Backend::Postgres).await;
    let v = column();
    // Open the transactions' connections (2 of the budget of 4), and leave them idle.
    let txs: Vec<_> = (0..2).map(|_| db.begin()).collect();
    for tx in futures_util::future::join_all(txs).await {
        tx.unwrap().finish_with(&insert(0), &[&v]).await.ok();
    }
    let ended = common::end_every_session(&url).await;
    assert!(ended >= 2, "{ended} sessions ended");
    for k in 1..=5 {
        let row = db
            .begin()
            .await
            .unwrap()
            .finish_with(&insert(k), &[&v])
            .await;
        assert_eq!(row.unwrap().unwrap()["v"], k);
    }
    let count = Query::select()
        .expr(Func::count(Expr::col(Alias::new("v"))))
        .from(Alias::new("t"))
        .to_owned();
    assert_eq!(db.fetch_i64(&count).await.unwrap(), 6);
    assert_eq!(values(&db).await, [0, 1, 2, 3, 4, 5]);
}

both_backends!(what_commits_and_what_rolls_back);
