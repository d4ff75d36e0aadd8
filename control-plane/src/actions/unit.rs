//! Unit control: the enable and tamper-switch pending state machines, the
//! software a unit should run, and [`apply_unit_report`], which closes the
//! loop when the unit reports what it actually does.
//!
//! # The pending state machine
//! A product carries a *desired* flag (what we want) and a *current* flag
//! (what the unit last reported). The enable status is derived from the
//! pair and never stored apart from it:
//!
//! | current | desired | status             |
//! |---------|---------|--------------------|
//! | false   | false   | `disabled`         |
//! | false   | true    | `pending_enabled`  |
//! | true    | true    | `enabled`          |
//! | true    | false   | `pending_disabled` |
//!
//! `enable`/`disable` set the desired flag at once; the unit's next report
//! ([`apply_unit_report`]) sets the current flag. Every change of the
//! status appends one `enable_history` row whose `prev_enable_state` is the
//! status before the change, under the product's row lock, so the history
//! is one unbroken chain however many requests race. Asking for the flag
//! that is already desired changes nothing and succeeds (spec: "if a unit
//! is already disabled the API will return success anyway").
//!
//! The tamper switch works the same way with `current_tamper_flag`,
//! `desired_tamper_flag` and `tamper_enable_history`.
//!
//! # Software
//! `product_software_linker` rows say which software a unit runs or should
//! run:
//! - *active*: `date_added` set, `date_removed` NULL: the unit runs it;
//! - *pending*: both NULL: an update the unit has not confirmed yet;
//! - *removed*: both set: it ran this before;
//! - *expired*: `date_added` NULL, `date_removed` set: an update that was
//!   cancelled or superseded before the unit confirmed it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{post, put};
use axum::Router;
use chrono::NaiveDateTime;
use sea_query::{Alias, Expr, Order, Query};
use serde_json::{json, Value as Json};

use super::{object, JoinOn};
use crate::auth::AuthUser;
use crate::catalogue::{Column, ColumnType, Permission};
use crate::db::{Row, Tx};
use crate::error::ApiError;
use crate::http::{success, AppState, JsonBody};
use crate::rows::{c, col, eq, insert, tc, update, RowExt};
use crate::values::format_datetime;

/// The `user` of history rows written because the unit reported a change.
pub const UNIT_USER: &str = "unit";

/// Which of a unit's two switches a route sets.
#[derive(Debug, Clone, Copy)]
enum Switch {
    Enable,
    Tamper,
}

/// The switch routes: path, switch, desired flag.
const SWITCH_ROUTES: [(&str, Switch, bool); 4] = [
    ("/products/{id}/enable", Switch::Enable, true),
    ("/products/{id}/disable", Switch::Enable, false),
    ("/products/{id}/enable_tamper_switch", Switch::Tamper, true),
    (
        "/products/{id}/disable_tamper_switch",
        Switch::Tamper,
        false,
    ),
];

pub(super) fn router() -> Router<AppState> {
    let switches = SWITCH_ROUTES
        .iter()
        .fold(Router::new(), |router, &(path, switch, desired)| {
            let handler =
                move |State(state): State<AppState>, user: AuthUser, Path(imei): Path<String>| {
                    set_switch(state, user, imei, switch, desired)
                };
            router.route(path, put(handler))
        });
    switches
        .route("/products/{id}/update_software", put(update_software))
        .route("/products/{id}/lock_software", put(lock_software))
        .route(
            "/products/{id}/expire_software_updates",
            put(expire_software_updates),
        )
        .route("/products/{id}/send_wakeup", post(super::sms::send_wakeup))
}

/// The enable (or tamper) status of a current/desired pair.
pub fn enable_status(current: bool, desired: bool) -> &'static str {
    match (current, desired) {
        (false, false) => "disabled",
        (false, true) => "pending_enabled",
        (true, true) => "enabled",
        (true, false) => "pending_disabled",
    }
}

