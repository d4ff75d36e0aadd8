//! The dead-letter routes: permission checks in, the spec's envelope out;
//! the work is in [`super::import`], [`super::replay`] and [`super::letter`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use codec::QueueName;
use serde_json::{json, Value as Json};

use super::{import, letter, readable, replay};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::error::ApiError;
use crate::query::Visibility;
use crate::web::{route_table, success};

pub(in crate::data) fn router() -> Router<AppState> {
    route_table([
        ("/rtc_import_mo_dead_letters", post(import_mo)),
        ("/rtc_import_mt_reply_dead_letters", post(import_mt_reply)),
        ("/rtc_dead_letters/{id}/replay", put(replay)),
        ("/rtc_dead_letters/{id}/discard", put(discard)),
        ("/rtc_dead_letters/{id}/decode", get(decode)),
    ])
}

/// TECHNICAL with GLOBAL visibility, as import, replay and discard need.
fn require_technical_global(user: &AuthUser) -> Result<(), ApiError> {
    user.require(Permission::Technical)?;
    match user.visibility {
        Visibility::Global => Ok(()),
        Visibility::Entity(_) => Err(ApiError::Forbidden(
            "Dead-letter actions need GLOBAL product visibility: a dead letter may belong to any entity's unit".into(),
        )),
    }
}

async fn import_mo(State(state): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    import(state, user, QueueName::Mo).await
}

async fn import_mt_reply(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Response, ApiError> {
    import(state, user, QueueName::MtReply).await
}

async fn import(state: AppState, user: AuthUser, queue: QueueName) -> Result<Response, ApiError> {
    require_technical_global(&user)?;
    let done = import::import(&state, &user.username, queue).await?;
    let message = match queue {
        QueueName::Mo => "MO dead letters imported",
        QueueName::MtReply => "MT Reply dead letters imported",
    };
    Ok(success(
        StatusCode::OK,
        message,
        json!({
            "imported": done.inserted.len(),
            "reopened": done.reopened.len(),
            "already_imported": done.duplicates,
            "rtc_dead_letter_ids": done.inserted.iter().chain(&done.reopened).collect::<Vec<_>>(),
            "more_waiting": done.more,
        }),
    ))
}

async fn replay(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_technical_global(&user)?;
    replay::replay(&state, &user.visibility, &user.username, &id).await?;
    Ok(success(
        StatusCode::OK,
        "Dead letter message replayed",
        Json::Null,
    ))
}

async fn discard(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_technical_global(&user)?;
    let stored = letter::load(&state, &user.visibility, &id).await?;
    let changes = letter::status("discarded", &letter::stamp());
    letter::update(&state, &user.username, stored.id, changes).await?;
    Ok(success(
        StatusCode::OK,
        "Dead letter message discarded",
        Json::Null,
    ))
}

async fn decode(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let stored = letter::load(&state, &user.visibility, &id).await?;
    let (message, data) = match readable(&stored.payload) {
        Ok(text) => (
            "Dead letter message decoded",
            format!("Decoded message: {text}"),
        ),
        Err(problem) => (
            "Dead letter message could not be decoded",
            format!("Undecodable message: {problem}"),
        ),
    };
    // `reason` is an addition to the spec's envelope: why ingest gave up.
    Ok((
        StatusCode::OK,
        axum::Json(json!({
            "status": "success",
            "message": message,
            "data": data,
            "reason": stored.reason,
        })),
    )
        .into_response())
}
