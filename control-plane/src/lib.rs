//! The SMARTSolar relational API (the control-plane).
//!
//! # Layout
//! - [`catalogue`]: every generic table, declared once in `catalogue/tables.json`.
//! - [`schema`]: DDL generated from the catalogue (committed as migration 0001).
//! - [`values`]: JSON values from clients to typed SQL values; the API timestamp format.
//! - [`query`]: the Flask-Restless query language (`q`), compiled to SQL with scope.
//! - [`db`]: SQLite / PostgreSQL behind one type; binding and row decoding.
//! - [`rows`]: the row helpers of the hand-written paths (select/insert/update a
//!   catalogue table, typed access to a decoded row).
//! - [`auth`]: passwords, tokens, permissions, the authenticated-user extractor.
//! - [`app`]: the application state every handler and service shares.
//! - [`web`]: HTTP helpers below the handlers: the JSON body extractor, the
//!   success envelope, query string and paging.
//! - [`routes`]: the table of action routes and their permissions.
//! - [`http`]: the router over every handler module, generic table routes, auth
//!   routes, OpenAPI; nothing below imports it.
//! - [`data`]: the product data API (time series), `/upload_tool_log` and
//!   the RTC dead-letter actions (bus).
//! - [`error`]: the one API error enum and its JSON envelope.
//! - [`dcm`]: device credit management: the payment-command ledger, balances, final balances.
//! - [`outbox`]: webhook notifications written in the same transaction as their cause.
//! - [`alerts`]: alert analysis: rules, bucket leases, the engine that raises and clears alerts.
//! - [`actions`]: product, part and fleet actions (manufacturing, unit
//!   control, SMS, entities, state, fleet data) and their service functions.
//! - [`webhooks`]: subscriptions, signing, encrypted keys, the delivery worker.
//! - [`repairs`]: repair workflows (IRT): definitions, validation, state machine, routes.
//! - [`startup`]: open and migrate the database, ensure the admin user.
//! - [`rtc`]: the glue to the gateway and ingest: unit directory, presence, fallback
//!   SMS, the MO sink, MT sending and the RTC product endpoints.

pub mod actions;
pub mod alerts;
pub mod app;
pub mod auth;
pub mod catalogue;
pub mod config;
pub mod console;
pub mod data;
pub mod db;
pub mod dcm;
pub mod error;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod query;
pub mod repairs;
pub mod routes;
pub mod rows;
pub mod rtc;
pub mod schema;
pub mod startup;
pub mod values;
pub mod web;
pub mod webhooks;

pub use config::{AlertsConfig, ControlPlaneConfig};
