//! Manufacturing: PCB parts (with their SIM), products built from a PCB,
//! and product serial numbers.
//!
//! # Serial numbers
//! `<prefix>-<number>-<check>`, e.g. `HB000501-084031-B`:
//! - `prefix`: `ControlPlaneConfig::serial_prefix` (default `HB000501`);
//! - `number`: the next `serial.serial_number`, zero-padded to six digits
//!   (more digits past 999999). The `serial` table's identity column hands
//!   every caller a different number, also under concurrency, and
//!   `product.serial_number` is UNIQUE as a second guard;
//! - `check`: one character of `0-9A-Z`, the Luhn mod 36 check character
//!   of `<prefix><number>` (letters and digits only; A=10 ... Z=35). It
//!   catches every single mistyped character and most swaps of neighbours
//!   when a serial is typed in from a label ([`is_valid_serial`]).
//!
//! The serial is drawn when the PCB is created (it is part of the PCB's
//! `properties`, as in the spec's examples) and becomes the product's
//! `serial_number` when the product is built from that PCB.
//!
//! # A new product's lifecycle
//! Inside the one transaction that creates it, a product is born in state
//! NON_EXISTANT (a `state` row 1 -> 1), disabled (an `enable_history` row
//! `init` -> `disabled`), with tamper switch off, linked to its parts and
//! to entity 1 "Unknown Entity". Once its parts are linked the factory flow
//! is complete and the same transaction moves it NON_EXISTANT -> STORED
//! (a second `state` row) and writes one `product-status` notification.
//! So a committed product is always STORED, with its birth in the history;
//! any failure rolls back the product, its parts and its serial together.
//!
//! # Layout
//! - `serial`: drawing, formatting and checking serial numbers;
//! - `pcb`: the `create_*_pcb` requests, the PCB and SIM parts they create;
//! - `product`: the `create_product/<kind>`, `create_hub2` and
//!   `create_enterprise` requests, the product built from a PCB.

use axum::extract::State;
use axum::routing::post;
use axum::Router;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::web::JsonBody;

mod pcb;
mod product;
mod serial;

pub use pcb::{
    create_pcb, PcbParts, PcbRequest, PcbRoute, TextRule, PCB_IMEI, PCB_ROUTES, PCB_TEXT_FIELDS,
};
pub use product::{
    create_product_from_pcb, CreatedProduct, ProductKind, ProductRequest, MAX_BATTERY_SERIAL,
    PRODUCT_FIELDS,
};
pub use serial::{check_char, format_serial, is_valid_serial, next_serial};

/// Default part types (spec and migration 0003).
pub const SIM_PART_TYPE: i64 = 43;
pub const TIGER_PCB_PART_TYPE: i64 = 44;
pub const HYENA_PCB_PART_TYPE: i64 = 77;
pub const KOALA_PCB_PART_TYPE: i64 = 122;
pub const JACKAL_PCB_PART_TYPE: i64 = 158;

pub(super) fn router() -> Router<AppState> {
    let pcb_routes = PCB_ROUTES.iter().fold(Router::new(), |router, &route| {
        let handler =
            move |State(state): State<AppState>, user: AuthUser, JsonBody(body): JsonBody| {
                pcb::pcb_endpoint(state, user, body, route)
            };
        router.route(route.path, post(handler))
    });
    pcb_routes
        .route(
            "/products/create_product/{id}",
            post(product::create_product),
        )
        .route("/products/create_hub2", post(product::create_hub2))
        .route(
            "/products/create_enterprise",
            post(product::create_enterprise),
        )
}
