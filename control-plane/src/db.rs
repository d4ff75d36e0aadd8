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

use std::str::FromStr;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use sea_query::{
    PostgresQueryBuilder, QueryBuilder, QueryStatementWriter, SqliteQueryBuilder, Value, Values,
};
use serde_json::{Map, Value as Json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Row as _, SqliteConnection, SqlitePool};

use crate::catalogue::{Column, ColumnType};
use crate::schema::Backend;
use crate::values::{format_datetime, DATETIME_FORMAT};

/// A decoded row: column name to JSON value, in select order.
pub type Row = Map<String, Json>;

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
    Sqlite { read: SqlitePool, write: SqlitePool },
    Postgres(PgPool),
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
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts.clone())
                .await?;
            let read = if memory {
                write.clone()
            } else {
                SqlitePoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .connect_with(opts.read_only(true))
                    .await?
            };
            Ok(Self {
                inner: Inner::Sqlite { read, write },
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url).map_err(|e| bad(e.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(2))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Self {
                inner: Inner::Postgres(pool),
            })
        } else {
            Err(bad("expected a sqlite: or postgres: URL".into()))
        }
    }

    /// Which SQL dialect this database speaks.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite { .. } => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the numbered migrations of this backend that have not run yet.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match &self.inner {
            Inner::Sqlite { write, .. } => sqlx::migrate!("./migrations/sqlite").run(write).await?,
            Inner::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// Checks the database answers (for `/ready`).
    pub async fn ping(&self) -> Result<(), DbError> {
        match &self.inner {
            Inner::Sqlite { read, .. } => sqlx::query("SELECT 1").execute(read).await.map(drop)?,
            Inner::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop)?,
        }
        Ok(())
    }

    /// Runs a read-only statement and decodes its rows by `columns`.
    pub async fn fetch_all(
        &self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<Vec<Row>, DbError> {
        match &self.inner {
            Inner::Sqlite { read, .. } => {
                Conn::Sqlite(&mut *read.acquire().await?)
                    .fetch_all(stmt, columns)
                    .await
            }
            Inner::Postgres(pool) => {
                Conn::Postgres(&mut *pool.acquire().await?)
                    .fetch_all(stmt, columns)
                    .await
            }
        }
    }

    /// Runs a read-only statement that yields at most one row.
    pub async fn fetch_optional(
        &self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<Option<Row>, DbError> {
        Ok(self.fetch_all(stmt, columns).await?.into_iter().next())
    }

    /// Runs a statement whose first column is an integer (a count).
    pub async fn fetch_i64(&self, stmt: &impl QueryStatementWriter) -> Result<i64, DbError> {
        match &self.inner {
            Inner::Sqlite { read, .. } => {
                Conn::Sqlite(&mut *read.acquire().await?)
                    .fetch_i64(stmt)
                    .await
            }
            Inner::Postgres(pool) => {
                Conn::Postgres(&mut *pool.acquire().await?)
                    .fetch_i64(stmt)
                    .await
            }
        }
    }

    /// Starts a read-only transaction, for handlers that only read but want one
    /// consistent snapshot across several statements. On SQLite it runs on a
    /// reader connection (opened read-only), so it never queues behind the single
    /// writer; on PostgreSQL it is a `READ ONLY` transaction, so a write slipped
    /// into a read path fails there too instead of passing unnoticed.
    pub async fn begin_read(&self) -> Result<Tx, DbError> {
        timed("begin_read", async {
            Ok(match &self.inner {
                Inner::Sqlite { read, .. } => Tx::Sqlite(read.begin().await?),
                Inner::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
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
                Inner::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            })
        })
        .await
    }
}

/// A write transaction. Dropped without [`Tx::commit`], it rolls back.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Sqlite(tx) => Conn::Sqlite(&mut *tx),
            Self::Postgres(tx) => Conn::Postgres(&mut *tx),
        }
    }

    /// Which SQL dialect this transaction speaks.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
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
                Self::Postgres(tx) => tx.commit().await?,
            }
            Ok(())
        })
        .await
    }
}

