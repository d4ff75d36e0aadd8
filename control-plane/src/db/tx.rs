//! Transactions: read-only ones on reader connections, write ones on the SQLite writer or
//! a PostgreSQL connection.

use sea_query::QueryStatementWriter;
use sqlx::PgPool;

use super::conn::{timed, Conn};
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
                Inner::Postgres { pool, .. } => {
                    let mut tx = begin_pg(pool).await?;
                    sqlx::query("SET TRANSACTION READ ONLY")
                        .execute(&mut *tx)
                        .await?;
                    Tx::Postgres(tx)
                }
            })
        })
        .await
    }

    /// Starts a write transaction for someone waiting on the answer (an API request): on
    /// SQLite, on the single writer connection, ahead of background work
    /// ([`Priority::Interactive`]).
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

    async fn begin_with(&self, priority: Priority) -> Result<Tx, DbError> {
        // On SQLite this includes the wait for the single writer: the
        // figure that grows first when writes queue up.
        let label = match priority {
            Priority::Interactive => "begin",
            Priority::Background => "begin_background",
        };
        timed(label, async {
            Ok(match &self.inner {
                Inner::Sqlite { write, .. } => Tx::Sqlite(write.begin(priority).await?),
                Inner::Postgres { pool, .. } => Tx::Postgres(begin_pg(pool).await?),
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
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Sqlite(tx) => Conn::Sqlite(tx.conn()),
            Self::SqliteRead(tx) => Conn::Sqlite(&mut *tx),
            Self::Postgres(tx) => Conn::Postgres(&mut *tx),
        }
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
        self.conn().fetch_all(stmt, columns).await
    }

    /// Runs a statement that yields at most one row.
    pub async fn fetch_optional(
        &mut self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<Option<Row>, DbError> {
        Ok(self
            .conn()
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
        self.conn().fetch_typed(stmt).await
    }

    /// Runs a statement that yields at most one row, decoded as `T`.
    pub async fn fetch_typed_optional<T: TypedRow>(
        &mut self,
        stmt: &impl QueryStatementWriter,
    ) -> Result<Option<T>, DbError> {
        Ok(self.conn().fetch_typed(stmt).await?.into_iter().next())
    }

    /// Runs a statement whose first column is an integer.
    pub async fn fetch_i64(&mut self, stmt: &impl QueryStatementWriter) -> Result<i64, DbError> {
        self.conn().fetch_i64(stmt).await
    }

    /// Runs a statement and returns the number of rows it touched.
    pub async fn execute(&mut self, stmt: &impl QueryStatementWriter) -> Result<u64, DbError> {
        self.conn().execute(stmt).await
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
}

/// Starts a PostgreSQL transaction. The pool hands out idle connections without a ping, so
/// after a server restart each idle one fails its first statement (and sqlx closes it when
/// it comes back): this draws again, at most once per connection the pool can hold, until
/// one answers.
async fn begin_pg(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, DbError> {
    let mut attempts = pool.options().get_max_connections() + 1;
    loop {
        attempts -= 1;
        match pool.begin().await {
            Err(e) if attempts > 0 && connection_lost(&e) => {
                tracing::debug!(error = %e, "a pooled PostgreSQL connection was dead; drawing another");
            }
            other => return Ok(other?),
        }
    }
}