/// What [`set_enable`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnableOutcome {
    /// The status after the call.
    pub status: &'static str,
    /// The new `enable_history` row, or `None` when nothing changed.
    pub enable_history_id: Option<i64>,
    /// The `sms_history` row of a WAKEUP SMS to send after commit.
    pub wakeup_sms_id: Option<i64>,
}

/// Sets the desired enable flag of a product locked in `tx` (see
/// [`super::lock_product`]), recording history, the `product-status`
/// notification and, for WAKEUP-enabled software, a WAKEUP SMS to send
/// once `tx` commits (the SMS provider is never called inside a
/// transaction: on SQLite that would hold every writer up).
pub async fn set_enable(
    tx: &mut Tx,
    product: &Row,
    desired: bool,
    by: &str,
    now: NaiveDateTime,
    config: &crate::ControlPlaneConfig,
) -> Result<EnableOutcome, ApiError> {
    let imei = product.text("product_imei").unwrap_or_default().to_string();
    let current = product.flag("current_enable_flag");
    let before = enable_status(current, product.flag("desired_enable_flag"));
    let after = enable_status(current, desired);
    if before == after {
        return Ok(EnableOutcome {
            status: after,
            enable_history_id: None,
            wakeup_sms_id: None,
        });
    }
    let history = record_enable_change(tx, &imei, before, after, by, now).await?;
    update(
        tx,
        "product",
        vec![
            ("desired_enable_flag", desired.into()),
            ("latest_enable_history_id", history.into()),
        ],
        eq("product_imei", imei.as_str()),
        by,
        now,
    )
    .await?;
    super::notify_product_status(tx, &imei, by, now).await?;
    let mut wakeup_sms_id = None;
    if after.starts_with("pending") {
        let software = active_software(tx, &imei).await?;
        let wakes = software
            .as_ref()
            .is_some_and(|(_, name)| config.wakeup_enabled_software.iter().any(|s| s == name));
        if wakes {
            let sms = super::sms::record_wakeup(tx, &imei, Some(history), by, now, config).await?;
            wakeup_sms_id = sms.int("sms_history_id");
        }
    }
    Ok(EnableOutcome {
        status: after,
        enable_history_id: Some(history),
        wakeup_sms_id,
    })
}

/// The history table of one of the two pending state machines.
struct SwitchHistory {
    table: &'static str,
    prev_column: &'static str,
    current_column: &'static str,
}

const ENABLE_HISTORY: SwitchHistory = SwitchHistory {
    table: "enable_history",
    prev_column: "prev_enable_state",
    current_column: "current_enable_state",
};

const TAMPER_HISTORY: SwitchHistory = SwitchHistory {
    table: "tamper_enable_history",
    prev_column: "prev_tamper_enable_state",
    current_column: "current_tamper_enable_state",
};

/// Appends one row `before -> after` to a switch's history.
async fn record_switch_change(
    tx: &mut Tx,
    history: &SwitchHistory,
    imei: &str,
    before: &str,
    after: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<Row, ApiError> {
    Ok(insert(
        tx,
        history.table,
        vec![
            ("product_imei", imei.into()),
            (history.prev_column, before.into()),
            (history.current_column, after.into()),
            ("user", by.into()),
            ("date", now.into()),
        ],
        by,
        now,
    )
    .await?)
}

/// Appends an `enable_history` row; returns its id.
pub(super) async fn record_enable_change(
    tx: &mut Tx,
    imei: &str,
    before: &str,
    after: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<i64, ApiError> {
    let row = record_switch_change(tx, &ENABLE_HISTORY, imei, before, after, by, now).await?;
    row.int("enable_history_id")
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("enable_history without id")))
}

async fn record_tamper_change(
    tx: &mut Tx,
    imei: &str,
    before: &str,
    after: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    record_switch_change(tx, &TAMPER_HISTORY, imei, before, after, by, now).await?;
    Ok(())
}

