//! The SQLite writer: one connection, with group commit (see [`Writer`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteTransactionManager;
use sqlx::{Sqlite, SqliteConnection, SqlitePool, TransactionManager as _};
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

use super::gate::{Gate, Priority, Ticket, Turn};

/// The SQLite writer: one connection, with group commit.
///
/// A [`Tx`] locks the writer (one at a time, through a [`Gate`]: FIFO within each
/// [`Priority`], interactive transactions ahead of background ones), opens a savepoint inside
/// the batch transaction (opening that first when none is open), and on
/// commit releases its savepoint and hands the writer to the next in the
/// queue, then waits for the batch to commit. The first commit of a batch
/// queues a flush behind everyone already waiting in its priority, so one COMMIT
/// (one WAL append of the pages the batch touched) covers all of them; under no
/// load the flush runs straight away and a batch is one transaction. An
/// interactive transaction's commit queues an interactive flush, so an
/// operator's write waits for the interactive work ahead of it, not for an
/// ingest backlog.
///
/// A transaction dropped without commit rolls back to its savepoint, which
/// leaves the rest of the batch alone. When the COMMIT itself fails, every
/// transaction of the batch gets the error: each was answered with nothing
/// yet, so none is lost silently. Because a batch commits as a whole and its
/// transactions ran in queue order, what readers see is always a prefix of
/// that order, which keeps the ordering `enable_history` and the DCM ledger
/// rely on.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    pool: SqlitePool,
    /// Who holds the writer; `batch`'s lock is only ever taken with a turn here, so it
    /// never waits.
    gate: Arc<Gate>,
    batch: Arc<Mutex<Batch>>,
    /// Batches committed so far (what the tests check grouping by).
    batches: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Batch {
    /// The writer connection, taken from `pool` while a batch is open (and
    /// given back after its COMMIT, so an in-memory database's readers, which
    /// share that one connection, get it between batches).
    conn: Option<PoolConnection<Sqlite>>,
    /// A batch transaction is open on `conn`.
    open: bool,
    /// Released savepoints waiting for the batch's COMMIT.
    waiters: Vec<oneshot::Sender<Result<(), Arc<sqlx::Error>>>>,
    /// A flush task is queued in the gate's background queue.
    background_flush_queued: bool,
    /// A flush task is queued in the gate's interactive queue.
    interactive_flush_queued: bool,
}

impl Batch {
    /// Whether a flush is queued at `priority`, to be set or cleared.
    fn flush_queued(&mut self, priority: Priority) -> &mut bool {
        match priority {
            Priority::Interactive => &mut self.interactive_flush_queued,
            Priority::Background => &mut self.background_flush_queued,
        }
    }
}

