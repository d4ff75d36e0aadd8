//! Repair workflows (IRT): technicians walk a unit in IN_REPAIR_SYSTEM
//! through a declarative workflow of states, inputs and events.
//!
//! # Layout
//! - [`definition`]: the workflow file format (`control-plane/workflows/*.toml`),
//!   loading and validation at start; languages.
//! - [`irt`]: IRT input validation per the spec's rules (pure).
//! - [`engine`]: the state machine: inputs, events, guards (pure).
//! - [`service`]: the database side: repairs, steps and their effects,
//!   audit rows, undo.
//! - [`http`]: the routes under `/v1/products/{id}/get_repair` and `/v1/repairs/...`.

pub mod definition;
pub mod engine;
pub mod http;
pub mod irt;
pub mod service;

pub use definition::{load, load_builtin, Lang, WorkflowError, Workflows};
