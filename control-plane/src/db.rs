//! The database: SQLite (the embedded default) or PostgreSQL, behind one type.
//!
//! Statements are built with sea-query and their values are always bound
//! parameters. Rows are decoded by the catalogue's column types into JSON
//! objects in catalogue order, so both backends return identical bodies.
//!
//! SQLite runs in WAL mode with a pool of readers and a single writer
//! connection: write transactions queue for the writer instead of failing
//! with `SQLITE_BUSY`, which gives them the same serialisable behaviour the
//! PostgreSQL paths get from row locks.
//!
//! Writes on SQLite are group-committed (see [`Writer`]): each [`Tx`] is a
//! savepoint inside a batch transaction on the writer, and the batch commits
//! once for every transaction that queued behind it. Transactions still run
//! one at a time in queue order; a [`Tx::commit`] returns only after the batch
//! holding it is durable, so nobody learns of a write before it commits.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use sea_query::{
    PostgresQueryBuilder, QueryBuilder, QueryStatementWriter, SqliteQueryBuilder, Value, Values,
};
use serde_json::{Map, Value as Json};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::sqlite::{SqliteRow, SqliteTransactionManager};
use sqlx::{
    ConnectOptions as _, PgConnection, PgPool, Row as _, Sqlite, SqliteConnection, SqlitePool,
    TransactionManager as _,
};
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

use crate::catalogue::{Column, ColumnType};
use crate::schema::Backend;
use crate::values::{format_datetime, DATETIME_FORMAT};

/// A decoded row: column name to JSON value, in select order.
pub type Row = Map<String, Json>;

/// A typed row of a hand-written select: a struct with
/// `#[derive(sqlx::FromRow)]` whose fields decode on both backends (see
/// [`Db::fetch_typed`]). Its fields are read by column name, so the select
/// must name (or alias) its columns as the fields are named.
pub trait TypedRow:
    for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> TypedRow for T where
    T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

/// Database failures, classified so the HTTP layer can answer 400 for the
/// client's mistakes and 500 only for the server's.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A unique constraint rejected the write.
    #[error("{}", field_message("must be unique; the value is already used", .field))]
    Unique { field: Option<String> },
    /// A foreign key rejected the write (missing target, or still referenced).
    #[error("{}", field_message("refers to a row that does not exist, or the row is still referenced", .field))]
    ForeignKey { field: Option<String> },
    /// A not-null constraint rejected the write.
    #[error("{}", field_message("may not be null", .field))]
    NotNull { field: Option<String> },
    /// A check constraint (an `options` list) rejected the write.
    #[error("{}", field_message("has a value outside its allowed options", .field))]
    Check { field: Option<String> },
    /// PostgreSQL refused a text value (it cannot store the NUL character).
    #[error("{}", field_message("contains a character that cannot be stored (NUL)", .field))]
    Text { field: Option<String> },
    /// Anything else: connection loss, bad SQL. Logged, answered with 500.
    #[error("database error: {0}")]
    Other(#[from] sqlx::Error),
    /// A migration failed to apply.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL is not usable.
    #[error("bad database URL '{url}': {reason}")]
    Url { url: String, reason: String },
}

fn field_message(what: &str, field: &Option<String>) -> String {
    match field {
        Some(f) => format!("field '{f}' {what}"),
        None => format!("a field {what}"),
    }
}

impl DbError {
    /// `true` when the error is the client's doing (a constraint violation).
    pub fn is_constraint(&self) -> bool {
        matches!(
            self,
            Self::Unique { .. }
                | Self::ForeignKey { .. }
                | Self::NotNull { .. }
                | Self::Check { .. }
                | Self::Text { .. }
        )
    }

