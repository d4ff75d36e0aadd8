//! Users, passwords, API tokens, permissions and scope.
//!
//! Passwords are hashed with argon2id. Tokens are 64 random alphanumeric
//! characters; only their SHA-256 is stored, so a database leak reveals no
//! usable token. A token expires `token_ttl_secs` after its last successful
//! use (spec: "Token Expiry"). To keep a hot GET path from writing on every
//! request, the sliding expiry is written back at most once a minute and
//! verified tokens are cached in memory for a few seconds.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{Duration, NaiveDateTime};
use dashmap::DashMap;
use rand::distributions::Alphanumeric;
use rand::Rng;
use sea_query::{Alias, Expr, Query};
use sha2::{Digest, Sha256};

use crate::catalogue::{Column, ColumnType, Permission};
use crate::db::{Db, DbError};
use crate::error::ApiError;
use crate::http::AppState;
use crate::query::Visibility;

/// Length of an API token (spec: "The token is a random 64-char string").
pub const TOKEN_LEN: usize = 64;

/// How long a verified token is trusted from memory before it is looked up
/// again (bounds how late a deleted user or token is noticed).
const CACHE_SECS: i64 = 5;

/// How stale the stored expiry may get before a request writes it back.
const REFRESH_SECS: i64 = 60;

/// The time source for token expiry; tests move it forward instead of sleeping.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_secs: Arc<AtomicI64>,
}

impl Clock {
    /// Now, plus any offset a test has applied.
    pub fn now(&self) -> NaiveDateTime {
        crate::values::now() + Duration::seconds(self.offset_secs.load(Ordering::Relaxed))
    }

    /// Moves this clock forward (tests only; the API never calls it).
    pub fn advance(&self, secs: i64) {
        self.offset_secs.fetch_add(secs, Ordering::Relaxed);
    }
}

/// Hashes a password with argon2id and a random salt (PHC string format).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("argon2: {e}")))
}

/// Checks a password against a stored hash; any malformed hash is a mismatch.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A new random token.
pub fn new_token() -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(TOKEN_LEN)
        .map(char::from)
        .collect()
}

/// What is stored for a token.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: i64,
    pub username: String,
    pub permissions: Permission,
    pub visibility: Visibility,
    pub entity_id: Option<i64>,
}

impl AuthUser {
    /// 403 unless the user's level is at least `needed`.
    pub fn require(&self, needed: Permission) -> Result<(), ApiError> {
        if self.permissions >= needed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "This action requires {needed} permissions; user '{}' has {}",
                self.username, self.permissions
            )))
        }
    }
}

#[derive(Debug, Clone)]
struct CachedToken {
    user: AuthUser,
    expires_at: NaiveDateTime,
    checked_at: NaiveDateTime,
}

/// Verified tokens by digest, and failed logins by username.
#[derive(Debug, Default)]
pub struct AuthCache {
    tokens: DashMap<String, CachedToken>,
    failures: DashMap<String, (u32, NaiveDateTime)>,
}

impl AuthCache {
    /// Forgets every cached token of a user (after a password or permission change or deletion).
    pub fn forget_user(&self, user_id: i64) {
        self.tokens.retain(|_, t| t.user.user_id != user_id);
    }

    /// `Err(429)` when `username` has failed too often within the window.
    pub fn check_throttle(
        &self,
        username: &str,
        now: NaiveDateTime,
        max: u32,
        window_secs: i64,
    ) -> Result<(), ApiError> {
        if let Some(entry) = self.failures.get(username) {
            let (count, since) = *entry;
            if count >= max && now - since < Duration::seconds(window_secs) {
                return Err(ApiError::TooManyRequests(format!(
                    "Too many failed logins for '{username}'; try again later"
                )));
            }
        }
        Ok(())
    }