/// A borrowed connection of either backend: the one place that binds values
/// and decodes rows.
enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Conn<'_> {
    fn build(&self, stmt: &impl QueryStatementWriter) -> (String, Values) {
        let builder: &dyn QueryBuilder = match self {
            Self::Sqlite(_) => &SqliteQueryBuilder,
            Self::Postgres(_) => &PostgresQueryBuilder,
        };
        stmt.build_any(builder)
    }

    async fn fetch_all(
        &mut self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<Vec<Row>, DbError> {
        let (sql, values) = self.build(stmt);
        timed("fetch", async {
            match self {
                Self::Sqlite(conn) => {
                    let rows = bind_sqlite(sqlx::query(&sql), values)
                        .fetch_all(&mut **conn)
                        .await;
                    rows.map_err(DbError::classify)
                        .and_then(|rows| rows.iter().map(|r| decode_sqlite(r, columns)).collect())
                }
                Self::Postgres(conn) => {
                    let rows = bind_pg(sqlx::query(&sql), values)
                        .fetch_all(&mut **conn)
                        .await;
                    rows.map_err(DbError::classify)
                        .and_then(|rows| rows.iter().map(|r| decode_pg(r, columns)).collect())
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

/// Binds sea-query values for SQLite. Timestamps are bound as fixed-width
/// ISO text (`DATETIME_FORMAT`) so that stored values sort and compare
/// correctly and come back exactly as the API returns them.
fn bind_sqlite(mut query: SqliteQuery<'_>, values: Values) -> SqliteQuery<'_> {
    for value in values.0 {
        query = match value {
            Value::Bool(v) => query.bind(v),
            Value::TinyInt(v) => query.bind(v.map(i64::from)),
            Value::SmallInt(v) => query.bind(v.map(i64::from)),
            Value::Int(v) => query.bind(v.map(i64::from)),
            Value::BigInt(v) => query.bind(v),
            Value::TinyUnsigned(v) => query.bind(v.map(i64::from)),
            Value::SmallUnsigned(v) => query.bind(v.map(i64::from)),
            Value::Unsigned(v) => query.bind(v.map(i64::from)),
            Value::BigUnsigned(v) => query.bind(v.map(|v| v as i64)),
            Value::Float(v) => query.bind(v.map(f64::from)),
            Value::Double(v) => query.bind(v),
            Value::String(v) => query.bind(v.map(|s| *s)),
            Value::Char(v) => query.bind(v.map(|c| c.to_string())),
            Value::Bytes(v) => query.bind(v.map(|b| *b)),
            Value::Json(v) => query.bind(v.map(|j| j.to_string())),
            Value::ChronoDate(v) => query.bind(v.map(|d| d.format("%Y-%m-%d").to_string())),
            Value::ChronoDateTime(v) => query.bind(v.map(|t| format_datetime(&t))),
            other => query.bind(format!("{other:?}")),
        };
    }
    query
}

/// Binds sea-query values for PostgreSQL with their native types.
fn bind_pg(mut query: PgQuery<'_>, values: Values) -> PgQuery<'_> {
    for value in values.0 {
        query = match value {
            Value::Bool(v) => query.bind(v),
            Value::TinyInt(v) => query.bind(v.map(i64::from)),
            Value::SmallInt(v) => query.bind(v.map(i64::from)),
            Value::Int(v) => query.bind(v.map(i64::from)),
            Value::BigInt(v) => query.bind(v),
            Value::TinyUnsigned(v) => query.bind(v.map(i64::from)),
            Value::SmallUnsigned(v) => query.bind(v.map(i64::from)),
            Value::Unsigned(v) => query.bind(v.map(i64::from)),
            Value::BigUnsigned(v) => query.bind(v.map(|v| v as i64)),
            Value::Float(v) => query.bind(v.map(f64::from)),
            Value::Double(v) => query.bind(v),
            Value::String(v) => query.bind(v.map(|s| *s)),
            Value::Char(v) => query.bind(v.map(|c| c.to_string())),
            Value::Bytes(v) => query.bind(v.map(|b| *b)),
            Value::Json(v) => query.bind(v.map(|j| sqlx::types::Json(*j))),
            Value::ChronoDate(v) => query.bind(v.map(|d| *d)),
            Value::ChronoDateTime(v) => query.bind(v.map(|t| *t)),
            other => query.bind(format!("{other:?}")),
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
