//! SQLite WAL checkpoints in the background, off the single writer's path.
//!
//! In WAL mode a COMMIT appends pages to the log; a checkpoint copies them back into the
//! database file and syncs it. By default SQLite checkpoints inside the COMMIT that takes
//! the log past 1,000 pages, so under an MO burst every few hundred milliseconds one
//! transaction's COMMIT also wrote and synced megabytes, while every other write queued
//! behind the writer (issue 21: COMMITs took up to 0.47 s of every second of the burst).
//! Here a task with a connection of its own runs a PASSIVE checkpoint twice a second: it
//! copies what no reader still needs and never takes the writer's lock, so writes go on
//! meanwhile. The writer's own automatic checkpoint stays as a safety net, at
//! [`WRITER_AUTOCHECKPOINT_PAGES`], for when this task falls behind.

use std::sync::Weak;
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, SqliteConnection};

/// The writer checkpoints by itself only once the log holds this many pages (64 MiB of 4 KiB
/// pages): the background task normally keeps it far below.
pub(super) const WRITER_AUTOCHECKPOINT_PAGES: &str = "16384";

/// How often the background task checkpoints.
const INTERVAL: Duration = Duration::from_millis(500);

/// Histogram: one background checkpoint (copying the log into the database file and syncing).
const METRIC_CHECKPOINT_SECONDS: &str = "smartsolar_db_checkpoint_seconds";
/// Gauge: pages in the SQLite write-ahead log at the last background checkpoint.
const METRIC_WAL_PAGES: &str = "smartsolar_db_wal_pages";

/// Starts the checkpoint task for the database `options` opens; it ends once `alive` can no
/// longer be upgraded (every handle of the database is gone).
pub(super) fn spawn<T: Send + Sync + 'static>(options: SqliteConnectOptions, alive: Weak<T>) {
    tokio::spawn(async move {
        let mut conn: Option<SqliteConnection> = None;
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.upgrade().is_none() {
                return;
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match options.connect().await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "WAL checkpointer: cannot open the database");
                        continue;
                    }
                },
            };
            let started = Instant::now();
            // (busy, pages in the log, pages checkpointed)
            let result: Result<(i64, i64, i64), _> =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&mut *c)
                    .await;
            match result {
                Ok((_, log_pages, _)) => {
                    metrics::histogram!(METRIC_CHECKPOINT_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    metrics::gauge!(METRIC_WAL_PAGES).set(log_pages.max(0) as f64);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "WAL checkpoint failed; reconnecting");
                    conn = None;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::db::Db;

    /// The database file fills from the log while the writer is far below its own automatic
    /// checkpoint: the background task did it. Without the task the file stays at its
    /// first few pages and everything sits in the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_is_checkpointed_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let db = Db::connect(&format!("sqlite://{}", path.display()), 2)
            .await
            .unwrap();
        let crate::db::pool::Inner::Sqlite { write, .. } = &db.inner else {
            unreachable!()
        };
        {
            let mut held = write.lock(crate::db::Priority::Interactive).await.unwrap();
            sqlx::query("CREATE TABLE blob (b BLOB NOT NULL)")
                .execute(held.conn())
                .await
                .unwrap();
        }
        // About 2 MiB: ~500 pages, far below the writer's own threshold.
        for _ in 0..64 {
            let mut tx = db.begin().await.unwrap();
            let crate::db::Tx::Sqlite(t) = &mut tx else {
                unreachable!()
            };
            sqlx::query("INSERT INTO blob VALUES (zeroblob(32768))")
                .execute(t.conn())
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let size = std::fs::metadata(&path).unwrap().len();
            if size >= 2 * 1024 * 1024 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the database file is still {size} bytes: nothing was checkpointed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
