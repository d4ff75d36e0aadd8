//! Single-statement reads on reader connections of their own (see [`Readers`]), read
//! again on a new connection when the first was found dead.

use std::sync::Arc;
use std::time::Duration;

use sea_query::{Alias, QueryStatementWriter, SelectStatement, SimpleExpr};
use sqlx::pool::PoolConnection;
use sqlx::{ConnectOptions as _, PgConnection, Sqlite, SqliteConnection};

use super::conn::Conn;
use super::pool::Inner;
use super::render::Rendered;
use super::{Db, DbError, Row, TypedRow};
use crate::catalogue::Column;
use crate::schema::Backend;

/// Reader connections for single statements, kept here rather than in a sqlx pool: sqlx 0.8
/// pings every connection given back to its pool, and on PostgreSQL (by default) once more
/// before handing one out, a round trip per ping: to the connection's worker thread on
/// SQLite (7% of a GET by primary key's CPU, issue 20), to the server's backend process on
/// PostgreSQL. The ping is there to find connections left broken or inside a transaction by
/// a cancelled query. These run single statements and never a transaction; a statement
/// cancelled mid-way is no hazard either: a SQLite connection's worker thread runs commands
/// in order, and a PostgreSQL connection drains the answers still owed to it (sqlx counts
/// them) before it sends the next statement. A connection whose statement failed for any
/// reason but the database's own error (a lost socket, a protocol error) is closed instead
/// of going back ([`Pooled::settle`]), which is how a PostgreSQL restart is survived. Read
/// transactions keep sqlx's pool. On SQLite there are up to twice `db_max_connections` read
/// connections (the second set opens only when used); on PostgreSQL the budget is split,
/// half for these readers and half for transactions, because the server's connections are
/// shared by every process of a deployment.
pub(super) struct Readers<C: sqlx::Connection> {
    options: C::Options,
    idle: std::sync::Mutex<Vec<C>>,
    /// One per connection, open or not: at most `max` exist.
    permits: Arc<tokio::sync::Semaphore>,
}

impl<C: sqlx::Connection> std::fmt::Debug for Readers<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl<C: sqlx::Connection> Readers<C>
where
    C::Options: sqlx::ConnectOptions<Connection = C>,
{
    /// How long a query waits for a free connection before failing (sqlx's pool default).
    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

    pub(super) fn new(options: C::Options, max: u32) -> Self {
        Self {
            options,
            idle: Default::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(max.max(1) as usize)),
        }
    }

    /// Closes every idle connection (after one was found dead: the others likely are too).
    fn close_idle(&self) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    async fn acquire(self: &Arc<Self>) -> Result<Reader<C>, DbError> {
        let permit =
            tokio::time::timeout(Self::ACQUIRE_TIMEOUT, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
                .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.options.connect().await?,
        };
        Ok(Reader {
            conn: Some(conn),
            readers: self.clone(),
            _permit: permit,
        })
    }
}

