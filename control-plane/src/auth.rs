//! Users, passwords, API tokens, permissions and scope.
//!
//! Passwords are hashed with argon2id. Tokens are 64 random alphanumeric
//! characters; only their SHA-256 is stored, so a database leak reveals no
//! usable token. A token expires `token_ttl_secs` after its last successful
//! use (spec: "Token Expiry"). To keep a hot GET path from writing on every
//! request, the sliding expiry is written back at most once a minute and
//! verified tokens are cached in memory for a few seconds.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{Duration, NaiveDateTime};
use moka::sync::Cache;
use rand::distributions::Alphanumeric;
use rand::Rng;
use sea_query::{Alias, Expr, Query};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::catalogue::Permission;
use crate::db::{Db, DbError};
use crate::error::ApiError;
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

/// How many argon2 computations run at once: one per core. Each takes tens
/// of milliseconds of CPU and about 19 MiB; more at once would only queue
/// on the same cores and multiply the memory.
fn hashing_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(cores)
    })
}

/// Runs an argon2 computation on the blocking pool, at most
/// [`hashing_permits`] at a time, so logins never occupy the async runtime
/// threads that also carry the API and the gateway.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let _permit = hashing_permits()
        .acquire()
        .await
        .expect("the hashing semaphore is never closed");
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// [`hash_password`] off the async runtime (see [`off_runtime`]).
pub async fn hash_password_blocking(password: String) -> Result<String, ApiError> {
    off_runtime(move || hash_password(&password)).await
}

/// [`verify_password`] off the async runtime (see [`off_runtime`]).
pub async fn verify_password_blocking(hash: String, password: String) -> bool {
    off_runtime(move || verify_password(&hash, &password)).await
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
    /// What queries run on this user's behalf may read.
    pub fn viewer(&self) -> crate::query::Viewer {
        crate::query::Viewer {
            visibility: self.visibility,
            permission: self.permissions,
        }
    }

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

/// Most verified tokens kept in memory; past it the least used are dropped
/// (and looked up again on their next use).
const MAX_CACHED_TOKENS: u64 = 100_000;

/// Most failure counters kept; past it the least used are dropped, which
/// only ever forgets failures (bounded memory under a spraying attack).
const MAX_FAILURE_COUNTERS: u64 = 1_000_000;

/// A client address may fail this many times `login_max_failures` within
/// the window, over all usernames, before it is refused (password spraying).
pub const ADDRESS_FAILURE_FACTOR: u32 = 4;

/// Whose failed logins a counter counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FailureKey {
    /// One username from one client address: `login_max_failures` of these
    /// lock that address out of that username only, so a stranger cannot
    /// lock the user out from everywhere.
    Pair(Option<IpAddr>, String),
    /// One client address over every username.
    Address(Option<IpAddr>),
}

/// Verified tokens by digest, and failed logins by client address and
/// username. Both are bounded caches whose entries also expire (moka), so
/// neither grows without limit.
pub struct AuthCache {
    tokens: Cache<String, CachedToken>,
    failures: Cache<FailureKey, (u32, NaiveDateTime)>,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache")
            .field("tokens", &self.tokens.entry_count())
            .field("failures", &self.failures.entry_count())
            .finish()
    }
}

impl Default for AuthCache {
    fn default() -> Self {
        Self::new(900)
    }
}

impl AuthCache {
    /// Caches whose failure counters expire `window_secs` after their first failure.
    pub fn new(window_secs: i64) -> Self {
        let window = std::time::Duration::from_secs(window_secs.max(1) as u64);
        Self {
            tokens: Cache::builder()
                .max_capacity(MAX_CACHED_TOKENS)
                .time_to_live(std::time::Duration::from_secs(CACHE_SECS as u64))
                .build(),
            failures: Cache::builder()
                .max_capacity(MAX_FAILURE_COUNTERS)
                .time_to_live(window)
                .build(),
        }
    }

    /// Forgets every cached token of a user (after a password or permission change or deletion).
    pub fn forget_user(&self, user_id: i64) {
        for (digest, cached) in self.tokens.iter() {
            if cached.user.user_id == user_id {
                self.tokens.invalidate(digest.as_ref());
            }
        }
    }

    fn count(&self, key: &FailureKey, now: NaiveDateTime, window_secs: i64) -> u32 {
        match self.failures.get(key) {
            Some((count, since)) if now - since < Duration::seconds(window_secs) => count,
            _ => 0,
        }
    }

    /// `Err(429)` when this address has failed too often for `username`,
    /// or over all usernames, within the window.
    pub fn check_throttle(
        &self,
        address: Option<IpAddr>,
        username: &str,
        now: NaiveDateTime,
        max: u32,
        window_secs: i64,
    ) -> Result<(), ApiError> {
        let pair = FailureKey::Pair(address, username.to_string());
        if self.count(&pair, now, window_secs) >= max {
            return Err(ApiError::TooManyRequests(format!(
                "Too many failed logins for '{username}' from your address; try again later"
            )));
        }
        let addr = FailureKey::Address(address);
        if self.count(&addr, now, window_secs) >= max.saturating_mul(ADDRESS_FAILURE_FACTOR) {
            return Err(ApiError::TooManyRequests(
                "Too many failed logins from your address; try again later".into(),
            ));
        }
        Ok(())
    }

