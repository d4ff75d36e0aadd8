//! The fleet routes: permission checks and arguments in, the spec's
//! envelope out; the work is in [`super::reads`] and [`super::settings`].

use axum::extract::{MatchedPath, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Value as Json};

use super::parse::{
    connectivity_window, parse_limit, parse_mcc, parse_time_arg, reliability_rate, ProductFlag,
};
use super::{reads, settings};
use crate::actions::{object, require_bool, GetArgs};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::error::ApiError;
use crate::web::{success, JsonBody, QueryPairs};

pub(in crate::actions) fn router() -> Router<AppState> {
    Router::new()
        .route("/products/{id}/parts", get(parts))
        .route("/products/locations", get(locations))
        .route("/products/{id}/parameters/history", get(parameter_history))
        .route(
            "/products/{id}/connectivity_reliability_rate",
            get(connectivity_reliability_rate),
        )
        .route("/products/{id}/available_networks", get(available_networks))
        .route(
            "/products/{id}/suggest_energy_limit",
            put(suggest_energy_limit),
        )
        .route("/products/{id}/set_dcm_enabled_flag", put(set_product_flag))
        .route("/products/{id}/set_is_payg", put(set_product_flag))
}

async fn parts(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let data = reads::parts(&state.db, &user.visibility, &imei).await?;
    Ok(success(StatusCode::OK, "Parts found.", Json::Object(data)))
}

async fn locations(
    State(state): State<AppState>,
    user: AuthUser,
    params: QueryPairs,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let page = params.page(
        state.config.locations_per_page,
        state.config.bulk_max_results_per_page,
    )?;
    let rows = reads::locations(&state.db, &user.visibility, page).await?;
    Ok(axum::Json(json!({ "data": rows })).into_response())
}

async fn parameter_history(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    GetArgs(args): GetArgs,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let at = parse_time_arg(&args, "date")?;
    let data = reads::parameter_history(&state.db, &user.visibility, &imei, at).await?;
    let message = match at {
        None => format!("Full parameter history for #{imei} returned successfully"),
        Some(t) => format!(
            "Active parameters for #{imei} at {} returned successfully",
            crate::values::format_datetime(&t)
        ),
    };
    Ok(success(StatusCode::OK, message, data))
}

async fn connectivity_reliability_rate(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    GetArgs(args): GetArgs,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let (start, end) = connectivity_window(&args, state.clock.now())?;
    let actual = reads::connection_count(&state.db, &user.visibility, &imei, (start, end)).await?;
    Ok(success(
        StatusCode::OK,
        "Successfully computed product connectivity reliability rate",
        json!({"connectivity_reliability_rate": reliability_rate(actual, start, end)}),
    ))
}

async fn available_networks(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    GetArgs(args): GetArgs,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let mcc = parse_mcc(&args)?;
    let rows = reads::available_networks(&state.db, &user.visibility, &imei, mcc).await?;
    Ok(success(
        StatusCode::OK,
        "Available networks found",
        json!({ "networks": rows }),
    ))
}

async fn suggest_energy_limit(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    let requested = parse_limit(object(body)?.get("energy_limit"))?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let limit = settings::suggest_energy_limit(
        &mut tx,
        &user.visibility,
        &imei,
        requested,
        &user.username,
        now,
    )
    .await?;
    tx.commit().await?;
    let applied = limit.applied;
    let message = if limit.bounded() {
        format!("Energy limit for #{imei}: requested {requested} was bounded to {applied}")
    } else {
        format!("Energy limit for #{imei} set to {applied}")
    };
    Ok(success(
        StatusCode::OK,
        message,
        json!({
            "requested": requested,
            "applied": applied,
            "max_energy_limit": limit.max,
            "min_energy_limit": limit.min,
            "energy_limit_cap": limit.cap,
            "bounded": limit.bounded(),
        }),
    ))
}

/// Both flag routes; the flag is the one the matched route names.
async fn set_product_flag(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    route: MatchedPath,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let flag = ProductFlag::of_route(route.as_str());
    user.require(Permission::Technical)?;
    let value = require_bool(&object(body)?, flag.field())?;
    let mut tx = state.db.begin().await?;
    settings::set_flag(
        &mut tx,
        &user.visibility,
        &imei,
        flag,
        value,
        &user.username,
        state.clock.now(),
    )
    .await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        flag.message(&imei, value),
        Json::Null,
    ))
}
