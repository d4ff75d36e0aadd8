//! Generic CRUD for every catalogue table, at the paths the spec documents.
//!
//! One set of handlers serves all tables: the table is bound into the route
//! when the router is built, and everything else (permissions, validation,
//! filters, scope, row decoding) comes from its catalogue entry.

use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use sea_query::{Alias, Expr, Query, SimpleExpr, Value};
use serde_json::{Map, Value as Json};

use crate::app::AppState;
use crate::auth::{hash_password_blocking, AuthUser};
use crate::catalogue::{Catalogue, Column, ColumnType, Table};
use crate::db::{Row, Tx};
use crate::error::ApiError;
use crate::query::{self, Page};
use crate::values::{coerce, now};
use crate::web::{list_body, JsonBody, QueryPairs};

/// One route pair (`/x` and `/x/{id}`) per documented path of every table.
pub(super) fn router(cat: &Catalogue) -> Router<AppState> {
    let mut router = Router::new();
    for table in cat.tables() {
        for path in &table.paths {
            let name = table.name.clone();
            let collection = {
                let name = name.clone();
                move |State(state): State<AppState>,
                      user: AuthUser,
                      RawQuery(raw): RawQuery,
                      req: Request| { collection(state, user, name, raw, req) }
            };
            let item =
                move |State(state): State<AppState>,
                      user: AuthUser,
                      Path(id): Path<String>,
                      req: Request| { item(state, user, name, id, req) };
            router = router
                .route(path, any(collection))
                .route(&format!("{path}/{{id}}"), any(item));
        }
    }
    router
}

fn table<'a>(state: &'a AppState, name: &str) -> &'a Table {
    state
        .catalogue
        .table(name)
        .expect("routes are built from the catalogue")
}

/// Checks the method is documented for the table and the user may use it.
fn authorize(table: &Table, method: &Method, user: &AuthUser) -> Result<(), ApiError> {
    let needed = table
        .permission_for(method.as_str())
        .ok_or(ApiError::MethodNotAllowed)?;
    user.require(needed)
}