    /// Records a failed login of `username` from `address`.
    pub fn record_failure(
        &self,
        address: Option<IpAddr>,
        username: &str,
        now: NaiveDateTime,
        window_secs: i64,
    ) {
        for key in [
            FailureKey::Pair(address, username.to_string()),
            FailureKey::Address(address),
        ] {
            // get-then-insert may lose a concurrent increment; a counter that
            // is one short under a race still throttles.
            let (count, since) = match self.failures.get(&key) {
                Some((c, since)) if now - since < Duration::seconds(window_secs) => (c, since),
                _ => (0, now),
            };
            self.failures.insert(key, (count.saturating_add(1), since));
        }
    }

    /// Clears this address's failures for `username` after a successful login.
    pub fn record_success(&self, address: Option<IpAddr>, username: &str) {
        self.failures
            .invalidate(&FailureKey::Pair(address, username.to_string()));
    }
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
    let stmt = Query::select()
        .columns(user_columns())
        .from(Alias::new("user"))
        .and_where(Expr::col(Alias::new("username")).eq(username))
        .to_owned();
    let rows: Vec<UserRow> = db.fetch_typed(&stmt).await?;
    Ok(rows.into_iter().next().map(UserRow::into_record))
}

/// The `user` columns the login and token paths read ([`UserRow`]), table-qualified.
fn user_columns() -> impl Iterator<Item = (Alias, Alias)> {
    let identity = ["user_id", "username", "password"];
    let access = ["permissions", "user_product_visibility", "entity_id"];
    let profile = ["display_name", "name", "hub_id", "shop_id"];
    identity
        .into_iter()
        .chain(access)
        .chain(profile)
        .map(|c| (Alias::new("user"), Alias::new(c)))
}

/// A `user` row with [`user_columns`].
#[derive(sqlx::FromRow)]
struct UserRow {
    user_id: Option<i64>,
    username: Option<String>,
    password: Option<String>,
    permissions: Option<String>,
    user_product_visibility: Option<String>,
    entity_id: Option<i64>,
    display_name: Option<String>,
    name: Option<String>,
    hub_id: Option<i64>,
    shop_id: Option<i64>,
}

impl UserRow {
    fn into_record(self) -> UserRecord {
        let permissions = self
            .permissions
            .as_deref()
            .and_then(Permission::parse)
            .unwrap_or(Permission::Overview);
        let visibility = match self.user_product_visibility.as_deref() {
            Some("GLOBAL") => Visibility::Global,
            // An ENTITY user without an entity sees no products at all.
            _ => Visibility::Entity(self.entity_id.unwrap_or(-1)),
        };
        UserRecord {
            user: AuthUser {
                user_id: self.user_id.unwrap_or_default(),
                username: self.username.unwrap_or_default(),
                permissions,
                visibility,
                entity_id: self.entity_id,
            },
            password_hash: self.password.unwrap_or_default(),
            display_name: self.display_name,
            name: self.name,
            hub_id: self.hub_id,
            shop_id: self.shop_id,
        }
    }
}

/// A token's expiry with its user's row (the token path's one query).
#[derive(sqlx::FromRow)]
struct TokenUserRow {
    expires_at: Option<NaiveDateTime>,
    #[sqlx(flatten)]
    user: UserRow,
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
    // Expired tokens are of no further use to anyone: every login purges
    // them all (tokens live hours, so the table stays small).
    let purge = Query::delete()
        .from_table(Alias::new("api_token"))
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
            return Ok(cached.user);
        }
    }
    // One query on a cache miss: the token's expiry and its user's record.
    let stmt = Query::select()
        .columns(user_columns())
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
    let rows: Vec<TokenUserRow> = state.db.fetch_typed(&stmt).await?;
    let invalid = || ApiError::Unauthorized("Your token is invalid or not present".into());
    let row = rows.into_iter().next().ok_or_else(invalid)?;
    let expires_at = row.expires_at.ok_or_else(invalid)?;
    if expires_at <= now {
        state.auth.tokens.invalidate(&digest);
        return Err(ApiError::Unauthorized(
            "Your token has expired; log in again".into(),
        ));
    }
    let record = row.user.into_record();
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
        let attacker = Some(IpAddr::from([192, 0, 2, 1]));
        let owner = Some(IpAddr::from([198, 51, 100, 7]));
        for _ in 0..3 {
            cache.record_failure(attacker, "bob", now, 60);
        }
        assert!(cache.check_throttle(attacker, "bob", now, 3, 60).is_err());
        // The stranger's failures do not lock bob out from his own address.
        assert!(cache.check_throttle(owner, "bob", now, 3, 60).is_ok());
        assert!(cache
            .check_throttle(attacker, "bob", now + Duration::seconds(61), 3, 60)
            .is_ok());
        cache.record_success(attacker, "bob");
        assert!(cache.check_throttle(attacker, "bob", now, 3, 60).is_ok());
    }

    #[test]
    fn throttle_blocks_an_address_spraying_many_usernames() {
        let cache = AuthCache::default();
        let now = crate::values::now();
        let sprayer = Some(IpAddr::from([192, 0, 2, 9]));
        for i in 0..(3 * ADDRESS_FAILURE_FACTOR) {
            let user = format!("user{i}");
            assert!(cache.check_throttle(sprayer, &user, now, 3, 60).is_ok());
            cache.record_failure(sprayer, &user, now, 60);
        }
        let err = cache
            .check_throttle(sprayer, "fresh-name", now, 3, 60)
            .unwrap_err();
        assert!(err.to_string().contains("from your address"), "{err}");
        assert!(cache
            .check_throttle(
                Some(IpAddr::from([192, 0, 2, 10])),
                "fresh-name",
                now,
                3,
                60
            )
            .is_ok());
    }
}
