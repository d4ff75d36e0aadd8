//! Fixtures shared by the criterion benches in `benches/` and the instruction-count gate
//! (`src/bin/bench-gate.rs`), so the two measure the same inputs.

use codec::mo::StatusReport;
use control_plane::catalogue::Permission;
use control_plane::query::{Page, Viewer, Visibility};

/// A status report with every field set (50 bytes of CBOR).
pub fn status_report() -> StatusReport<'static> {
    StatusReport {
        time: Some(1_518_543_688),
        enabled: Some(true),
        tamper_enabled: Some(true),
        tamper_triggered: Some(false),
        software_version: Some("hub-stc-6"),
        energy_limit: Some(120.5),
        capacity_limit: Some(80.25),
        balance: Some(432_000),
        expected_expiry: Some(1_518_975_688),
    }
}

/// The telemetry fields of the time-series benches.
pub const TSDB_FIELDS: [&str; 8] = [
    "current",
    "voltage",
    "temperature",
    "panel_voltage",
    "charge_current",
    "state_of_charge_percent",
    "pulse_count",
    "energy",
];

/// The IMEI of simulated unit `i`.
pub fn imei(i: usize) -> String {
    format!("35{i:013}")
}

/// A realistic product list query: three filters including an `or`, a relation filter,
/// `order_by`.
pub const PRODUCT_QUERY: &str = r#"{
    "filters": [
        {"name": "product_type_id", "op": "in", "val": [4, 6, 10]},
        {"or": [
            {"name": "current_enable_flag", "op": "eq", "val": false},
            {"name": "disable_date", "op": "lt", "val": "2016-10-21T11:38:16.884380"}
        ]},
        {"name": "notes__note_text", "op": "ilike", "val": "%battery%"}
    ],
    "order_by": [{"field": "created_at", "direction": "desc"}],
    "limit": 100
}"#;

/// Who runs [`PRODUCT_QUERY`]: an ENTITY user, so the scope subqueries are built too.
pub const PRODUCT_QUERY_VIEWER: Viewer = Viewer {
    visibility: Visibility::Entity(42),
    permission: Permission::Admin,
};

/// The page [`PRODUCT_QUERY`] asks for.
pub const PRODUCT_QUERY_PAGE: Option<Page> = Some(Page {
    page: 2,
    per_page: 10,
});