    fn classify(err: sqlx::Error) -> Self {
        let sqlx::Error::Database(db) = &err else {
            return Self::Other(err);
        };
        let message = db.message().to_string();
        if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            let from_detail = || {
                // "Key (username)=(bob) already exists."
                pg.detail()
                    .and_then(|d| d.strip_prefix("Key ("))
                    .and_then(|d| d.split(')').next())
                    .map(str::to_string)
            };
            let column = pg.column().map(str::to_string).or_else(from_detail);
            return match pg.code() {
                "23505" => Self::Unique { field: column },
                "23503" => Self::ForeignKey { field: column },
                "23502" => Self::NotNull { field: column },
                "23514" => Self::Check {
                    field: column.or_else(|| check_column(&message)),
                },
                // character_not_in_repertoire: a NUL in a bound string.
                "22021" => Self::Text { field: column },
                _ => Self::Other(err),
            };
        }
        // SQLite: "UNIQUE constraint failed: user.username"
        let column_after = |prefix: &str| {
            message
                .strip_prefix(prefix)
                .and_then(|rest| rest.split(',').next())
                .and_then(|c| c.trim().rsplit('.').next())
                .map(str::to_string)
        };
        if message.starts_with("UNIQUE constraint failed") {
            Self::Unique {
                field: column_after("UNIQUE constraint failed: "),
            }
        } else if message.starts_with("NOT NULL constraint failed") {
            Self::NotNull {
                field: column_after("NOT NULL constraint failed: "),
            }
        } else if message.starts_with("FOREIGN KEY constraint failed") {
            Self::ForeignKey { field: None }
        } else if message.starts_with("CHECK constraint failed") {
            Self::Check {
                field: check_column(&message),
            }
        } else {
            Self::Other(err)
        }
    }
}

/// Finds the quoted column name in a CHECK failure message.
fn check_column(message: &str) -> Option<String> {
    let start = message.find('"')? + 1;
    let end = start + message[start..].find('"')?;
    Some(message[start..end].to_string())
}

/// A connection pool for one of the two backends.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Sqlite {
        /// Read-only connections for read transactions ([`Db::begin_read`]); in memory, the
        /// writer's one connection.
        read: SqlitePool,
        /// Read-only connections for single statements ([`Db::reader`]); `None` in memory.
        readers: Option<Arc<Readers<SqliteConnection>>>,
        write: Writer,
    },
    Postgres {
        /// For transactions ([`Db::begin`], [`Db::begin_read`]).
        pool: PgPool,
        /// For single statements.
        readers: Arc<Readers<PgConnection>>,
    },
}

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
struct Readers<C: sqlx::Connection> {
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

