//! Webhook endpoints: `POST /channels/<name>/subscribe` and
//! `/unsubscribe` (spec), and, beyond the spec, a subscriber's delivery log
//! (`GET /subscribers/<id>/deliveries`) and re-sending one delivery
//! (`POST /subscribers/<id>/deliveries/<delivery_id>/resend`).
//! `GET /channels` is the generic table route.
//!
//! All of these need ADMIN, the level the spec gives `unsubscribe`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value as Json};

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::error::ApiError;
use crate::web::{success, JsonBody, QueryPairs};
use crate::webhooks::subscriptions;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/channels/{id}/subscribe", post(subscribe))
        .route("/channels/{id}/unsubscribe", post(unsubscribe))
        .route("/subscribers/{id}/deliveries", get(deliveries))
        .route(
            "/subscribers/{id}/deliveries/{delivery_id}/resend",
            post(resend),
        )
}

fn url_of(body: Json) -> Result<String, ApiError> {
    match body.get("url") {
        Some(Json::String(u)) if !u.trim().is_empty() => Ok(u.clone()),
        Some(Json::String(_)) | None | Some(Json::Null) => {
            Err(ApiError::field("url", "field 'url' is required"))
        }
        Some(_) => Err(ApiError::field("url", "field 'url' must be a string")),
    }
}

async fn subscribe(
    State(state): State<AppState>,
    user: AuthUser,
    Path(channel): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Admin)?;
    let url = url_of(body)?;
    let s = subscriptions::subscribe(&state, &user, &channel, &url, state.clock.now()).await?;
    tracing::info!(subscriber_id = s.subscriber_id, channel = %channel, user = %user.username, "webhook subscribed");
    Ok(success(
        StatusCode::CREATED,
        format!(
            "You have subscribed to the '{}' channel with the url: '{}'",
            s.channel_name, s.url
        ),
        json!({"url": s.url, "channel_name": s.channel_name, "key": s.key}),
    ))
}

async fn unsubscribe(
    State(state): State<AppState>,
    user: AuthUser,
    Path(channel): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Admin)?;
    let url = url_of(body)?;
    subscriptions::unsubscribe(&state, &user, &channel, &url).await?;
    tracing::info!(channel = %channel, user = %user.username, "webhook unsubscribed");
    Ok(success(
        StatusCode::OK,
        format!("You have unsubscribed from the '{channel}' channel with the url: '{url}'"),
        Json::Null,
    ))
}

fn id(text: &str, what: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::NotFound(format!("No {what} with id '{text}'")))
}

async fn deliveries(
    State(state): State<AppState>,
    user: AuthUser,
    Path(subscriber): Path<String>,
    params: QueryPairs,
) -> Result<Response, ApiError> {
    user.require(Permission::Admin)?;
    let subscriber_id = id(&subscriber, "subscriber")?;
    let page = params.page(
        state.config.default_results_per_page,
        state.config.max_results_per_page,
    )?;
    let body = subscriptions::list_deliveries(&state, &user, subscriber_id, page).await?;
    Ok(axum::Json(body).into_response())
}

async fn resend(
    State(state): State<AppState>,
    user: AuthUser,
    Path((subscriber, delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    user.require(Permission::Admin)?;
    let subscriber_id = id(&subscriber, "subscriber")?;
    let delivery_id = id(&delivery, "delivery")?;
    let data =
        subscriptions::resend(&state, &user, subscriber_id, delivery_id, state.clock.now()).await?;
    Ok(success(
        StatusCode::OK,
        format!("Delivery {delivery_id} will be sent again"),
        Json::Object(data),
    ))
}