/// Sets the desired tamper-switch flag of a locked product; returns the
/// status after the call (no history row when nothing changed).
pub async fn set_tamper(
    tx: &mut Tx,
    product: &Row,
    desired: bool,
    by: &str,
    now: NaiveDateTime,
) -> Result<&'static str, ApiError> {
    let imei = product.text("product_imei").unwrap_or_default().to_string();
    let current = product.flag("current_tamper_flag");
    let before = enable_status(current, product.flag("desired_tamper_flag"));
    let after = enable_status(current, desired);
    if before != after {
        record_tamper_change(tx, &imei, before, after, by, now).await?;
        update(
            tx,
            "product",
            vec![("desired_tamper_flag", desired.into())],
            eq("product_imei", imei.as_str()),
            by,
            now,
        )
        .await?;
    }
    Ok(after)
}

impl Switch {
    /// The spec's success message.
    fn message(self, imei: &str, desired: bool) -> String {
        match (self, desired) {
            (Self::Enable, true) => "Product enabled".into(),
            (Self::Enable, false) => "Product disabled".into(),
            (Self::Tamper, true) => format!("Product #{imei} tamper_switch_enabled"),
            (Self::Tamper, false) => format!("Product #{imei} tamper_switch_disabled"),
        }
    }
}

/// One switch route: the desired flag set on the locked product, recorded
/// with the unit's pending MTs (the unit gets them on its next connect,
/// whatever restarts), and queued for the unit after commit.
async fn set_switch(
    state: AppState,
    user: AuthUser,
    imei: String,
    switch: Switch,
    desired: bool,
) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let product = super::lock_product(&mut tx, &user.visibility, &imei).await?;
    let by = user.username.as_str();
    let wakeup_sms_id = match switch {
        Switch::Enable => {
            set_enable(&mut tx, &product, desired, by, now, &state.config)
                .await?
                .wakeup_sms_id
        }
        Switch::Tamper => {
            set_tamper(&mut tx, &product, desired, by, now).await?;
            None
        }
    };
    let sent = crate::rtc::mt::commit_with_pending(&state, tx, &imei).await?;
    if let Some(sms_id) = wakeup_sms_id {
        // The change is committed; a failed SMS is recorded on its row and
        // the unit still picks the change up on its next connection.
        if let Err(e) = super::sms::deliver(&state, sms_id).await {
            // Answering 500 would tell the agent the enable failed; it did not.
            tracing::error!(sms_id, imei = %imei, error = %e, "WAKEUP SMS not handed over");
        }
    }
    crate::rtc::mt::enqueue_after_commit(&state, &imei, sent).await;
    Ok(success(
        StatusCode::OK,
        switch.message(&imei, desired),
        Json::Null,
    ))
}

// ---------------------------------------------------------------- software

/// The software the unit runs: `(software_version_type_id, name)`.
pub async fn active_software(tx: &mut Tx, imei: &str) -> Result<Option<(i64, String)>, ApiError> {
    let mut stmt = software_rows(imei);
    stmt.and_where(c("l", "date_added").is_not_null())
        .and_where(c("l", "date_removed").is_null())
        .order_by((Alias::new("l"), Alias::new("date_added")), Order::Desc)
        .order_by(
            (Alias::new("l"), Alias::new("product_software_linker_id")),
            Order::Desc,
        )
        .limit(1);
    let found = fetch_software(tx, &stmt).await?;
    Ok(found.into_iter().next().map(|r| (r.software_id, r.name)))
}

/// A `product_software_linker` row with its software's name.
#[derive(Debug, Clone)]
pub struct SoftwareLink {
    pub linker_id: i64,
    pub software_id: i64,
    pub name: String,
    pub update_attempts: i64,
    pub created_at: Option<String>,
}

