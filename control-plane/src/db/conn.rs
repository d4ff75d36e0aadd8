//! A borrowed connection of either backend: where statements run, values are bound and
//! rows decoded, and every operation is timed.

use sea_query::{QueryStatementWriter, Values};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgConnection, Row as _, SqliteConnection};

use super::bind::{bind_pg, bind_sqlite};
use super::decode::{decode_pg, decode_sqlite};
use super::render::query_builder;
use super::{DbError, Row, TypedRow};
use crate::catalogue::Column;
use crate::schema::Backend;

/// A borrowed connection of either backend: the one place that binds values
/// and decodes rows.
pub(super) enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
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

    pub(super) async fn fetch_all(
        &mut self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<Vec<Row>, DbError> {
        let (sql, values) = self.build(stmt);
        self.fetch_all_sql(&sql, values, columns).await
    }

    /// [`Conn::fetch_all`] for SQL already rendered for this backend.
    pub(super) async fn fetch_all_sql(
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

    /// Rows decoded by `columns`, and the integer in the column after them (a count every
    /// row carries, see [`Db::fetch_page`](super::Db::fetch_page)): `None` when there is no
    /// row to read it from.
    pub(super) async fn fetch_all_counted(
        &mut self,
        stmt: &impl QueryStatementWriter,
        columns: &[&Column],
    ) -> Result<(Vec<Row>, Option<i64>), DbError> {
        let at = columns.len();
        let rows = self
            .fetch_decoded(
                stmt,
                |r| Ok((decode_sqlite(r, columns)?, r.try_get::<i64, _>(at)?)),
                |r| Ok((decode_pg(r, columns)?, r.try_get::<i64, _>(at)?)),
            )
            .await?;
        let total = rows.first().map(|(_, total)| *total);
        Ok((rows.into_iter().map(|(row, _)| row).collect(), total))
    }

    pub(super) async fn fetch_typed<T: TypedRow>(
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

    pub(super) async fn fetch_i64(
        &mut self,
        stmt: &impl QueryStatementWriter,
    ) -> Result<i64, DbError> {
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

    pub(super) async fn execute(
        &mut self,
        stmt: &impl QueryStatementWriter,
    ) -> Result<u64, DbError> {
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
pub(super) async fn timed<T>(op: &'static str, work: impl std::future::Future<Output = T>) -> T {
    // Failures are timed too: a `begin` that times out waiting for the SQLite writer is
    // exactly the latency this histogram is for.
    let started = std::time::Instant::now();
    let out = work.await;
    metrics::histogram!("smartsolar_db_query_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    out
}