impl Writer {
    pub(super) fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            gate: Arc::default(),
            batch: Arc::new(Mutex::new(Batch::default())),
            batches: Arc::default(),
        }
    }

    /// Waits for the writer. The writer is handed on when the returned value drops,
    /// however that happens (a cancelled request included).
    pub(super) async fn lock(&self, priority: Priority) -> Result<Held, sqlx::Error> {
        let turn = self.gate.enter(priority).await;
        let mut held = Held {
            writer: self.clone(),
            guard: Some(self.batch.clone().lock_owned().await),
            priority,
            since: Instant::now(),
            _turn: turn,
        };
        let batch = held.batch();
        if batch.conn.is_none() {
            batch.conn = Some(self.pool.acquire().await?);
        }
        Ok(held)
    }

    pub(super) async fn begin(&self, priority: Priority) -> Result<SqliteTx, sqlx::Error> {
        let mut held = self.lock(priority).await?;
        if !held.batch().open {
            SqliteTransactionManager::begin(held.conn(), None).await?;
            held.batch().open = true;
        }
        // Depth 2: sqlx issues a SAVEPOINT; cancelled mid-way, its worker rolls it back.
        SqliteTransactionManager::begin(held.conn(), None).await?;
        Ok(SqliteTx {
            held,
            released: false,
        })
    }

    /// Commits the open batch and tells its transactions how it went.
    async fn flush(self, place: Ticket, priority: Priority) {
        let _turn = place.wait().await;
        let mut guard = self.batch.clone().lock_owned().await;
        *guard.flush_queued(priority) = false;
        if !guard.open {
            return;
        }
        let conn = guard
            .conn
            .as_mut()
            .expect("an open batch holds the connection");
        let started = Instant::now();
        let result = SqliteTransactionManager::commit(conn).await;
        metrics::histogram!(METRIC_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        if result.is_err() {
            // Leave the connection clean for the next batch whatever state SQLite is in.
            let _ = SqliteTransactionManager::rollback(conn).await;
        }
        guard.open = false;
        guard.conn = None;
        self.batches.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("smartsolar_db_commit_batch_transactions")
            .record(guard.waiters.len() as f64);
        let result = result.map_err(Arc::new);
        for waiter in guard.waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}

/// The locked writer. Dropping it hands the writer on: the connection goes back to its pool
/// when no batch is open, else a flush is queued behind whoever waits now.
pub(super) struct Held {
    writer: Writer,
    guard: Option<OwnedMutexGuard<Batch>>,
    /// The queue this holder came through (and its flush goes to).
    priority: Priority,
    /// When this holder got the writer (for [`METRIC_HOLD_SECONDS`]).
    since: Instant,
    /// Declared last: dropped after `guard`, so the next holder finds the batch unlocked.
    _turn: Turn,
}

/// Histogram: how long one transaction kept the SQLite writer, from its turn to its release.
/// With [`METRIC_COMMIT_SECONDS`] (the flushes) it tells whether writes queue behind long
/// transactions or behind slow COMMITs (docs/performance.md, issue 21's bottleneck).
const METRIC_HOLD_SECONDS: &str = "smartsolar_db_writer_hold_seconds";

/// Histogram: one group commit's COMMIT statement on the SQLite writer.
const METRIC_COMMIT_SECONDS: &str = "smartsolar_db_commit_batch_seconds";

impl Held {
    fn batch(&mut self) -> &mut Batch {
        self.guard.as_mut().expect("held until dropped")
    }

    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        self.batch()
            .conn
            .as_mut()
            .expect("the writer's connection is taken when it is locked")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(mut batch) = self.guard.take() else {
            return;
        };
        metrics::histogram!(METRIC_HOLD_SECONDS).record(self.since.elapsed().as_secs_f64());
        if !batch.open {
            batch.conn = None;
        } else if !*batch.flush_queued(self.priority) {
            *batch.flush_queued(self.priority) = true;
            // Queued now, before this holder's turn is handed on: an interactive flush goes
            // ahead of the background work already waiting.
            let place = self.writer.gate.ticket(self.priority);
            tokio::spawn(self.writer.clone().flush(place, self.priority));
        }
    }
}

/// One transaction's savepoint on the SQLite writer; see [`Writer`].
pub struct SqliteTx {
    held: Held,
    /// The savepoint was released (committed into the batch).
    released: bool,
}

impl SqliteTx {
    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        self.held.conn()
    }

    pub(super) async fn commit(mut self) -> Result<(), sqlx::Error> {
        // RELEASE the savepoint; on failure, dropping `self` rolls it back.
        SqliteTransactionManager::commit(self.conn()).await?;
        self.released = true;
        let (done, committed) = oneshot::channel();
        self.held.batch().waiters.push(done);
        drop(self); // hands the writer on, queueing the flush
        match committed.await {
            Ok(result) => result.map_err(|e| {
                sqlx::Error::Protocol(format!("the group commit of this transaction failed: {e}"))
            }),
            Err(_) => Err(sqlx::Error::WorkerCrashed),
        }
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if !self.released {
            // Queue the rollback to this savepoint: the writer's worker runs it before
            // anything the next holder sends, and the rest of the batch is untouched.
            SqliteTransactionManager::start_rollback(self.conn());
        }
    }
}