fn software_rows(imei: &str) -> sea_query::SelectStatement {
    Query::select()
        .expr_as(
            tc("l", "product_software_linker_id"),
            Alias::new("product_software_linker_id"),
        )
        .expr_as(
            tc("l", "software_version_type_id"),
            Alias::new("software_version_type_id"),
        )
        .expr_as(tc("s", "name"), Alias::new("name"))
        .expr_as(tc("l", "update_attempts"), Alias::new("update_attempts"))
        .expr_as(tc("l", "created_at"), Alias::new("created_at"))
        .from_as(Alias::new("product_software_linker"), Alias::new("l"))
        .join_on(
            "software_version_type",
            "s",
            "l",
            "software_version_type_id",
        )
        .and_where(c("l", "product_imei").eq(imei))
        .to_owned()
}

/// A row of [`software_rows`].
#[derive(sqlx::FromRow)]
struct SoftwareLinkRow {
    product_software_linker_id: Option<i64>,
    software_version_type_id: Option<i64>,
    name: Option<String>,
    update_attempts: Option<i64>,
    created_at: Option<NaiveDateTime>,
}

async fn fetch_software(
    tx: &mut Tx,
    stmt: &sea_query::SelectStatement,
) -> Result<Vec<SoftwareLink>, ApiError> {
    let rows: Vec<SoftwareLinkRow> = tx.fetch_typed(stmt).await?;
    Ok(rows
        .into_iter()
        .map(|r| SoftwareLink {
            linker_id: r.product_software_linker_id.unwrap_or_default(),
            software_id: r.software_version_type_id.unwrap_or_default(),
            name: r.name.unwrap_or_default(),
            update_attempts: r.update_attempts.unwrap_or_default(),
            created_at: r.created_at.as_ref().map(format_datetime),
        })
        .collect())
}

/// Pending software updates of a unit, oldest first.
pub async fn pending_software(tx: &mut Tx, imei: &str) -> Result<Vec<SoftwareLink>, ApiError> {
    let mut stmt = software_rows(imei);
    stmt.and_where(c("l", "date_added").is_null())
        .and_where(c("l", "date_removed").is_null())
        .order_by(
            (Alias::new("l"), Alias::new("product_software_linker_id")),
            Order::Asc,
        );
    fetch_software(tx, &stmt).await
}

/// Resolves the `software` argument: a `software_version_type_id` (number
/// or digit string) or a software `name`. A missing one is a 400 naming
/// the field.
pub async fn resolve_software(tx: &mut Tx, arg: &Json) -> Result<(i64, String), ApiError> {
    let by_id = match arg {
        Json::Number(n) => Some(n.as_i64().ok_or_else(|| {
            ApiError::field("software", "field 'software' must be a software id or name")
        })?),
        Json::String(s) => s.trim().parse::<i64>().ok(),
        _ => {
            return Err(ApiError::field(
                "software",
                "field 'software' must be a software_version_type_id or a software name",
            ))
        }
    };
    let mut stmt = Query::select()
        .columns(["software_version_type_id", "name"].map(Alias::new))
        .from(Alias::new("software_version_type"))
        .order_by(Alias::new("software_version_type_id"), Order::Asc)
        .limit(1)
        .to_owned();
    let name = arg.as_str().unwrap_or_default().to_string();
    match by_id {
        Some(id) => {
            stmt.and_where(eq("software_version_type_id", id).or(eq("name", name.as_str())))
        }
        None => stmt.and_where(eq("name", name.as_str())),
    };
    let cols = [
        col("software_version_type_id", ColumnType::Int),
        col("name", ColumnType::String),
    ];
    let refs: Vec<&Column> = cols.iter().collect();
    let found = tx.fetch_optional(&stmt, &refs).await?;
    found
        .and_then(|r| {
            Some((
                r.int("software_version_type_id")?,
                r.text("name")?.to_string(),
            ))
        })
        .ok_or_else(|| {
            ApiError::field(
                "software",
                format!("No software_version_type with id or name {arg}"),
            )
        })
}