    /// Records a failed login.
    pub fn record_failure(&self, username: &str, now: NaiveDateTime, window_secs: i64) {
        let mut entry = self
            .failures
            .entry(username.to_string())
            .or_insert((0, now));
        if now - entry.1 >= Duration::seconds(window_secs) {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    /// Clears failures after a successful login.
    pub fn record_success(&self, username: &str) {
        self.failures.remove(username);
    }
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column::computed(name, ty)
}

/// A user row as the login and token paths need it.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user: AuthUser,
    pub password_hash: String,
    pub display_name: Option<String>,
    pub name: Option<String>,
    pub hub_id: Option<i64>,
    pub shop_id: Option<i64>,
}

/// Loads a user by username.
pub async fn find_user(db: &Db, username: &str) -> Result<Option<UserRecord>, DbError> {
    let columns = user_columns();
    let stmt = Query::select()
        .columns(
            columns
                .iter()
                .map(|c| (Alias::new("user"), Alias::new(&c.name))),
        )
        .from(Alias::new("user"))
        .and_where(Expr::col(Alias::new("username")).eq(username))
        .to_owned();
    let refs: Vec<&Column> = columns.iter().collect();
    Ok(db
        .fetch_optional(&stmt, &refs)
        .await?
        .map(|row| user_from_row(&row)))
}

/// The `user` columns the login and token paths read, in select order.
fn user_columns() -> [Column; 10] {
    [
        col("user_id", ColumnType::Int),
        col("username", ColumnType::String),
        col("password", ColumnType::String),
        col("permissions", ColumnType::String),
        col("user_product_visibility", ColumnType::String),
        col("entity_id", ColumnType::Int),
        col("display_name", ColumnType::String),
        col("name", ColumnType::String),
        col("hub_id", ColumnType::Int),
        col("shop_id", ColumnType::Int),
    ]
}

/// A user record from a row with [`user_columns`].
fn user_from_row(row: &crate::db::Row) -> UserRecord {
    let text = |k: &str| row.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let int = |k: &str| row.get(k).and_then(|v| v.as_i64());
    let permissions = text("permissions")
        .and_then(|p| Permission::parse(&p))
        .unwrap_or(Permission::Overview);
    let entity_id = int("entity_id");
    let visibility = match text("user_product_visibility").as_deref() {
        Some("GLOBAL") => Visibility::Global,
        // An ENTITY user without an entity sees no products at all.
        _ => Visibility::Entity(entity_id.unwrap_or(-1)),
    };
    UserRecord {
        user: AuthUser {
            user_id: int("user_id").unwrap_or_default(),
            username: text("username").unwrap_or_default(),
            permissions,
            visibility,
            entity_id,
        },
        password_hash: text("password").unwrap_or_default(),
        display_name: text("display_name"),
        name: text("name"),
        hub_id: int("hub_id"),
        shop_id: int("shop_id"),
    }
}

/// Stores a new token for a user and returns its expiry.
pub async fn issue_token(
    state: &AppState,
    user_id: i64,
    token: &str,
) -> Result<NaiveDateTime, ApiError> {
    let now = state.clock.now();
    let expires_at = now + Duration::seconds(state.config.token_ttl_secs);
    let mut tx = state.db.begin().await?;
    let stmt = Query::insert()
        .into_table(Alias::new("api_token"))
        .columns([
            Alias::new("user_id"),
            Alias::new("token_hash"),
            Alias::new("expires_at"),
            Alias::new("created_at"),
        ])
        .values_panic([
            user_id.into(),
            token_digest(token).into(),
            expires_at.into(),
            now.into(),
        ])
        .to_owned();
    tx.execute(&stmt).await?;
    // Expired tokens of this user are of no further use.
    let purge = Query::delete()
        .from_table(Alias::new("api_token"))
        .and_where(Expr::col(Alias::new("user_id")).eq(user_id))
        .and_where(Expr::col(Alias::new("expires_at")).lt(now))
        .to_owned();
    tx.execute(&purge).await?;
    tx.commit().await?;
    Ok(expires_at)
}

/// Resolves a token to its user, extending its expiry.
pub async fn authenticate(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    let now = state.clock.now();
    let digest = token_digest(token);
    if let Some(cached) = state.auth.tokens.get(&digest) {
        if cached.expires_at > now && now - cached.checked_at < Duration::seconds(CACHE_SECS) {
            return Ok(cached.user.clone());
        }
    }
    // One query on a cache miss: the token's expiry and its user's record.
    let mut columns = user_columns().to_vec();
    columns.push(col("expires_at", ColumnType::Datetime));
    let stmt = Query::select()
        .columns(
            user_columns()
                .iter()
                .map(|c| (Alias::new("user"), Alias::new(&c.name))),
        )
        .column((Alias::new("api_token"), Alias::new("expires_at")))
        .from(Alias::new("api_token"))
        .inner_join(
            Alias::new("user"),
            Expr::col((Alias::new("user"), Alias::new("user_id")))
                .equals((Alias::new("api_token"), Alias::new("user_id"))),
        )
        .and_where(
            Expr::col((Alias::new("api_token"), Alias::new("token_hash"))).eq(digest.clone()),
        )
        .to_owned();
    let refs: Vec<&Column> = columns.iter().collect();
    let row = state.db.fetch_optional(&stmt, &refs).await?;
    let invalid = || ApiError::Unauthorized("Your token is invalid or not present".into());
    let row = row.ok_or_else(invalid)?;
    let expires_at = row
        .get("expires_at")
        .and_then(|v| v.as_str())
        .and_then(crate::values::parse_datetime)
        .ok_or_else(invalid)?;
    if expires_at <= now {
        state.auth.tokens.remove(&digest);
        return Err(ApiError::Unauthorized(
            "Your token has expired; log in again".into(),
        ));
    }
    let record = user_from_row(&row);
    let new_expiry = now + Duration::seconds(state.config.token_ttl_secs);
    let expires_at = if new_expiry - expires_at >= Duration::seconds(REFRESH_SECS) {
        let mut tx = state.db.begin().await?;
        let stmt = Query::update()
            .table(Alias::new("api_token"))
            .value(Alias::new("expires_at"), new_expiry)
            .and_where(Expr::col(Alias::new("token_hash")).eq(digest.clone()))
            .to_owned();
        tx.execute(&stmt).await?;
        tx.commit().await?;
        new_expiry
    } else {
        expires_at
    };
    state.auth.tokens.insert(
        digest,
        CachedToken {
            user: record.user.clone(),
            expires_at,
            checked_at: now,
        },
    );
    Ok(record.user)
}

/// Extracts the token from `Authorization: Token token=<t>` (also accepting
/// `Token <t>` and `Bearer <t>`).
fn bearer(parts: &Parts) -> Option<&str> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let rest = header
        .strip_prefix("Token ")
        .or_else(|| header.strip_prefix("Bearer "))?
        .trim();
    let token = rest
        .strip_prefix("token=")
        .unwrap_or(rest)
        .trim_matches('"');
    (!token.is_empty()).then_some(token)
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)
            .ok_or_else(|| ApiError::Unauthorized("Your token is invalid or not present".into()))?;
        authenticate(state, token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "s3cret"));
        assert!(!verify_password(&hash, "wrong"));
        assert!(!verify_password("not a hash", "s3cret"));
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(token_digest(&a).len(), 64);
        assert_ne!(token_digest(&a), a);
    }

    #[test]
    fn throttle_blocks_after_max_failures_within_window() {
        let cache = AuthCache::default();
        let now = crate::values::now();
        for _ in 0..3 {
            cache.record_failure("bob", now, 60);
        }
        assert!(cache.check_throttle("bob", now, 3, 60).is_err());
        assert!(cache
            .check_throttle("bob", now + Duration::seconds(61), 3, 60)
            .is_ok());
        cache.record_success("bob");
        assert!(cache.check_throttle("bob", now, 3, 60).is_ok());
    }
}
