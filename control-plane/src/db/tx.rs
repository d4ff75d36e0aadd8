//! Transactions: read-only ones on reader connections, write ones on the SQLite writer or
//! a PostgreSQL connection.

use futures_util::TryStreamExt as _;
use sea_query::{PostgresQueryBuilder, QueryStatementWriter};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgTransactionManager;
use sqlx::{PgPool, TransactionManager as _};

use super::bind::bind_pg;
use super::conn::{timed, Conn};
use super::decode::decode_pg;
use super::gate::Priority;
use super::pool::Inner;
use super::readers::connection_lost;
use super::writer::SqliteTx;
use super::{Db, DbError, Row, TypedRow};
use crate::catalogue::Column;
use crate::schema::Backend;

impl Db {
    /// Starts a read-only transaction, for handlers that only read but want one
    /// consistent snapshot across several statements. On SQLite it runs on a
    /// reader connection (opened read-only), so it never queues behind the single
    /// writer; on PostgreSQL it is a `READ ONLY` transaction, so a write slipped
    /// into a read path fails there too instead of passing unnoticed.
    pub async fn begin_read(&self) -> Result<Tx, DbError> {
        timed("begin_read", async {
            Ok(match &self.inner {
                Inner::Sqlite { read, .. } => Tx::SqliteRead(read.begin().await?),
                Inner::Postgres { pool, .. } => Tx::Postgres(PgTx::new(pool, true).await?),
            })
        })
        .await
    }

    /// Starts a write transaction for someone waiting on the answer (an API request): on
    /// SQLite, on the single writer connection, ahead of background work
    /// ([`Priority::Interactive`]). On PostgreSQL this only takes a connection: `BEGIN`
    /// goes out with the first statement (see [`PgTx`]), and a transaction of one
    /// statement ([`Tx::finish_with`]) sends none.
    pub async fn begin(&self) -> Result<Tx, DbError> {
        self.begin_with(Priority::Interactive).await
    }

    /// Starts a write transaction for bulk work nobody waits on (MO ingest, presence,
    /// pruning, webhook bookkeeping): on SQLite it lets interactive transactions go first
    /// ([`Priority::Background`]). On PostgreSQL it is the same as [`Db::begin`]: there
    /// transactions run side by side on their own connections.
    pub async fn begin_background(&self) -> Result<Tx, DbError> {
        self.begin_with(Priority::Background).await
    }

    /// Starts a write transaction at `priority` ([`Db::begin`] or [`Db::begin_background`]),
    /// for callers that choose per case.
    pub async fn begin_with(&self, priority: Priority) -> Result<Tx, DbError> {
        // On SQLite this includes the wait for the single writer: the
        // figure that grows first when writes queue up.
        let label = match priority {
            Priority::Interactive => "begin",
            Priority::Background => "begin_background",
        };
        timed(label, async {
            Ok(match &self.inner {
                Inner::Sqlite { write, .. } => Tx::Sqlite(write.begin(priority).await?),
                Inner::Postgres { pool, .. } => Tx::Postgres(PgTx::new(pool, false).await?),
            })
        })
        .await
    }
}

/// A transaction. Dropped without [`Tx::commit`], it rolls back.
pub enum Tx {
    /// A write transaction: a savepoint in the single writer's group commit.
    Sqlite(SqliteTx),
    /// A read-only transaction on a reader connection ([`Db::begin_read`]).
    SqliteRead(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(PgTx),
}

impl Tx {
    /// The connection, inside the transaction (on PostgreSQL `BEGIN` is sent now if it
    /// was not yet).
    async fn conn(&mut self) -> Result<Conn<'_>, DbError> {
        Ok(match self {
            Self::Sqlite(tx) => Conn::Sqlite(tx.conn()),
            Self::SqliteRead(tx) => Conn::Sqlite(&mut *tx),
            Self::Postgres(tx) => Conn::Postgres(tx.begun().await?),
        })
    }

