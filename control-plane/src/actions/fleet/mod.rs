//! Fleet data about one product (parts, parameters, connectivity, networks)
//! or all visible products (locations), and the small per-product settings
//! (energy limit, DCM flag, PAYG flag).
//!
//! Layout: `handlers` (the routes), `reads` and `settings` (the services
//! they call, without HTTP types), `parse` (pure argument parsing and
//! arithmetic).

mod handlers;
mod parse;
mod reads;
mod settings;

pub(super) use handlers::router;
pub use parse::reliability_rate;
pub(super) use reads::latest_location_of_row;
