//! `/auth/login`, `/auth/validate_user`, `/auth/validate_user_and_password`
//! `/home` and `/whoami`.

use axum::extract::{Query as UrlQuery, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::auth::{find_user, issue_token, new_token, verify_password_blocking, AuthUser};
use crate::catalogue::Permission;
use crate::error::ApiError;
use crate::query::Visibility;
use crate::web::{parse_json, read_body};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/validate_user", get(validate_user))
        .route(
            "/auth/validate_user_and_password",
            get(validate_user_and_password),
        )
        .route("/home", get(home).post(home))
        .route("/whoami", get(whoami))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// Reads credentials from a form body (`requests.post(url, data=fields)` in
/// the spec) or a JSON body, whichever the content type says.
async fn credentials(req: Request, limit: usize) -> Result<Credentials, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let bytes = read_body(req, limit).await?;
    let missing =
        |e: String| ApiError::BadRequest(format!("username and password are required: {e}"));
    if is_json || bytes.first() == Some(&b'{') {
        serde_json::from_value(parse_json(&bytes)?).map_err(|e| missing(e.to_string()))
    } else {
        serde_urlencoded::from_bytes(&bytes).map_err(|e| missing(e.to_string()))
    }
}

async fn login(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    // The peer address as the server sees it (`http::serve` records it);
    // behind a proxy every client shares the proxy's, see docs/security.md.
    let address = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let creds = credentials(req, state.config.max_body_bytes).await?;
    let now = state.clock.now();
    let cfg = &state.config;
    state.auth.check_throttle(
        address,
        &creds.username,
        now,
        cfg.login_max_failures,
        cfg.login_window_secs,
    )?;
    let record = find_user(&state.db, &creds.username).await?;
    // Verify against a dummy hash when the user does not exist, so timing
    // does not reveal which usernames are real.
    let hash = record
        .as_ref()
        .map(|r| r.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let ok = verify_password_blocking(hash, creds.password.clone()).await && record.is_some();
    let Some(record) = record.filter(|_| ok) else {
        state
            .auth
            .record_failure(address, &creds.username, now, cfg.login_window_secs);
        return Err(ApiError::Unauthorized(
            "Invalid username or password".into(),
        ));
    };
    state.auth.record_success(address, &creds.username);
    let token = new_token();
    let expiry = issue_token(&state, record.user.user_id, &token).await?;
    let user = &record.user;
    Ok(axum::Json(json!({
        "status": "success",
        "message": {
            "login_successful": {
                "username": user.username,
                "entity_id": user.entity_id,
                "display_name": record.display_name,
                "name": record.name.clone().unwrap_or_default(),
                "user_product_visibility": visibility_name(&user.visibility),
                "hub_id": record.hub_id,
                "shop_id": record.shop_id,
                "API_token": token,
                "token_expiry": expiry.and_utc().format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
                "permissions": user.permissions.as_str(),
            }
        }
    }))
    .into_response())
}

/// An argon2id hash of a random string, computed once, so a login for an
/// unknown username costs the same as one with a wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| crate::auth::hash_password(&new_token()).unwrap_or_default())
}

#[derive(Deserialize)]
struct UsernameParams {
    username: Option<String>,
    password: Option<String>,
}

async fn validate_user(
    State(state): State<AppState>,
    user: AuthUser,
    UrlQuery(params): UrlQuery<UsernameParams>,
) -> Result<Response, ApiError> {
    user.require(Permission::System)?;
    let username = params
        .username
        .ok_or_else(|| ApiError::BadRequest("'username' parameter is required".into()))?;
    let exists = find_user(&state.db, &username).await?.is_some();
    Ok(axum::Json(json!({
        "status": "success",
        "message": format!("Successfully checked the username {username}"),
        "data": if exists { "True" } else { "False" },
    }))
    .into_response())
}

async fn validate_user_and_password(
    State(state): State<AppState>,
    user: AuthUser,
    UrlQuery(params): UrlQuery<UsernameParams>,
) -> Result<Response, ApiError> {
    user.require(Permission::System)?;
    let (Some(username), Some(password)) = (params.username, params.password) else {
        return Err(ApiError::BadRequest(
            "'username' and 'password' parameters are required".into(),
        ));
    };
    let valid = match find_user(&state.db, &username).await? {
        Some(r) => verify_password_blocking(r.password_hash, password).await,
        None => false,
    };
    Ok(axum::Json(json!({
        "status": "success",
        "message": format!("Successfully checked the username {username} with it's password"),
        "data": if valid { "True" } else { "False" },
    }))
    .into_response())
}

async fn home(State(state): State<AppState>) -> String {
    format!(
        "Welcome to the SMARTSolar API: {}",
        crate::values::format_datetime(&state.clock.now())
    )
}

/// The caller's own identity, level and scope (the console shows only the
/// buttons these allow).
async fn whoami(user: AuthUser) -> Response {
    axum::Json(json!({
        "status": "success",
        "message": "the user this token belongs to",
        "data": {
            "user_id": user.user_id,
            "username": user.username,
            "permissions": user.permissions.as_str(),
            "user_product_visibility": visibility_name(&user.visibility),
            "entity_id": user.entity_id,
        }
    }))
    .into_response()
}

/// The API spelling of a visibility.
fn visibility_name(visibility: &Visibility) -> &'static str {
    match visibility {
        Visibility::Global => "GLOBAL",
        Visibility::Entity(_) => "ENTITY",
    }
}