    /// Which SQL dialect this transaction speaks.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) | Self::SqliteRead(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs a statement and decodes its rows by `columns` (also used for
    /// `INSERT ... RETURNING`).
    pub async fn fetch_all(
        &mut self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<Vec<Row>, DbError> {
        self.conn().await?.fetch_all(stmt, columns).await
    }

    /// Runs a statement that yields at most one row.
    pub async fn fetch_optional(
        &mut self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<Option<Row>, DbError> {
        Ok(self
            .conn()
            .await?
            .fetch_all(stmt, columns)
            .await?
            .into_iter()
            .next())
    }

    /// Runs a statement and decodes its rows as `T` (also for `RETURNING`).
    pub async fn fetch_typed<T: TypedRow>(
        &mut self,
        stmt: &impl QueryStatementWriter,
    ) -> Result<Vec<T>, DbError> {
        self.conn().await?.fetch_typed(stmt).await
    }

    /// Runs a statement that yields at most one row, decoded as `T`.
    pub async fn fetch_typed_optional<T: TypedRow>(
        &mut self,
        stmt: &impl QueryStatementWriter,
    ) -> Result<Option<T>, DbError> {
        Ok(self
            .conn()
            .await?
            .fetch_typed(stmt)
            .await?
            .into_iter()
            .next())
    }

    /// Runs a statement whose first column is an integer.
    pub async fn fetch_i64(&mut self, stmt: &impl QueryStatementWriter) -> Result<i64, DbError> {
        self.conn().await?.fetch_i64(stmt).await
    }

    /// Runs a statement and returns the number of rows it touched.
    pub async fn execute(&mut self, stmt: &impl QueryStatementWriter) -> Result<u64, DbError> {
        self.conn().await?.execute(stmt).await
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), DbError> {
        timed("commit", async {
            match self {
                Self::Sqlite(tx) => tx.commit().await?,
                Self::SqliteRead(tx) => tx.commit().await?,
                Self::Postgres(tx) => tx.commit().await?,
            }
            Ok(())
        })
        .await
    }

    /// Runs the transaction's last statement, which yields at most one row, and commits.
    /// On PostgreSQL, when nothing ran before it, the statement is sent alone, without
    /// `BEGIN` and `COMMIT`: a single statement is atomic by itself, and it is one round
    /// trip to the server instead of three.
    pub async fn finish_with(
        mut self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<Option<Row>, DbError> {
        if let Self::Postgres(tx) = &mut self {
            // A read-only transaction keeps its `BEGIN READ ONLY`, which is its check.
            if !tx.begun && !tx.read_only {
                return Ok(tx.alone(stmt, columns).await?.into_iter().next());
            }
        }
        let row = self.fetch_optional(stmt, columns).await?;
        self.commit().await?;
        Ok(row)
    }
}

/// A PostgreSQL transaction on a connection of the transactions' pool. `BEGIN` is sent
/// with the first statement rather than when the transaction is made, so a transaction of
/// one statement can go without it ([`Tx::finish_with`]); dropped after `BEGIN` without
/// [`PgTx::commit`], it rolls back (queued, as sqlx's own transactions do: the pool's ping
/// when the connection comes back sends it).
pub struct PgTx {
    pool: PgPool,
    /// `None` only while a dead connection is being replaced.
    conn: Option<PoolConnection<sqlx::Postgres>>,
    read_only: bool,
    begun: bool,
}

impl PgTx {
    async fn new(pool: &PgPool, read_only: bool) -> Result<Self, DbError> {
        Ok(Self {
            pool: pool.clone(),
            conn: Some(pool.acquire().await?),
            read_only,
            begun: false,
        })
    }

    fn conn(&mut self) -> &mut PoolConnection<sqlx::Postgres> {
        self.conn.as_mut().expect("replaced only in place")
    }

    /// Swaps a connection found dead for another one of the pool.
    async fn replace_dead(&mut self) -> Result<(), DbError> {
        // Given back first (sqlx's ping then finds it dead and closes it), so a pool of one
        // connection can open its replacement.
        drop(self.conn.take());
        self.conn = Some(self.pool.acquire().await?);
        Ok(())
    }

    /// The connection inside the transaction: sends `BEGIN` first if it was not yet. The
    /// pool hands out idle connections without a ping, so after a server restart each idle
    /// one fails its `BEGIN`: this draws again, at most once per connection the pool can
    /// hold, until one answers (a `BEGIN` has no effect to repeat).
    async fn begun(&mut self) -> Result<&mut sqlx::PgConnection, DbError> {
        if !self.begun {
            let statement = if self.read_only {
                "BEGIN READ ONLY"
            } else {
                "BEGIN"
            };
            let mut attempts = self.pool.options().get_max_connections() + 1;
            loop {
                attempts -= 1;
                match PgTransactionManager::begin(self.conn(), Some(statement.into())).await {
                    Err(e) if attempts > 0 && connection_lost(&e) => {
                        tracing::debug!(error = %e, "a pooled PostgreSQL connection was dead; drawing another");
                        self.replace_dead().await?;
                    }
                    other => break other?,
                }
            }
            self.begun = true;
        }
        Ok(&mut **self.conn())
    }

    async fn commit(mut self) -> Result<(), DbError> {
        if self.begun {
            PgTransactionManager::commit(self.conn()).await?;
            self.begun = false;
        }
        Ok(())
    }

    /// Runs `stmt` alone, outside `BEGIN`/`COMMIT`. It runs again on another connection
    /// only when the server said it ended the session (SQLSTATE 57P, e.g. after a restart
    /// or `pg_terminate_backend`) before the statement returned any row: the server's
    /// answers arrive in order, so a statement that had run would have sent its rows before
    /// that message. Statements without rows, and connections that failed in any other way
    /// (a cut socket may have lost rows already sent), are not run again: the caller gets
    /// the error, as for a failed `COMMIT`.
    async fn alone(
        &mut self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<Vec<Row>, DbError> {
        let (sql, values) = stmt.build(PostgresQueryBuilder);
        let mut attempts = self.pool.options().get_max_connections() + 1;
        loop {
            attempts -= 1;
            let mut seen = Vec::new();
            let run = timed("execute", async {
                let mut rows = bind_pg(sqlx::query(&sql), values.clone()).fetch(&mut **self.conn());
                while let Some(row) = rows.try_next().await? {
                    seen.push(row);
                }
                Ok::<_, sqlx::Error>(())
            })
            .await;
            match run {
                // Only a statement that returns rows (`RETURNING`) can show it did not run;
                // one without rows is never run again.
                Err(e)
                    if attempts > 0
                        && !columns.is_empty()
                        && seen.is_empty()
                        && ended_by_server(&e) =>
                {
                    tracing::debug!(error = %e, "a pooled PostgreSQL connection was ended by the server; running the statement on another");
                    self.replace_dead().await?;
                }
                Err(e) => return Err(DbError::classify(e)),
                Ok(()) => return seen.iter().map(|r| decode_pg(r, columns)).collect(),
            }
        }
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        if self.begun {
            if let Some(conn) = self.conn.as_mut() {
                PgTransactionManager::start_rollback(conn);
            }
        }
    }
}

/// `true` when the server told us it ended the session (SQLSTATE class 57P: an
/// administrator's `pg_terminate_backend`, a shutdown, a crash of another backend).
fn ended_by_server(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("57P")))
}