/// Refuses software that the product type does not list, when the product
/// type lists any (`product_type_software_version_type_linker`): sending a
/// unit another hardware's firmware could brick it.
async fn check_software_fits(
    tx: &mut Tx,
    product: &Row,
    software_id: i64,
    name: &str,
) -> Result<(), ApiError> {
    let Some(product_type) = product.int("product_type_id") else {
        return Ok(());
    };
    let stmt = Query::select()
        .column(Alias::new("software_version_type_id"))
        .from(Alias::new("product_type_software_version_type_linker"))
        .and_where(eq("product_type_id", product_type))
        .to_owned();
    let id = col("software_version_type_id", ColumnType::Int);
    let allowed: Vec<i64> = tx
        .fetch_all(&stmt, &[&id])
        .await?
        .iter()
        .filter_map(|r| r.int("software_version_type_id"))
        .collect();
    if allowed.is_empty() || allowed.contains(&software_id) {
        Ok(())
    } else {
        Err(ApiError::field(
            "software",
            format!("software_version '{name}' is not available for product_type {product_type}"),
        ))
    }
}

/// Expires a unit's pending software updates; returns how many.
pub async fn expire_pending_software(
    tx: &mut Tx,
    imei: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<u64, ApiError> {
    update(
        tx,
        "product_software_linker",
        vec![("date_removed", now.into())],
        eq("product_imei", imei)
            .and(Expr::col(Alias::new("date_added")).is_null())
            .and(Expr::col(Alias::new("date_removed")).is_null()),
        by,
        now,
    )
    .await
}

/// Schedules `software_id` for a locked product: pending updates to other
/// software expire; an identical pending update is kept (idempotent).
/// Nothing is scheduled when the unit already runs it. The lock is the
/// caller's business.
pub async fn schedule_software(
    tx: &mut Tx,
    product: &Row,
    software_id: i64,
    by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let imei = product.text("product_imei").unwrap_or_default().to_string();
    let pending = pending_software(tx, &imei).await?;
    let keep = pending
        .iter()
        .find(|p| p.software_id == software_id)
        .map(|p| p.linker_id);
    for p in pending.iter().filter(|p| Some(p.linker_id) != keep) {
        update(
            tx,
            "product_software_linker",
            vec![("date_removed", now.into())],
            eq("product_software_linker_id", p.linker_id),
            by,
            now,
        )
        .await?;
    }
    let runs_it = active_software(tx, &imei)
        .await?
        .is_some_and(|(id, _)| id == software_id);
    if keep.is_none() && !runs_it {
        insert(
            tx,
            "product_software_linker",
            vec![
                ("product_imei", imei.as_str().into()),
                ("software_version_type_id", software_id.into()),
                ("update_attempts", 0i64.into()),
            ],
            by,
            now,
        )
        .await?;
    }
    Ok(())
}

async fn update_software(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::System)?;
    let body = object(body)?;
    let arg = body
        .get("software")
        .filter(|v| !v.is_null())
        .ok_or_else(|| ApiError::field("software", "field 'software' is required"))?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let product = super::lock_product(&mut tx, &user.visibility, &imei).await?;
    let (software_id, name) = resolve_software(&mut tx, arg).await?;
    if let Some(lock) = product.int("software_lock") {
        if lock != software_id {
            return Err(ApiError::field(
                "software",
                format!(
                    "Product #{imei} is locked to software_version_type {lock}; remove the lock first"
                ),
            ));
        }
    }
    check_software_fits(&mut tx, &product, software_id, &name).await?;
    schedule_software(&mut tx, &product, software_id, &user.username, now).await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        format!("#{imei} updated to software_version {name}"),
        Json::Null,
    ))
}