#[cfg(test)]
mod tests {
    //! Group commit on the SQLite writer, attacked: concurrent writers with
    //! rollbacks and failing statements among them, readers watching the order,
    //! cancelled transactions. Real SQLite files, no doubles.
    use std::collections::BTreeSet;
    use std::time::Duration;

    use sea_query::{Alias, Expr, Query};

    use super::*;
    use crate::db::pool::Inner;
    use crate::db::{Db, DbError, Tx};

    async fn open() -> (tempfile::TempDir, Db, Writer, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, 4).await.unwrap();
        let Inner::Sqlite { read, write, .. } = &db.inner else {
            unreachable!()
        };
        let (read, write) = (read.clone(), write.clone());
        let mut held = write.lock(Priority::Interactive).await.unwrap();
        for ddl in [
            "CREATE TABLE counter (n INTEGER NOT NULL)",
            "INSERT INTO counter VALUES (0)",
            "CREATE TABLE t (n INTEGER PRIMARY KEY, tag INTEGER NOT NULL UNIQUE)",
            "CREATE TABLE u (v INTEGER NOT NULL UNIQUE)",
            "INSERT INTO u VALUES (1)",
        ] {
            sqlx::query(ddl).execute(held.conn()).await.unwrap();
        }
        drop(held);
        (dir, db, write, read)
    }

    /// One transaction in the style of `enable_history`: takes the next number
    /// of a sequence and writes a row with it.
    async fn append(tx: &mut Tx, tag: i64) -> Result<(), DbError> {
        let bump = Query::update()
            .table(Alias::new("counter"))
            .value(Alias::new("n"), Expr::col(Alias::new("n")).add(1))
            .to_owned();
        tx.execute(&bump).await?;
        let insert = Query::insert()
            .into_table(Alias::new("t"))
            .columns([Alias::new("n"), Alias::new("tag")])
            .select_from(
                Query::select()
                    .column(Alias::new("n"))
                    .expr(Expr::val(tag))
                    .from(Alias::new("counter"))
                    .to_owned(),
            )
            .unwrap()
            .to_owned();
        tx.execute(&insert).await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_transactions_commit_together_in_order_and_alone_when_they_fail() {
        let (_dir, db, writer, read) = open().await;
        // A reader watching throughout: what it sees must always be a prefix
        // 1..=k of the sequence, never a later row without an earlier one.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (read, stop) = (read.clone(), stop.clone());
            tokio::spawn(async move {
                let mut looks = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (count, max): (i64, Option<i64>) =
                        sqlx::query_as("SELECT COUNT(*), MAX(n) FROM t")
                            .fetch_one(&read)
                            .await
                            .unwrap();
                    assert_eq!(count, max.unwrap_or(0), "a reader saw a gap");
                    looks += 1;
                    tokio::task::yield_now().await;
                }
                looks
            })
        };
        let tasks: Vec<_> = (0..200i64)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let mut tx = db.begin().await.unwrap();
                    append(&mut tx, i).await.unwrap();
                    match i % 10 {
                        // Rolled back by dropping, in the middle of a batch.
                        3 => None,
                        // A statement fails (u.v = 1 is taken): the caller gives up.
                        7 => {
                            let taken = Query::insert()
                                .into_table(Alias::new("u"))
                                .columns([Alias::new("v")])
                                .values_panic([1i64.into()])
                                .to_owned();
                            let err = tx.execute(&taken).await.unwrap_err();
                            assert!(matches!(err, DbError::Unique { .. }), "{err}");
                            None
                        }
                        _ => {
                            tx.commit().await.unwrap();
                            Some(i)
                        }
                    }
                })
            })
            .collect();
        let mut committed = BTreeSet::new();
        for t in tasks {
            committed.extend(t.await.unwrap());
        }
        stop.store(true, Ordering::Relaxed);
        assert!(watcher.await.unwrap() > 0);

        // Every commit that returned Ok is there, nothing else, numbered 1..=k without gaps.
        let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT n, tag FROM t ORDER BY n")
            .fetch_all(&read)
            .await
            .unwrap();
        let tags: BTreeSet<i64> = rows.iter().map(|r| r.1).collect();
        assert_eq!(tags, committed);
        assert_eq!(committed.len(), 160);
        let numbers: Vec<i64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(numbers, (1..=160).collect::<Vec<_>>());
        // Grouped: far fewer COMMITs than transactions.
        let batches = writer.batches.load(Ordering::Relaxed);
        assert!(
            batches > 0 && batches <= 80,
            "{batches} batches for 160 transactions"
        );
        // And nothing is left open: the writer's connection went back to its pool.
        assert!(writer.batch.lock().await.conn.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interactive_write_commits_ahead_of_a_background_backlog() {
        let (_dir, db, writer, read) = open().await;
        // An ingest-like backlog: 40 background transactions queued behind a held writer,
        // each keeping it for a while, as ingest's do during an MO burst.
        let blocker = db.begin_background().await.unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let backlog: Vec<_> = (0..40i64)
            .map(|i| {
                let (db, done) = (db.clone(), done.clone());
                tokio::spawn(async move {
                    let mut tx = db.begin_background().await.unwrap();
                    append(&mut tx, 100 + i).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    tx.commit().await.unwrap();
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        while writer.gate.waiting() < 40 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // An operator's write arrives last.
        let operator = tokio::spawn({
            let (db, done) = (db.clone(), done.clone());
            async move {
                let mut tx = db.begin().await.unwrap();
                append(&mut tx, 1).await.unwrap();
                tx.commit().await.unwrap();
                done.load(Ordering::SeqCst)
            }
        });
        while writer.gate.waiting() < 41 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(blocker);
        let backlog_done_first = operator.await.unwrap();
        // It went next and its flush straight after, ahead of the whole backlog (in one
        // FIFO queue all 40 would have committed first).
        assert_eq!(
            backlog_done_first, 0,
            "background transactions committed before the interactive one"
        );
        for t in backlog {
            t.await.unwrap();
        }
        // And nothing was lost or reordered out of a prefix: all 41 are there, numbered 1..=41.
        let numbers: Vec<i64> = sqlx::query_scalar("SELECT n FROM t ORDER BY n")
            .fetch_all(&read)
            .await
            .unwrap();
        assert_eq!(numbers, (1..=41).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_lone_transaction_commits_at_once_and_a_dropped_one_frees_the_writer() {
        let (_dir, db, writer, read) = open().await;
        let mut tx = db.begin().await.unwrap();
        append(&mut tx, 1).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), tx.commit())
            .await
            .expect("a lone commit does not wait for company")
            .unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&read)
            .await
            .unwrap();
        assert_eq!(count, 1, "visible to readers once commit returned");

        // Dropped without commit, with nobody else writing: rolled back, writer free.
        let mut tx = db.begin().await.unwrap();
        append(&mut tx, 2).await.unwrap();
        drop(tx);
        // A begin cancelled while it waits for the writer leaves nothing behind either.
        let blocker = db.begin().await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), db.begin())
                .await
                .is_err(),
            "one writer at a time"
        );
        drop(blocker);
        let mut tx = tokio::time::timeout(Duration::from_secs(5), db.begin())
            .await
            .expect("the writer is free again")
            .unwrap();
        append(&mut tx, 3).await.unwrap();
        tx.commit().await.unwrap();
        let tags: Vec<i64> = sqlx::query_scalar("SELECT tag FROM t ORDER BY n")
            .fetch_all(&read)
            .await
            .unwrap();
        assert_eq!(tags, [1, 3]);
        // 1, the rolled-back one, the blocker (the last may share its batch with the blocker's).
        assert!((3..=4).contains(&writer.batches.load(Ordering::Relaxed)));
    }
}
