//! SQL rendered by sea-query for either backend, and rendered once per key where the
//! text depends only on the key.

use std::sync::Arc;

use sea_query::{
    PostgresQueryBuilder, QueryBuilder, QueryStatementWriter, SqliteQueryBuilder, Value, Values,
};

use crate::schema::Backend;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Column, ColumnType};
    use crate::db::pool::Inner;
    use crate::db::Db;

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