async fn lock_software(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::System)?;
    let body = object(body)?;
    // A blank payload, `{}`, `{"software": null}` or `""` all remove the lock.
    let arg = body
        .get("software")
        .filter(|v| !v.is_null() && v.as_str().is_none_or(|s| !s.trim().is_empty()));
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let product = super::lock_product(&mut tx, &user.visibility, &imei).await?;
    let Some(arg) = arg else {
        update(
            &mut tx,
            "product",
            vec![("software_lock", sea_query::Value::BigInt(None))],
            eq("product_imei", imei.as_str()),
            &user.username,
            now,
        )
        .await?;
        tx.commit().await?;
        return Ok(success(
            StatusCode::OK,
            format!("#{imei} software_lock is now removed"),
            json!({"software_lock_id": null, "software_lock_name": null}),
        ));
    };
    let (software_id, name) = resolve_software(&mut tx, arg).await?;
    check_software_fits(&mut tx, &product, software_id, &name).await?;
    update(
        &mut tx,
        "product",
        vec![("software_lock", software_id.into())],
        eq("product_imei", imei.as_str()),
        &user.username,
        now,
    )
    .await?;
    schedule_software(&mut tx, &product, software_id, &user.username, now).await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        format!("#{imei} updated and locked to software_version {name}"),
        json!({"software_lock_id": software_id, "software_lock_name": name}),
    ))
}

async fn expire_software_updates(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::System)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    super::lock_product(&mut tx, &user.visibility, &imei).await?;
    let n = expire_pending_software(&mut tx, &imei, &user.username, now).await?;
    tx.commit().await?;
    let message = if n == 0 {
        format!("Product {imei} had no pending updates to expire")
    } else {
        format!("Product {imei} had {n} software update(s) expired")
    };
    Ok(success(StatusCode::OK, message, Json::Null))
}

// ---------------------------------------------------------- unit reports

/// What a unit reported about itself on a connection. `None` fields were
/// not part of the report and change nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitReport {
    /// The unit's actual enable state (on = true).
    pub enable_flag: Option<bool>,
    /// The unit's actual tamper-switch state.
    pub tamper_flag: Option<bool>,
    /// The name of the software the unit runs (`software_version_type.name`).
    pub software: Option<String>,
}

/// What [`apply_unit_report`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportOutcome {
    /// The new enable status, when the report changed it.
    pub enable_status: Option<&'static str>,
    /// The new tamper status, when the report changed it.
    pub tamper_status: Option<&'static str>,
    /// `true` when the reported software became the active one.
    pub software_changed: bool,
}

/// Applies a unit's report of its actual state, inside the caller's
/// transaction: the current flags move to what the unit says (so
/// `pending_enabled` becomes `enabled` once the unit confirms), with
/// history rows written by [`UNIT_USER`] and a `product-status`
/// notification for an enable-status change. A reported software version
/// becomes the active one: a pending update to it is confirmed, other
/// pending updates count a failed attempt. Software names that are not in
/// `software_version_type` are ignored (logged): the catalogue of releases
/// is SYSTEM-managed. A product that does not exist is a 404 `ApiError`.
pub async fn apply_unit_report(
    tx: &mut Tx,
    imei: &str,
    report: &UnitReport,
    now: NaiveDateTime,
) -> Result<ReportOutcome, ApiError> {
    let product = super::lock_product(tx, &crate::query::Visibility::Global, imei).await?;
    let mut outcome = ReportOutcome::default();
    if let Some(actual) = report.enable_flag {
        let current = product.flag("current_enable_flag");
        if actual != current {
            let desired = product.flag("desired_enable_flag");
            let before = enable_status(current, desired);
            let after = enable_status(actual, desired);
            let history = record_enable_change(tx, imei, before, after, UNIT_USER, now).await?;
            let mut values = vec![
                ("current_enable_flag", actual.into()),
                ("latest_enable_history_id", history.into()),
            ];
            if !actual {
                values.push(("disable_date", now.into()));
            }
            update(
                tx,
                "product",
                values,
                eq("product_imei", imei),
                UNIT_USER,
                now,
            )
            .await?;
            super::notify_product_status(tx, imei, UNIT_USER, now).await?;
            outcome.enable_status = Some(after);
        }
    }
    if let Some(actual) = report.tamper_flag {
        let current = product.flag("current_tamper_flag");
        if actual != current {
            let desired = product.flag("desired_tamper_flag");
            let before = enable_status(current, desired);
            let after = enable_status(actual, desired);
            record_tamper_change(tx, imei, before, after, UNIT_USER, now).await?;
            update(
                tx,
                "product",
                vec![("current_tamper_flag", actual.into())],
                eq("product_imei", imei),
                UNIT_USER,
                now,
            )
            .await?;
            outcome.tamper_status = Some(after);
        }
    }
    if let Some(name) = report.software.as_deref().filter(|s| !s.is_empty()) {
        outcome.software_changed = apply_reported_software(tx, imei, name, now).await?;
    }
    Ok(outcome)
}