async fn collection(
    state: AppState,
    user: AuthUser,
    name: String,
    raw: Option<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let table = table(&state, &name);
    let method = req.method().clone();
    match method {
        Method::GET => {
            authorize(table, &method, &user)?;
            list(&state, &user, table, raw.as_deref()).await
        }
        Method::POST => {
            authorize(table, &method, &user)?;
            let JsonBody(body) = JsonBody::from_request(req, &state).await?;
            create(&state, &user, table, body).await
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

async fn item(
    state: AppState,
    user: AuthUser,
    name: String,
    id: String,
    req: Request,
) -> Result<Response, ApiError> {
    let table = table(&state, &name);
    let method = req.method().clone();
    match method {
        Method::GET => {
            authorize(table, &method, &user)?;
            let row = fetch_visible(&state, &user, table, &id).await?;
            Ok(axum::Json(row).into_response())
        }
        Method::PUT => {
            authorize(table, &method, &user)?;
            let JsonBody(body) = JsonBody::from_request(req, &state).await?;
            update(&state, &user, table, &id, body).await
        }
        Method::DELETE => {
            authorize(table, &method, &user)?;
            delete(&state, &user, table, &id).await
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// The list body of the spec: `{"num_results", "objects", "page", "total_pages"}`.
async fn list(
    state: &AppState,
    user: &AuthUser,
    table: &Table,
    raw: Option<&str>,
) -> Result<Response, ApiError> {
    let params = QueryPairs::parse(raw)?;
    let spec = match params.get("q") {
        Some(q) if !q.trim().is_empty() => query::parse(q)?,
        _ => query::QuerySpec::default(),
    };
    let page = params.page(
        state.config.default_results_per_page,
        state.config.max_results_per_page,
    )?;
    let compiled = query::compile(&state.catalogue, table, &spec, &user.viewer(), Some(page))?;
    let decoded = output_columns(&compiled.columns, &compiled.column_types);
    let columns: Vec<&Column> = decoded.iter().collect();
    if spec.single {
        // Two rows are enough to tell "one" from "several"; a page keeps q's own limit.
        let probe = query::compile(
            &state.catalogue,
            table,
            &spec,
            &user.viewer(),
            Some(Page {
                page: 1,
                per_page: 2,
            }),
        )?;
        let mut rows = state.db.fetch_all(&probe.rows, &columns).await?;
        return match rows.len() {
            0 => Err(ApiError::NotFound("No result found".into())),
            1 => Ok(axum::Json(rows.remove(0)).into_response()),
            _ => Err(ApiError::BadRequest("Multiple results found".into())),
        };
    }
    let (rows, total) = state
        .db
        .fetch_page(
            &compiled.rows,
            &columns,
            &compiled.count,
            page.offset(),
            page.per_page,
        )
        .await?;
    Ok(axum::Json(list_body(rows, total, page)).into_response())
}

/// Column descriptions for decoding the selected output columns (with
/// `group_by` these may be columns of related tables).
fn output_columns(names: &[String], types: &[ColumnType]) -> Vec<Column> {
    names
        .iter()
        .zip(types)
        .map(|(name, ty)| Column::computed(name, *ty))
        .collect()
}

/// Parses a URL id for the table's primary key; `None` when it cannot be one.
fn id_value(table: &Table, id: &str) -> Option<Value> {
    let pk = table.primary_key();
    match pk.ty {
        ColumnType::Int => id.parse::<i64>().ok().map(|v| Value::BigInt(Some(v))),
        _ => Some(Value::String(Some(Box::new(id.to_string())))),
    }
}

fn not_found(table: &Table, id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "No {} with {} '{}'",
        table.name,
        table.primary_key().name,
        id
    ))
}

/// A row by primary key, if the user's scope lets them see it.
async fn fetch_visible(
    state: &AppState,
    user: &AuthUser,
    table: &Table,
    id: &str,
) -> Result<Row, ApiError> {
    let value = id_value(table, id).ok_or_else(|| not_found(table, id))?;
    let viewer = user.viewer();
    let columns = query::get_columns_as(table, &viewer)?;
    // The SQL depends only on the table and the viewer; rendered once, then reused.
    let stmt = state
        .get_by_pk
        .render((table.name.clone(), viewer), vec![value.clone()], || {
            let cat = &state.catalogue;
            query::get_columns(
                cat,
                table,
                value,
                &viewer.visibility,
                columns.iter().copied(),
            )
        });
    state
        .db
        .fetch_optional_rendered(stmt, &columns)
        .await?
        .ok_or_else(|| not_found(table, id))
}

/// The same inside a write transaction (to check scope before and after a write).
async fn visible_in_tx(
    state: &AppState,
    user: &AuthUser,
    tx: &mut Tx,
    table: &Table,
    id: Value,
) -> Result<Option<Row>, ApiError> {
    let (stmt, columns) = query::compile_get_as(&state.catalogue, table, id, &user.viewer())?;
    Ok(tx.fetch_optional(&stmt, &columns).await?)
}

/// Validates a POST/PUT body against the table: unknown fields, wrong types,
/// options, lengths, nulls in not-null columns. System-managed columns are
/// ignored when supplied (spec: "Meta Data").
fn validate_body(
    table: &Table,
    body: Json,
    creating: bool,
) -> Result<Vec<(String, Value)>, ApiError> {
    let Json::Object(fields) = body else {
        return Err(ApiError::BadRequest(format!(
            "The body must be a JSON object with the {} fields to {}",
            table.name,
            if creating { "create" } else { "change" }
        )));
    };
    let mut errors = Map::new();
    let mut out = Vec::new();
    for (name, value) in &fields {
        let Some(column) = table.column(name) else {
            errors.insert(
                name.clone(),
                Json::from(format!("unknown field '{name}' for table {}", table.name)),
            );
            continue;
        };
        if column.is_system() || (!creating && column.primary_key) {
            continue;
        }
        if value.is_null() && column.not_null {
            errors.insert(
                name.clone(),
                Json::from(format!("field '{name}' may not be null")),
            );
            continue;
        }
        match coerce(column, value) {
            Ok(v) => out.push((name.clone(), v)),
            Err(e) => {
                errors.insert(name.clone(), Json::from(e.to_string()));
            }
        }
    }
    if creating {
        for column in &table.columns {
            let missing = column.not_null
                && column.default.is_none()
                && !column.is_system()
                && !super::natural_keys::assigned(table, column)
                && !fields.contains_key(&column.name);
            if missing {
                errors.insert(
                    column.name.clone(),
                    Json::from(format!("field '{}' is required", column.name)),
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Hashes the password of a `user` row before it is stored.
async fn prepare_secret_columns(
    table: &Table,
    values: &mut [(String, Value)],
) -> Result<(), ApiError> {
    for (name, value) in values.iter_mut() {
        if table.column(name).is_some_and(Column::is_write_only) {
            let Value::String(Some(plain)) = value else {
                continue;
            };
            if plain.len() < 8 {
                return Err(ApiError::field(
                    name.clone(),
                    "password must be at least 8 characters long",
                ));
            }
            let hashed = hash_password_blocking(plain.to_string()).await?;
            *value = Value::String(Some(Box::new(hashed)));
        }
    }
    Ok(())
}

/// Foreign keys are checked before writing so the 400 names the field on
/// both backends (SQLite's own message does not name it).
async fn check_foreign_keys(
    state: &AppState,
    tx: &mut Tx,
    table: &Table,
    values: &[(String, Value)],
) -> Result<(), ApiError> {
    let mut errors = Map::new();
    for (name, value) in values {
        let Some(target) = table.column(name).and_then(|c| c.foreign_key.as_deref()) else {
            continue;
        };
        if is_null(value) {
            continue;
        }
        let target = state.catalogue.table(target).expect("catalogue validated");
        let pk = &target.primary_key().name;
        let stmt = Query::select()
            .expr(Expr::val(1i64))
            .from(Alias::new(&target.name))
            .and_where(Expr::col(Alias::new(pk)).eq(SimpleExpr::Value(value.clone())))
            .to_owned();
        if tx
            .fetch_optional(&stmt, &[&Column::computed("one", ColumnType::Int)])
            .await?
            .is_none()
        {
            errors.insert(
                name.clone(),
                Json::from(format!(
                    "field '{name}' refers to {} {} {}, which does not exist",
                    target.name,
                    pk,
                    display(value)
                )),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

fn is_null(v: &Value) -> bool {
    matches!(
        v,
        Value::BigInt(None)
            | Value::String(None)
            | Value::Double(None)
            | Value::Bool(None)
            | Value::ChronoDateTime(None)
            | Value::ChronoDate(None)
            | Value::Json(None)
    )
}

fn display(v: &Value) -> String {
    match v {
        Value::BigInt(Some(i)) => i.to_string(),
        Value::String(Some(s)) => format!("'{s}'"),
        other => format!("{other:?}"),
    }
}

async fn create(
    state: &AppState,
    user: &AuthUser,
    table: &Table,
    body: Json,
) -> Result<Response, ApiError> {
    let mut values = validate_body(table, body, true)?;
    prepare_secret_columns(table, &mut values).await?;
    let viewer = user.viewer();
    // What the answer shows: the new row as the user would GET it. When no scope condition
    // applies to this table for this user, the insert returns those columns itself (one
    // round trip fewer on PostgreSQL); otherwise the row is read back through the scope.
    // Refusal to read the table is reported after the write's own checks, as before.
    let readable = query::get_columns_as(table, &viewer);
    let unscoped = query::scope_condition(&state.catalogue, table, &viewer.visibility).is_none();
    let mut tx = state.db.begin().await?;
    check_foreign_keys(state, &mut tx, table, &values).await?;
    super::natural_keys::assign(&mut tx, table, &mut values).await?;
    values.push(("created_at".into(), now().into()));
    values.push(("created_by".into(), user.username.clone().into()));
    let pk = table.primary_key();
    let returned: Vec<&Column> = match &readable {
        Ok(columns) if unscoped => columns.clone(),
        _ => vec![pk],
    };
    let stmt = Query::insert()
        .into_table(Alias::new(&table.name))
        .columns(values.iter().map(|(n, _)| Alias::new(n)))
        .values(values.iter().map(|(_, v)| SimpleExpr::Value(v.clone())))
        .map_err(|e| ApiError::Internal(e.into()))?
        .returning(Query::returning().columns(returned.iter().map(|c| Alias::new(&c.name))))
        .to_owned();
    let no_row = || ApiError::Internal(anyhow::anyhow!("insert returned no row"));
    let row = if unscoped && readable.is_ok() {
        // The insert is the transaction's last statement (on PostgreSQL, when nothing ran
        // before it, it goes alone: no BEGIN, no COMMIT).
        tx.finish_with(&stmt, &returned).await?.ok_or_else(no_row)?
    } else {
        let inserted = tx
            .fetch_optional(&stmt, &returned)
            .await?
            .ok_or_else(no_row)?;
        readable?;
        let row = if unscoped {
            inserted
        } else {
            let id = inserted.get(&pk.name).cloned().unwrap_or(Json::Null);
            let id = coerce(pk, &id)?;
            // A scoped user may only create rows inside their scope.
            visible_in_tx(state, user, &mut tx, table, id)
                .await?
                .ok_or_else(|| {
                    ApiError::Forbidden(format!(
                        "The new {} would refer to a product outside your entity",
                        table.name
                    ))
                })?
        };
        tx.commit().await?;
        row
    };
    Ok((StatusCode::CREATED, axum::Json(row)).into_response())
}

async fn update(
    state: &AppState,
    user: &AuthUser,
    table: &Table,
    id: &str,
    body: Json,
) -> Result<Response, ApiError> {
    let key = id_value(table, id).ok_or_else(|| not_found(table, id))?;
    let mut values = validate_body(table, body, false)?;
    super::natural_keys::check_update(table, &values)?;
    prepare_secret_columns(table, &mut values).await?;
    let mut tx = state.db.begin().await?;
    if visible_in_tx(state, user, &mut tx, table, key.clone())
        .await?
        .is_none()
    {
        return Err(not_found(table, id));
    }
    check_foreign_keys(state, &mut tx, table, &values).await?;
    let identity_changed = table.name == "product"
        && values
            .iter()
            .any(|(n, _)| crate::rtc::IDENTITY_COLUMNS.contains(&n.as_str()));
    values.push(("modified_at".into(), now().into()));
    values.push(("modified_by".into(), user.username.clone().into()));
    let stmt = Query::update()
        .table(Alias::new(&table.name))
        .values(
            values
                .iter()
                .map(|(n, v)| (Alias::new(n), SimpleExpr::Value(v.clone()))),
        )
        .and_where(
            Expr::col(Alias::new(&table.primary_key().name)).eq(SimpleExpr::Value(key.clone())),
        )
        .to_owned();
    tx.execute(&stmt).await?;
    let row = visible_in_tx(state, user, &mut tx, table, key)
        .await?
        .ok_or_else(|| {
            ApiError::Forbidden(format!(
                "The change would move this {} outside your entity",
                table.name
            ))
        })?;
    tx.commit().await?;
    if table.name == "user" {
        if let Some(uid) = row.get("user_id").and_then(Json::as_i64) {
            state.auth.forget_user(uid);
        }
    }
    if identity_changed {
        // RTC: the old key stops working and the unit's session closes.
        crate::rtc::credentials_changed(state, id).await;
    }
    Ok(axum::Json(row).into_response())
}

async fn delete(
    state: &AppState,
    user: &AuthUser,
    table: &Table,
    id: &str,
) -> Result<Response, ApiError> {
    let key = id_value(table, id).ok_or_else(|| not_found(table, id))?;
    let mut tx = state.db.begin().await?;
    if visible_in_tx(state, user, &mut tx, table, key.clone())
        .await?
        .is_none()
    {
        return Err(not_found(table, id));
    }
    if table.name == "user" {
        // Tokens belong to the user; they go with it.
        let tokens = Query::delete()
            .from_table(Alias::new("api_token"))
            .and_where(Expr::col(Alias::new("user_id")).eq(SimpleExpr::Value(key.clone())))
            .to_owned();
        tx.execute(&tokens).await?;
    }
    let stmt = Query::delete()
        .from_table(Alias::new(&table.name))
        .and_where(
            Expr::col(Alias::new(&table.primary_key().name)).eq(SimpleExpr::Value(key.clone())),
        )
        .to_owned();
    tx.execute(&stmt).await.map_err(|e| match e {
        crate::db::DbError::ForeignKey { .. } => ApiError::field(
            table.primary_key().name.clone(),
            format!(
                "{} '{}' is still referenced by other rows; delete or change those first",
                table.name, id
            ),
        ),
        other => other.into(),
    })?;
    tx.commit().await?;
    if table.name == "user" {
        if let Value::BigInt(Some(uid)) = key {
            state.auth.forget_user(uid);
        }
    }
    if table.name == "product" {
        // RTC: a deleted unit's key stops working and its session closes.
        crate::rtc::credentials_changed(state, id).await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