/// A reader connection on loan from [`Readers`]; dropping it gives it back.
struct Reader<C: sqlx::Connection> {
    conn: Option<C>,
    readers: Arc<Readers<C>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<C: sqlx::Connection> Reader<C> {
    fn conn(&mut self) -> &mut C {
        self.conn
            .as_mut()
            .expect("held until dropped or settled broken")
    }
}

impl<C: sqlx::Connection> Drop for Reader<C> {
    fn drop(&mut self) {
        // Back to the idle list before the permit is released (fields drop after this).
        if let Some(conn) = self.conn.take() {
            self.readers
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(conn);
        }
    }
}

/// Runs `$statements` (an expression that awaits, with `$conn` a [`Conn`] of a reader
/// connection) and settles the connection ([`Pooled::settle`]). A connection found dead
/// (the server restarted, the socket was cut) fails nothing: it and the idle ones, opened
/// before the same event, are closed, and the statements run once more on a new
/// connection. They only read, so running them again is harmless. A macro because the
/// statements borrow the caller's arguments across awaits, which async closures cannot yet
/// do in futures that must be `Send` for every lifetime (axum handlers).
macro_rules! read {
    ($db:expr, |$conn:ident| $statements:expr) => {{
        let mut reader = $db.reader().await?;
        let result = {
            #[allow(unused_mut)]
            let mut $conn = reader.conn();
            $statements
        };
        match reader.settle_or_retry(result) {
            Some(settled) => settled,
            None => {
                drop(reader);
                let mut reader = $db.reader().await?;
                let result = {
                    #[allow(unused_mut)]
                    let mut $conn = reader.conn();
                    $statements
                };
                reader.settle(result)
            }
        }
    }};
}
impl Db {
    /// Runs a read-only statement and decodes its rows by `columns`.
    pub async fn fetch_all(
        &self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<Vec<Row>, DbError> {
        read!(self, |conn| conn.fetch_all(stmt, columns).await)
    }

    /// Runs a read-only statement and decodes its rows as `T`.
    pub async fn fetch_typed<T: TypedRow>(
        &self,
        stmt: &impl QueryStatementWriter,
    ) -> Result<Vec<T>, DbError> {
        read!(self, |conn| conn.fetch_typed(stmt).await)
    }

    /// A list page (`rows`, skipping `skipped` rows of the result, at most `per_page`) and
    /// the size of the whole result (`count`), on one reader connection.
    ///
    /// On PostgreSQL both come back from one statement: the page with the COUNT as a scalar
    /// subquery in its last column (an uncorrelated subquery, run once, and only when the
    /// page has a row), one round trip to the server instead of two, and the page and its
    /// count read from one snapshot. On SQLite, which has no round trip to save, the page
    /// runs first and a page that is neither empty nor full is the last one and tells the
    /// size itself, so the COUNT runs only when it cannot. On both, an empty first page
    /// means an empty result: the COUNT runs only for an empty page past the first.
    pub async fn fetch_page(
        &self,
        rows: &SelectStatement,
        columns: &[&Column],
        count: &SelectStatement,
        skipped: u64,
        per_page: u64,
    ) -> Result<(Vec<Row>, i64), DbError> {
        let counted = match self.backend() {
            Backend::Postgres => Some(with_count(rows, count)),
            Backend::Sqlite => None,
        };
        read!(self, |conn| async {
            let (page, counted_total) = match &counted {
                Some(counted) => conn.fetch_all_counted(counted, columns).await?,
                None => (conn.fetch_all(rows, columns).await?, None),
            };
            let total = match counted_total {
                Some(total) => total,
                None if page.is_empty() && skipped == 0 => 0,
                None if !page.is_empty() && (page.len() as u64) < per_page => {
                    (skipped + page.len() as u64) as i64
                }
                None => conn.fetch_i64(count).await?,
            };
            Ok((page, total))
        }
        .await)
    }

    /// Runs a read-only statement that yields at most one row.
    pub async fn fetch_optional(
        &self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<Option<Row>, DbError> {
        Ok(self.fetch_all(stmt, columns).await?.into_iter().next())
    }

    /// Runs a read-only statement already rendered for this database (see [`Rendered`])
    /// that yields at most one row.
    pub async fn fetch_optional_rendered(
        &self,
        stmt: Rendered,
        columns: &[&Column],
    ) -> Result<Option<Row>, DbError> {
        let rows = read!(self, |conn| conn
            .fetch_all_sql(&stmt.sql, stmt.values.clone(), columns)
            .await)?;
        Ok(rows.into_iter().next())
    }

    /// Runs a statement whose first column is an integer (a count).
    pub async fn fetch_i64(&self, stmt: &impl QueryStatementWriter) -> Result<i64, DbError> {
        read!(self, |conn| conn.fetch_i64(stmt).await)
    }

    /// A connection for one read-only statement (or a few, as in [`Db::fetch_page`]): on
    /// SQLite from the reader pool, so reads never queue behind the single writer.
    async fn reader(&self) -> Result<Pooled, DbError> {
        Ok(match &self.inner {
            Inner::Sqlite {
                readers: Some(readers),
                ..
            } => Pooled::SqliteReader(readers.acquire().await?),
            Inner::Sqlite { read, .. } => Pooled::Sqlite(read.acquire().await?),
            Inner::Postgres { readers, .. } => Pooled::PostgresReader(readers.acquire().await?),
        })
    }
}

/// `rows` with `count` as a scalar subquery in one more, last, column (see
/// [`Db::fetch_page`]). The subquery is uncorrelated, so the database runs it once per
/// statement, not per row.
fn with_count(rows: &SelectStatement, count: &SelectStatement) -> SelectStatement {
    let mut counted = rows.clone();
    counted.expr_as(
        SimpleExpr::SubQuery(None, Box::new(count.clone().into_sub_query_statement())),
        Alias::new("num_results"),
    );
    counted
}

/// A connection taken from either backend's pool (see [`Db::reader`]).
enum Pooled {
    /// In memory: the writer's one connection, through sqlx's pool.
    Sqlite(PoolConnection<Sqlite>),
    SqliteReader(Reader<SqliteConnection>),
    PostgresReader(Reader<PgConnection>),
}

impl Pooled {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Sqlite(c) => Conn::Sqlite(c),
            Self::SqliteReader(r) => Conn::Sqlite(r.conn()),
            Self::PostgresReader(r) => Conn::Postgres(r.conn()),
        }
    }

    /// Passes a statement's `result` through. A reader connection whose statement failed
    /// for any reason but the database's own refusal (a lost socket, a protocol error, a
    /// row that would not decode) is closed instead of going back to the idle list, so a
    /// broken connection fails one statement, not every statement that draws it later.
    fn settle<T>(&mut self, result: Result<T, DbError>) -> Result<T, DbError> {
        let broken = matches!(&result, Err(DbError::Other(e))
            if connection_lost(e) || !matches!(e, sqlx::Error::Database(_)));
        if broken {
            match self {
                Self::Sqlite(_) => {}
                Self::SqliteReader(r) => drop(r.conn.take()),
                Self::PostgresReader(r) => drop(r.conn.take()),
            }
        }
        result
    }

    /// [`Pooled::settle`], except for a connection found dead: then it and every idle
    /// connection of its kind are closed and `None` asks the caller to run its statements
    /// again on a new one (see [`read!`]).
    fn settle_or_retry<T>(&mut self, result: Result<T, DbError>) -> Option<Result<T, DbError>> {
        let dead = matches!(&result, Err(DbError::Other(e)) if connection_lost(e));
        let settled = self.settle(result);
        if !dead {
            return Some(settled);
        }
        tracing::debug!(error = ?settled.err(), "a reader connection was dead; reading again on a new one");
        match self {
            Self::Sqlite(_) => {}
            Self::SqliteReader(r) => r.readers.close_idle(),
            Self::PostgresReader(r) => r.readers.close_idle(),
        }
        None
    }
}

/// `true` when `e` says the connection itself is gone: the socket failed or the server
/// ended the session (SQLSTATE class 08, connection exception, or 57P, operator
/// intervention: an administrator's `pg_terminate_backend`, a server shutting down).
pub(super) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}