async fn apply_reported_software(
    tx: &mut Tx,
    imei: &str,
    name: &str,
    now: NaiveDateTime,
) -> Result<bool, ApiError> {
    let active = active_software(tx, imei).await?;
    let pending = pending_software(tx, imei).await?;
    if active.as_ref().is_some_and(|(_, n)| n == name) {
        // Still on the old version: every pending update missed a chance.
        for p in &pending {
            update(
                tx,
                "product_software_linker",
                vec![("update_attempts", (p.update_attempts + 1).into())],
                eq("product_software_linker_id", p.linker_id),
                UNIT_USER,
                now,
            )
            .await?;
        }
        return Ok(false);
    }
    let software_id = match pending.iter().find(|p| p.name == name) {
        Some(p) => Some(p.software_id),
        None => resolve_software(tx, &Json::String(name.to_string()))
            .await
            .ok()
            .filter(|(_, n)| n == name)
            .map(|(id, _)| id),
    };
    let Some(software_id) = software_id else {
        tracing::warn!(
            imei,
            software = name,
            "unit reports unknown software; ignored"
        );
        return Ok(false);
    };
    // The previous software is removed...
    update(
        tx,
        "product_software_linker",
        vec![("date_removed", now.into())],
        eq("product_imei", imei)
            .and(Expr::col(Alias::new("date_added")).is_not_null())
            .and(Expr::col(Alias::new("date_removed")).is_null()),
        UNIT_USER,
        now,
    )
    .await?;
    // ...the pending update to it (if any) is confirmed, other pending
    // updates count the attempt.
    let mut confirmed = false;
    for p in &pending {
        if p.software_id == software_id && !confirmed {
            update(
                tx,
                "product_software_linker",
                vec![("date_added", now.into())],
                eq("product_software_linker_id", p.linker_id),
                UNIT_USER,
                now,
            )
            .await?;
            confirmed = true;
        } else {
            update(
                tx,
                "product_software_linker",
                vec![("update_attempts", (p.update_attempts + 1).into())],
                eq("product_software_linker_id", p.linker_id),
                UNIT_USER,
                now,
            )
            .await?;
        }
    }
    if !confirmed {
        insert(
            tx,
            "product_software_linker",
            vec![
                ("product_imei", imei.into()),
                ("software_version_type_id", software_id.into()),
                ("date_added", now.into()),
                ("update_attempts", 0i64.into()),
            ],
            UNIT_USER,
            now,
        )
        .await?;
    }
    Ok(true)
}

/// What the unit should be told on its next connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitInstructions {
    pub desired_enable_flag: bool,
    pub desired_tamper_flag: bool,
    /// The software to update to, if an update is pending:
    /// `(software_version_type_id, name)`.
    pub pending_software: Option<(i64, String)>,
}

/// The desired state of a unit (for the gateway's MT side).
pub async fn unit_instructions(tx: &mut Tx, imei: &str) -> Result<UnitInstructions, ApiError> {
    let product = super::visible_product(tx, &crate::query::Visibility::Global, imei).await?;
    let pending = pending_software(tx, imei).await?;
    Ok(UnitInstructions {
        desired_enable_flag: product.flag("desired_enable_flag"),
        desired_tamper_flag: product.flag("desired_tamper_flag"),
        pending_software: pending.last().map(|p| (p.software_id, p.name.clone())),
    })
}
