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
//!
//! # Layout
//! - this module: the enable and tamper switches and their routes;
//! - `software`: the software reads and routes;
//! - `report`: [`apply_unit_report`] and [`unit_instructions`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{post, put};
use axum::Router;
use chrono::NaiveDateTime;
use serde_json::Value as Json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::db::Tx;
use crate::error::ApiError;
use crate::rows::{eq, insert_id, update};
use crate::web::success;

mod report;
mod software;
pub(crate) use software::software_links;

pub use report::{
    apply_unit_report, unit_instructions, ReportOutcome, UnitInstructions, UnitReport,
};
pub use software::{
    active_software, expire_pending_software, pending_software, resolve_software,
    schedule_software, SoftwareLink,
};

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
        .route(
            "/products/{id}/update_software",
            put(software::update_software),
        )
        .route("/products/{id}/lock_software", put(software::lock_software))
        .route(
            "/products/{id}/expire_software_updates",
            put(software::expire_software_updates),
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
    product: &super::Product,
    desired: bool,
    by: &str,
    now: NaiveDateTime,
    config: &crate::ControlPlaneConfig,
) -> Result<EnableOutcome, ApiError> {
    let imei = product.product_imei.clone();
    let current = product.current_enable_flag;
    let before = enable_status(current, product.desired_enable_flag);
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
            wakeup_sms_id =
                Some(super::sms::record_wakeup(tx, &imei, Some(history), by, now, config).await?);
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
) -> Result<i64, ApiError> {
    insert_id(
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
    .await
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
    record_switch_change(tx, &ENABLE_HISTORY, imei, before, after, by, now).await
}

/// Sets the desired tamper-switch flag of a locked product; returns the
/// status after the call (no history row when nothing changed).
pub async fn set_tamper(
    tx: &mut Tx,
    product: &super::Product,
    desired: bool,
    by: &str,
    now: NaiveDateTime,
) -> Result<&'static str, ApiError> {
    let imei = product.product_imei.clone();
    let current = product.current_tamper_flag;
    let before = enable_status(current, product.desired_tamper_flag);
    let after = enable_status(current, desired);
    if before != after {
        record_switch_change(tx, &TAMPER_HISTORY, &imei, before, after, by, now).await?;
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
