//! The SMARTSolar relational API (the control-plane).
//!
//! # Layout
//! - [`catalogue`]: every generic table, declared once in `catalogue/tables.json`.
//! - [`values`]: JSON values from clients to typed SQL values; the API timestamp format.
pub mod catalogue;
pub mod values;