    fn new(options: C::Options, max: u32) -> Self {
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
    /// Connects to `url` (`sqlite://path`, `sqlite::memory:`, `postgres://...`).
    /// A SQLite file and its folder are created when missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, DbError> {
        let bad = |reason: String| DbError::Url {
            url: url.to_string(),
            reason,
        };
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| bad(e.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                // `like` is case-sensitive in the query language, as on PostgreSQL.
                .pragma("case_sensitive_like", "ON")
                .busy_timeout(Duration::from_secs(10));
            if let Some(parent) = opts.get_filename().parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|e| bad(e.to_string()))?;
                }
            }
            // An in-memory database exists per connection: share one.
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            // No ping before each acquire (sqlx's default): a SQLite connection is a file
            // handle in this process, it cannot have gone away, and the ping is a round trip
            // to the connection's worker thread on every query (7% of a GET's CPU, issue 20).
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .connect_with(opts.clone())
                .await?;
            let (read, readers) = if memory {
                (write.clone(), None)
            } else {
                let read_only = opts.read_only(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .test_before_acquire(false)
                    .connect_with(read_only.clone())
                    .await?;
                (
                    pool,
                    Some(Arc::new(Readers::new(read_only, max_connections))),
                )
            };
            let db = Self {
                inner: Inner::Sqlite {
                    read,
                    readers,
                    write: Writer::new(write),
                },
            };
            if db.sqlite_shared_page_cache().await? {
                // Still correct, only slow: say so loudly instead of refusing to serve.
                tracing::error!(
                    "this binary's SQLite was compiled with SQLITE_ENABLE_MEMORY_MANAGEMENT: \
                     all connections share one page cache behind a global mutex, so reads \
                     serialise; build from the repository so .cargo/config.toml's \
                     LIBSQLITE3_FLAGS applies"
                );
            }
            Ok(db)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url).map_err(|e| bad(e.to_string()))?;
            // One budget for the process, split between single reads and transactions: the
            // server's `max_connections` is shared by every process of a deployment (the
            // scaled topology's cluster test ran out of it, "too many clients", when each
            // process opened the budget twice over).
            let total = max_connections.max(2);
            let for_reads = total / 2;
            // No ping before each acquire (sqlx's default), a round trip to the server per
            // transaction: a connection the server dropped fails its transaction's first
            // statement, and sqlx's ping when it comes back closes it ([`Db::begin`] draws
            // again for that case).
            let pool = PgPoolOptions::new()
                .max_connections(total - for_reads)
                .acquire_timeout(Duration::from_secs(10))
                .test_before_acquire(false)
                .connect_with(opts.clone())
                .await?;
            Ok(Self {
                inner: Inner::Postgres {
                    pool,
                    readers: Arc::new(Readers::new(opts, for_reads)),
                },
            })
        } else {
            Err(bad("expected a sqlite: or postgres: URL".into()))
        }
    }

    /// Which SQL dialect this database speaks.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite { .. } => Backend::Sqlite,
            Inner::Postgres { .. } => Backend::Postgres,
        }
    }

    /// Applies the numbered migrations of this backend that have not run yet.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match &self.inner {
            Inner::Sqlite { write, .. } => {
                // Through the writer's queue, so migrations never interleave with a batch.
                let mut held = write.lock().await?;
                sqlx::migrate!("./migrations/sqlite")
                    .run(held.conn())
                    .await?;
            }
            Inner::Postgres { pool, .. } => {
                sqlx::migrate!("./migrations/postgres").run(pool).await?
            }
        }
        Ok(())
    }

    /// `true` when the linked SQLite shares one page cache between all
    /// connections (compiled with `SQLITE_ENABLE_MEMORY_MANAGEMENT`), which
    /// puts every read behind one global mutex. `false` on PostgreSQL.
    pub async fn sqlite_shared_page_cache(&self) -> Result<bool, DbError> {
        let Inner::Sqlite { read, .. } = &self.inner else {
            return Ok(false);
        };
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(read)
            .await?;
        Ok(options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"))
    }

    /// Checks the database answers (for `/ready`).
    pub async fn ping(&self) -> Result<(), DbError> {
        match &self.inner {
            Inner::Sqlite { read, .. } => sqlx::query("SELECT 1").execute(read).await.map(drop)?,
            Inner::Postgres { pool, .. } => {
                sqlx::query("SELECT 1").execute(pool).await.map(drop)?
            }
        }
        Ok(())
    }

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
    /// the size of the whole result (`count`), on one reader connection. A page that is
    /// neither empty nor full is the last one and tells the size itself, so the COUNT runs
    /// only when it cannot.
    pub async fn fetch_page(
        &self,
        rows: &impl QueryStatementWriter,
        columns: &[&Column],
        count: &impl QueryStatementWriter,
        skipped: u64,
        per_page: u64,
    ) -> Result<(Vec<Row>, i64), DbError> {
        read!(self, |conn| async {
            let page = conn.fetch_all(rows, columns).await?;
            let total = if !page.is_empty() && (page.len() as u64) < per_page {
                (skipped + page.len() as u64) as i64
            } else {
                conn.fetch_i64(count).await?
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

    /// Starts a write transaction (on SQLite: on the single writer connection).
    pub async fn begin(&self) -> Result<Tx, DbError> {
        // On SQLite this includes the wait for the single writer: the
        // figure that grows first when writes queue up.
        timed("begin", async {
            Ok(match &self.inner {
                Inner::Sqlite { write, .. } => Tx::Sqlite(write.begin().await?),
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

/// The SQLite writer: one connection, with group commit.
///
/// A [`Tx`] locks the writer (a FIFO queue, so the one-writer rule and the
/// order in which transactions run are unchanged), opens a savepoint inside
/// the batch transaction (opening that first when none is open), and on
/// commit releases its savepoint and hands the writer to the next in the
/// queue, then waits for the batch to commit. The first commit of a batch
/// queues a flush behind everyone already waiting, so one COMMIT (one WAL
/// append of the pages the batch touched) covers all of them; under no load
/// the flush runs straight away and a batch is one transaction.
///
/// A transaction dropped without commit rolls back to its savepoint, which
/// leaves the rest of the batch alone. When the COMMIT itself fails, every
/// transaction of the batch gets the error: each was answered with nothing
/// yet, so none is lost silently. Because a batch commits as a whole and its
/// transactions ran in queue order, what readers see is always a prefix of
/// that order, which keeps the ordering `enable_history` and the DCM ledger
/// rely on.
#[derive(Debug, Clone)]
struct Writer {
    pool: SqlitePool,
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
    /// A flush task is queued for the open batch.
    flush_queued: bool,
}

impl Writer {
    fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            batch: Arc::new(Mutex::new(Batch::default())),
            batches: Arc::default(),
        }
    }

    /// Waits for the writer. The writer is handed on when the returned value drops,
    /// however that happens (a cancelled request included).
    async fn lock(&self) -> Result<Held, sqlx::Error> {
        let mut held = Held {
            writer: self.clone(),
            guard: Some(self.batch.clone().lock_owned().await),
        };
        let batch = held.batch();
        if batch.conn.is_none() {
            batch.conn = Some(self.pool.acquire().await?);
        }
        Ok(held)
    }

    async fn begin(&self) -> Result<SqliteTx, sqlx::Error> {
        let mut held = self.lock().await?;
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
    async fn flush(self) {
        let mut guard = self.batch.clone().lock_owned().await;
        guard.flush_queued = false;
        if !guard.open {
            return;
        }
        let conn = guard
            .conn
            .as_mut()
            .expect("an open batch holds the connection");
        let result = SqliteTransactionManager::commit(conn).await;
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
struct Held {
    writer: Writer,
    guard: Option<OwnedMutexGuard<Batch>>,
}

impl Held {
    fn batch(&mut self) -> &mut Batch {
        self.guard.as_mut().expect("held until dropped")
    }

    fn conn(&mut self) -> &mut SqliteConnection {
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
        if !batch.open {
            batch.conn = None;
        } else if !batch.flush_queued {
            batch.flush_queued = true;
            tokio::spawn(self.writer.clone().flush());
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
    fn conn(&mut self) -> &mut SqliteConnection {
        self.held.conn()
    }

    async fn commit(mut self) -> Result<(), sqlx::Error> {
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
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
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

/// A borrowed connection of either backend: the one place that binds values
/// and decodes rows.
enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

/// The sea-query builder that renders SQL for `backend`.
pub fn query_builder(backend: Backend) -> &'static dyn QueryBuilder {
    match backend {
        Backend::Sqlite => &SqliteQueryBuilder,
        Backend::Postgres => &PostgresQueryBuilder,
    }
}

/// A statement already rendered to SQL for this database, with its bound values; for hot
/// paths that render once and reuse the text (see [`RenderCache`]).
pub struct Rendered {
    pub sql: Arc<str>,
    pub values: Values,
}

/// SQL rendered once per key and reused, for statements whose text depends only on the key
/// (a table and a permission level, say) and not on their bound values: rendering with
/// sea-query was 13% of a GET by primary key's CPU (issue 20).
pub struct RenderCache<K> {
    backend: Backend,
    rendered: std::sync::RwLock<std::collections::HashMap<K, Arc<str>>>,
}

impl<K: std::hash::Hash + Eq> RenderCache<K> {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            rendered: Default::default(),
        }
    }

    /// The statement for `key` with `values` bound. `build` runs only on the key's first use;
    /// its SQL is kept only when the values it binds are exactly `values`, so a statement
    /// that binds something the key does not determine is rendered afresh each time
    /// instead of reused with the wrong values.
    pub fn render<S: QueryStatementWriter>(
        &self,
        key: K,
        values: Vec<Value>,
        build: impl FnOnce() -> S,
    ) -> Rendered {
        let cached = self
            .rendered
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&key)
            .cloned();
        if let Some(sql) = cached {
            return Rendered {
                sql,
                values: Values(values),
            };
        }
        let (sql, bound) = build().build_any(query_builder(self.backend));
        let sql: Arc<str> = sql.into();
        if bound.0 == values {
            self.rendered
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(key, sql.clone());
        }
        Rendered { sql, values: bound }
    }
}

impl Conn<'_> {
    fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    fn build(&self, stmt: &impl QueryStatementWriter) -> (String, Values) {
        stmt.build_any(query_builder(self.backend()))
    }

    async fn fetch_all(
        &mut self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<Vec<Row>, DbError> {
        let (sql, values) = self.build(stmt);
        self.fetch_all_sql(&sql, values, columns).await
    }

    /// [`Conn::fetch_all`] for SQL already rendered for this backend.
    async fn fetch_all_sql(
        &mut self,
        sql: &str,
        values: Values,
        columns: &[&Column],
    ) -> Result<Vec<Row>, DbError> {
        self.fetch_decoded_sql(
            sql,
            values,
            |r| decode_sqlite(r, columns),
            |r| decode_pg(r, columns),
        )
        .await
    }

    async fn fetch_typed<T: TypedRow>(
        &mut self,
        stmt: &impl QueryStatementWriter,
    ) -> Result<Vec<T>, DbError> {
        self.fetch_decoded(stmt, |r| Ok(T::from_row(r)?), |r| Ok(T::from_row(r)?))
            .await
    }

    /// Runs a statement and decodes each row with the backend's decoder.
    async fn fetch_decoded<T>(
        &mut self,
        stmt: &impl QueryStatementWriter,
        sqlite: impl Fn(&SqliteRow) -> Result<T, DbError>,
        pg: impl Fn(&PgRow) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let (sql, values) = self.build(stmt);
        self.fetch_decoded_sql(&sql, values, sqlite, pg).await
    }

    /// [`Conn::fetch_decoded`] for SQL already rendered for this backend.
    async fn fetch_decoded_sql<T>(
        &mut self,
        sql: &str,
        values: Values,
        sqlite: impl Fn(&SqliteRow) -> Result<T, DbError>,
        pg: impl Fn(&PgRow) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        timed("fetch", async {
            match self {
                Self::Sqlite(conn) => {
                    let rows = bind_sqlite(sqlx::query(sql), values)
                        .fetch_all(&mut **conn)
                        .await;
                    rows.map_err(DbError::classify)
                        .and_then(|rows| rows.iter().map(&sqlite).collect())
                }
                Self::Postgres(conn) => {
                    let rows = bind_pg(sqlx::query(sql), values)
                        .fetch_all(&mut **conn)
                        .await;
                    rows.map_err(DbError::classify)
                        .and_then(|rows| rows.iter().map(&pg).collect())
                }
            }
        })
        .await
    }

    async fn fetch_i64(&mut self, stmt: &impl QueryStatementWriter) -> Result<i64, DbError> {
        let (sql, values) = self.build(stmt);
        timed("count", async {
            match self {
                Self::Sqlite(conn) => {
                    let row = bind_sqlite(sqlx::query(&sql), values)
                        .fetch_one(&mut **conn)
                        .await
                        .map_err(DbError::classify)?;
                    Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
                }
                Self::Postgres(conn) => {
                    let row = bind_pg(sqlx::query(&sql), values)
                        .fetch_one(&mut **conn)
                        .await
                        .map_err(DbError::classify)?;
                    Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
                }
            }
        })
        .await
    }

    async fn execute(&mut self, stmt: &impl QueryStatementWriter) -> Result<u64, DbError> {
        let (sql, values) = self.build(stmt);
        let done = timed("execute", async {
            match self {
                Self::Sqlite(conn) => bind_sqlite(sqlx::query(&sql), values)
                    .execute(&mut **conn)
                    .await
                    .map(|r| r.rows_affected()),
                Self::Postgres(conn) => bind_pg(sqlx::query(&sql), values)
                    .execute(&mut **conn)
                    .await
                    .map(|r| r.rows_affected()),
            }
        })
        .await;
        done.map_err(DbError::classify)
    }
}

/// Runs one database operation and records its latency, failed ones included; `op` is one of begin, fetch,
/// count, execute, commit (a bounded label).
async fn timed<T>(op: &'static str, work: impl std::future::Future<Output = T>) -> T {
    // Failures are timed too: a `begin` that times out waiting for the SQLite writer is
    // exactly the latency this histogram is for.
    let started = std::time::Instant::now();
    let out = work.await;
    metrics::histogram!("smartsolar_db_query_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    out
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// A sea-query value narrowed to what both backends bind: every integer as
/// `i64`, every float as `f64`, a char as text. The widening is written once;
/// the two binders below differ only where the backends store differently
/// (JSON, dates, timestamps).
enum Bind {
    Bool(Option<bool>),
    Int(Option<i64>),
    Float(Option<f64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Json(Option<Json>),
    Date(Option<NaiveDate>),
    DateTime(Option<NaiveDateTime>),
}

impl From<Value> for Bind {
    fn from(value: Value) -> Self {
        match value {
            Value::Bool(v) => Self::Bool(v),
            Value::TinyInt(v) => Self::Int(v.map(i64::from)),
            Value::SmallInt(v) => Self::Int(v.map(i64::from)),
            Value::Int(v) => Self::Int(v.map(i64::from)),
            Value::BigInt(v) => Self::Int(v),
            Value::TinyUnsigned(v) => Self::Int(v.map(i64::from)),
            Value::SmallUnsigned(v) => Self::Int(v.map(i64::from)),
            Value::Unsigned(v) => Self::Int(v.map(i64::from)),
            // LIMIT and OFFSET: never above i64::MAX (see `query::Page::offset`).
            Value::BigUnsigned(v) => Self::Int(v.map(|v| v as i64)),
            Value::Float(v) => Self::Float(v.map(f64::from)),
            Value::Double(v) => Self::Float(v),
            Value::String(v) => Self::Text(v.map(|s| *s)),
            Value::Char(v) => Self::Text(v.map(|c| c.to_string())),
            Value::Bytes(v) => Self::Bytes(v.map(|b| *b)),
            Value::Json(v) => Self::Json(v.map(|j| *j)),
            Value::ChronoDate(v) => Self::Date(v.map(|d| *d)),
            Value::ChronoDateTime(v) => Self::DateTime(v.map(|t| *t)),
            other => Self::Text(Some(format!("{other:?}"))),
        }
    }
}

/// Binds sea-query values for SQLite. Timestamps are bound as fixed-width
/// ISO text (`DATETIME_FORMAT`) so that stored values sort and compare
/// correctly and come back exactly as the API returns them.
fn bind_sqlite(mut query: SqliteQuery<'_>, values: Values) -> SqliteQuery<'_> {
    for value in values.0 {
        query = match Bind::from(value) {
            Bind::Bool(v) => query.bind(v),
            Bind::Int(v) => query.bind(v),
            Bind::Float(v) => query.bind(v),
            Bind::Text(v) => query.bind(v),
            Bind::Bytes(v) => query.bind(v),
            Bind::Json(v) => query.bind(v.map(|j| j.to_string())),
            Bind::Date(v) => query.bind(v.map(|d| d.format("%Y-%m-%d").to_string())),
            Bind::DateTime(v) => query.bind(v.map(|t| format_datetime(&t))),
        };
    }
    query
}

/// Binds sea-query values for PostgreSQL with their native types.
fn bind_pg(mut query: PgQuery<'_>, values: Values) -> PgQuery<'_> {
    for value in values.0 {
        query = match Bind::from(value) {
            Bind::Bool(v) => query.bind(v),
            Bind::Int(v) => query.bind(v),
            Bind::Float(v) => query.bind(v),
            Bind::Text(v) => query.bind(v),
            Bind::Bytes(v) => query.bind(v),
            Bind::Json(v) => query.bind(v.map(sqlx::types::Json)),
            Bind::Date(v) => query.bind(v),
            Bind::DateTime(v) => query.bind(v),
        };
    }
    query
}

fn decode_sqlite(row: &sqlx::sqlite::SqliteRow, columns: &[&Column]) -> Result<Row, DbError> {
    let mut out = Map::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let v = match c.ty {
            ColumnType::Int => row.try_get::<Option<i64>, _>(i)?.map(Json::from),
            ColumnType::Float => row.try_get::<Option<f64>, _>(i)?.map(Json::from),
            ColumnType::Boolean => row.try_get::<Option<bool>, _>(i)?.map(Json::from),
            ColumnType::Array => row
                .try_get::<Option<String>, _>(i)?
                .map(|s| serde_json::from_str(&s).unwrap_or(Json::String(s))),
            ColumnType::Datetime => row.try_get::<Option<String>, _>(i)?.map(|s| {
                // Rows written by this server are already canonical; rows
                // written by hand may not be.
                match NaiveDateTime::parse_from_str(&s, DATETIME_FORMAT) {
                    Ok(_) => Json::String(s),
                    Err(_) => Json::String(
                        crate::values::parse_datetime(&s)
                            .map(|t| format_datetime(&t))
                            .unwrap_or(s),
                    ),
                }
            }),
            ColumnType::String | ColumnType::Text | ColumnType::Date => {
                row.try_get::<Option<String>, _>(i)?.map(Json::from)
            }
        };
        out.insert(c.name.clone(), v.unwrap_or(Json::Null));
    }
    Ok(out)
}

fn decode_pg(row: &sqlx::postgres::PgRow, columns: &[&Column]) -> Result<Row, DbError> {
    let mut out = Map::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let v = match c.ty {
            ColumnType::Int => row.try_get::<Option<i64>, _>(i)?.map(Json::from),
            ColumnType::Float => row.try_get::<Option<f64>, _>(i)?.map(Json::from),
            ColumnType::Boolean => row.try_get::<Option<bool>, _>(i)?.map(Json::from),
            ColumnType::Array => row.try_get::<Option<Json>, _>(i)?,
            ColumnType::Datetime => row
                .try_get::<Option<NaiveDateTime>, _>(i)?
                .map(|t| Json::from(format_datetime(&t))),
            ColumnType::Date => row
                .try_get::<Option<NaiveDate>, _>(i)?
                .map(|d| Json::from(d.format("%Y-%m-%d").to_string())),
            ColumnType::String | ColumnType::Text => {
                row.try_get::<Option<String>, _>(i)?.map(Json::from)
            }
        };
        out.insert(c.name.clone(), v.unwrap_or(Json::Null));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: the bundled SQLite must be built without the global page-cache
    /// mutex (`.cargo/config.toml` sets `LIBSQLITE3_FLAGS`). Fails when a build
    /// loses that setting.
    #[tokio::test]
    async fn sqlite_built_without_memory_management() {
        let db = Db::connect("sqlite::memory:", 2).await.unwrap();
        let Inner::Sqlite { read, .. } = &db.inner else {
            unreachable!("a sqlite: URL opens SQLite")
        };
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(read)
            .await
            .unwrap();
        // The list is really read: the bundled build always names its threading mode.
        assert!(
            options.iter().any(|o| o.starts_with("THREADSAFE=")),
            "{options:?}"
        );
        assert!(
            !db.sqlite_shared_page_cache().await.unwrap(),
            "SQLite compiled with SQLITE_ENABLE_MEMORY_MANAGEMENT: {options:?}"
        );
    }

    /// The rendered-SQL cache reuses a rendering with new values, and never keeps one whose
    /// statement binds more than the caller's values (it would bind them wrongly later).
    #[tokio::test]
    async fn render_cache_reuses_sql_only_when_the_key_determines_it() {
        use sea_query::{Alias, Expr, Query};
        let db = Db::connect("sqlite::memory:", 2).await.unwrap();
        // In memory the readers share the writer's one connection, so this writes.
        let Inner::Sqlite { read, .. } = &db.inner else {
            unreachable!("a sqlite: URL opens SQLite")
        };
        sqlx::raw_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, owner INTEGER); INSERT INTO t VALUES (1, 10), (2, 20)")
            .execute(read)
            .await
            .unwrap();
        let by_id = |id: i64| {
            Query::select()
                .column(Alias::new("owner"))
                .from(Alias::new("t"))
                .and_where(Expr::col(Alias::new("id")).eq(id))
                .to_owned()
        };
        let owner = Column::computed("owner", ColumnType::Int);
        let cache = RenderCache::new(db.backend());
        let mut builds = 0;
        for (id, want) in [(1, 10), (2, 20), (1, 10)] {
            let stmt = cache.render("by id", vec![Value::BigInt(Some(id))], || {
                builds += 1;
                by_id(id)
            });
            let row = db.fetch_optional_rendered(stmt, &[&owner]).await.unwrap();
            assert_eq!(row.unwrap()["owner"], want, "id {id}");
        }
        assert_eq!(builds, 1, "rendered once, then reused with each id");

        // A statement that also binds a value the key does not carry: rendered every time.
        let mut builds = 0;
        for (id, owner_id, found) in [(1, 10, true), (1, 20, false)] {
            let stmt = cache.render("by id and owner", vec![Value::BigInt(Some(id))], || {
                builds += 1;
                by_id(id)
                    .and_where(Expr::col(Alias::new("owner")).eq(owner_id))
                    .to_owned()
            });
            let row = db.fetch_optional_rendered(stmt, &[&owner]).await.unwrap();
            assert_eq!(row.is_some(), found, "owner {owner_id}");
        }
        assert_eq!(builds, 2);
    }
}

#[cfg(test)]
mod group_commit_tests {
    //! Group commit on the SQLite writer, attacked: concurrent writers with
    //! rollbacks and failing statements among them, readers watching the order,
    //! cancelled transactions. Real SQLite files, no doubles.
    use std::collections::BTreeSet;
    use std::time::Duration;

    use sea_query::{Alias, Expr, Query};

    use super::*;

    async fn open() -> (tempfile::TempDir, Db, Writer, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, 4).await.unwrap();
        let Inner::Sqlite { read, write, .. } = &db.inner else {
            unreachable!()
        };
        let (read, write) = (read.clone(), write.clone());
        let mut held = write.lock().await.unwrap();
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
