//! Opening the database: the SQLite reader and writer pools, the PostgreSQL connection
//! budget, migrations.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, SqliteConnection, SqlitePool};

use super::readers::Readers;
use super::writer::Writer;
use super::DbError;
use crate::schema::Backend;

/// A connection pool for one of the two backends.
#[derive(Debug, Clone)]
pub struct Db {
    pub(super) inner: Inner,
}

#[derive(Debug, Clone)]
pub(super) enum Inner {
    Sqlite {
        /// Read-only connections for read transactions ([`Db::begin_read`]); in memory, the
        /// writer's one connection.
        read: SqlitePool,
        /// Read-only connections for single statements ([`Db::reader`]); `None` in memory.
        readers: Option<Arc<Readers<SqliteConnection>>>,
        write: Writer,
        /// Held by every handle of the database; the background checkpointer stops when the
        /// last one is dropped.
        _alive: Arc<()>,
    },
    Postgres {
        /// For transactions ([`Db::begin`], [`Db::begin_read`]).
        pool: PgPool,
        /// For single statements.
        readers: Arc<Readers<PgConnection>>,
    },
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
                .busy_timeout(Duration::from_secs(10))
                // Checkpoints run in the background (`checkpoint`); this is the writer's
                // safety net for when that falls behind.
                .pragma(
                    "wal_autocheckpoint",
                    super::checkpoint::WRITER_AUTOCHECKPOINT_PAGES,
                );
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
            // An in-memory database has no log to checkpoint.
            let checkpoints = (!memory).then(|| opts.clone());
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
            let alive = Arc::new(());
            if let Some(opts) = checkpoints {
                super::checkpoint::spawn(opts, Arc::downgrade(&alive));
            }
            let db = Self {
                inner: Inner::Sqlite {
                    read,
                    readers,
                    write: Writer::new(write),
                    _alive: alive,
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
                    readers: Arc::new(Readers::new(generic_plans(opts), for_reads)),
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
                let mut held = write.lock(super::gate::Priority::Interactive).await?;
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
}

/// The single-statement connections' options: PostgreSQL plans their prepared statements
/// once (`plan_cache_mode = force_generic_plan`) instead of for every execution. Under the
/// default (`auto`) a statement whose generic plan the planner estimates dearer than its
/// custom ones is planned afresh each time, which a list's page and COUNT always are (a
/// `LIMIT` bound as a parameter is costed as 10% of the rows): planning was most of
/// PostgreSQL's share of a list request (issue 20). The cost: a plan that no longer sees the
/// values, so a filter on a skewed column gets the plan for an average value. A URL that
/// sets `plan_cache_mode` itself (`?options[plan_cache_mode]=auto`) keeps its own.
fn generic_plans(opts: PgConnectOptions) -> PgConnectOptions {
    if opts
        .get_options()
        .is_some_and(|o| o.contains("plan_cache_mode"))
    {
        return opts;
    }
    opts.options([("plan_cache_mode", "force_generic_plan")])
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
}
