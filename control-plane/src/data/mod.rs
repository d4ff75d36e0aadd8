//! The routes that reach past the relational database: unit telemetry in the
//! time-series store and RTC dead letters on the bus.
//!
//! # Layout
//! - [`product_data`]: `GET`/`POST /products/<imei>/data` (spec: "Product Data").
//! - [`tool_log`]: `POST /upload_tool_log`.
//! - [`dead_letters`]: `/rtc_import_*_dead_letters` and
//!   `/rtc_dead_letters/<id>/{replay,discard,decode}` (spec: "RTC Dead
//!   Letter Actions"); listing stays the generic `GET /rtc_dead_letters`.
//! - [`time`]: the timestamp forms the data API accepts and returns.
//!
//! No client text reaches the time-series backends unparsed: `where` is
//! parsed into [`ingest::tsdb::Expr`], names are checked, values are typed,
//! and each backend renders the resulting [`ingest::tsdb::Query`] itself.

pub mod dead_letters;
pub mod product_data;
pub mod time;
pub mod tool_log;

use axum::Router;
use ingest::tsdb::TsdbError;
use sea_query::Value;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::query;

/// Every route of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(product_data::router())
        .merge(tool_log::router())
        .merge(dead_letters::router())
}

/// 404 unless the product exists and the user's scope lets them see it (the
/// generic single-row GET's statement, so the rule is the same).
pub(crate) async fn require_visible_product(
    state: &AppState,
    user: &AuthUser,
    imei: &str,
) -> Result<(), ApiError> {
    let table = state
        .catalogue
        .table("product")
        .expect("the catalogue has a product table");
    let stmt = query::compile_get(
        &state.catalogue,
        table,
        Value::String(Some(Box::new(imei.to_owned()))),
        &user.visibility,
    );
    let columns: Vec<_> = table.readable_columns().collect();
    match state.db.fetch_optional(&stmt, &columns).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(format!(
            "No product with product_imei '{imei}'"
        ))),
    }
}

/// A time-series failure as an API answer: the client's mistakes are 400s
/// with the store's explanation; an unreachable store is a 503 whose detail
/// is logged, not returned.
pub(crate) fn tsdb_error(err: TsdbError) -> ApiError {
    match err {
        TsdbError::InvalidQuery(m) | TsdbError::InvalidPoint(m) => ApiError::BadRequest(m),
        TsdbError::Unavailable(detail) => {
            tracing::warn!(%detail, "time-series store unavailable");
            ApiError::Unavailable("The time-series store is unavailable; try again later".into())
        }
        other => ApiError::Internal(other.into()),
    }
}
