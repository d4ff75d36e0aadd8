//! Repair workflow definitions: the file format, loading and validation.
//!
//! Workflows are data. Each file in `control-plane/workflows/` declares one
//! workflow in TOML: its states in order, each with the IRT inputs and
//! events the technician sees, the transitions (with guards on inputs) and
//! their effects, and every user-visible text in English and French. The
//! files are compiled into the binary ([`load_builtin`]) and validated as a
//! whole at start; any mistake (a transition to an unknown state, a state
//! nobody can reach, a missing translation, a rule that does not fit its
//! data type, ...) is a [`WorkflowError`] that names the workflow and the
//! place, so the server refuses to start instead of failing a technician
//! half-way through a repair.
//!
//! # Format
//! ```toml
//! name = "bboxx_home_2"              # repair.workflow_name
//! initial_state = "ss_state_check"
//! fallback = false                   # true: serves product types without a default (one workflow)
//!
//! [[product_type]]                   # product types this workflow serves
//! product_type_id = 6
//! default = true                     # used when no selector rule matches
//! config = { pass_capacity_mah = 8000 }  # the `config` block of get_repair
//!
//! [[state]]
//! ident = "charge_2"
//! name = { en = "Charge", fr = "Charge" }
//! description = { en = "...", fr = "..." }
//! [[state.input]]                    # IRT Input Specification
//! ident = "state_of_charge"
//! data_type = "int"                  # int float string text datetime selection
//! label = { en = "...", fr = "..." }
//! validation_rules = { min = 0, max = 100 }
//! required = true                    # default
//! [[state.event]]                    # IRT Event Specification
//! ident = "battery.charged"
//! label = { en = "Battery Charged", fr = "Batterie chargée" }
//! [[state.transition]]
//! event = "battery.charged"          # absent: fires when the inputs are complete
//! when = [{ input = "state_of_charge", op = "ge", value = 50 }]
//! to = "clean"
//! effects = [{ set_battery_capacity = { input = "battery_test.measured_capacity_mah" } }]
//!
//! [[state]]
//! ident = "returned_to_service"
//! end = { product_state = "ACTIVATED", process = "Repair and Return" }
//! ```
//! Selection inputs list `options = [{ value = 69, label = { en, fr } }]`,
//! or take them from `part_type_replacement_linker` with
//! `replacement_options = { part_type_category_id = 1 }` (labels are then
//! the part type names, which are data and not translated).
//!
//! A guard's `input` names an input of the transition's own state
//! (`"voltage"`) or of another state (`"usb_diag_test.voltage"`).
//!
//! # Layout
//! - `lang`: the languages, and texts given in each of them.
//! - `model`: the format's types, as the TOML files declare them.
//! - `validate`: the checks a workflow must pass before the server starts.

mod lang;
mod model;
mod validate;

use std::collections::BTreeMap;

pub use lang::{Lang, Text, LANGUAGES};
pub use model::{
    resolve_input, DataType, Effect, End, EventSpec, Guard, GuardOp, InputSpec, OptionSpec,
    ProductState, ProductTypeBinding, ReplacementOptions, Rules, SelectionType, State, Transition,
    Workflow,
};

/// The workflow files compiled into the binary: (file name, contents). Every
/// product type the system creates (`create_product/<kind>`, `create_hub2`)
/// has its own; `generic.toml` serves any other.
const BUILTIN: &[(&str, &str)] = &[
    (
        "bboxx_home_2.toml",
        include_str!("../../../workflows/bboxx_home_2.toml"),
    ),
    (
        "bboxx_home_3.toml",
        include_str!("../../../workflows/bboxx_home_3.toml"),
    ),
    (
        "bboxx_hub_2.toml",
        include_str!("../../../workflows/bboxx_hub_2.toml"),
    ),
    (
        "bboxx_enterprise.toml",
        include_str!("../../../workflows/bboxx_enterprise.toml"),
    ),
    (
        "generic.toml",
        include_str!("../../../workflows/generic.toml"),
    ),
];

/// All workflows, by name, and which one serves each product type by default.
#[derive(Debug, Clone)]
pub struct Workflows {
    by_name: BTreeMap<String, Workflow>,
    defaults: BTreeMap<i64, String>,
    /// The workflow for product types without a default of their own.
    fallback: Option<String>,
}

impl Workflows {
    /// The workflow called `name`.
    pub fn get(&self, name: &str) -> Option<&Workflow> {
        self.by_name.get(name)
    }

    /// The workflow used for `product_type_id` when no selector rule matches:
    /// its own default, else the fallback workflow.
    pub fn default_for(&self, product_type_id: i64) -> Option<&Workflow> {
        self.defaults
            .get(&product_type_id)
            .or(self.fallback.as_ref())
            .and_then(|n| self.by_name.get(n))
    }

    /// Every workflow, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Workflow> {
        self.by_name.values()
    }
}

/// Why the workflow definitions are not usable; each names the workflow
/// (or file) and the place of the mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    /// The file is not valid TOML or does not fit the format.
    #[error("workflow file '{file}': {message}")]
    Parse { file: String, message: String },
    /// Two files declare the same workflow name.
    #[error("workflow '{workflow}' is defined twice")]
    DuplicateWorkflow { workflow: String },
    /// Two states, inputs, events or options share an identifier.
    #[error("workflow '{workflow}': {what} '{ident}' is defined twice")]
    Duplicate {
        workflow: String,
        what: &'static str,
        ident: String,
    },
    /// A transition, or `initial_state`, names a state that does not exist.
    #[error("workflow '{workflow}': {at} refers to unknown state '{state}'")]
    UnknownState {
        workflow: String,
        at: String,
        state: String,
    },
    /// No sequence of transitions leads from the initial state to this one.
    #[error(
        "workflow '{workflow}': state '{state}' is unreachable from the initial state '{initial}'"
    )]
    UnreachableState {
        workflow: String,
        state: String,
        initial: String,
    },
    /// From this state no end state can be reached: a repair there would be stuck.
    #[error("workflow '{workflow}': state '{state}' cannot reach an end state")]
    DeadEnd { workflow: String, state: String },
    /// A text lacks a supported language (or is empty in it).
    #[error("workflow '{workflow}': {at} has no '{language}' translation")]
    MissingTranslation {
        workflow: String,
        at: String,
        language: String,
    },
    /// A text is given in a language the API does not support.
    #[error("workflow '{workflow}': {at} has a text in unsupported language '{language}' (supported: en, fr)")]
    UnsupportedLanguage {
        workflow: String,
        at: String,
        language: String,
    },
    /// An input, event or state is declared in a way the format forbids.
    #[error("workflow '{workflow}': {at}: {message}")]
    Invalid {
        workflow: String,
        at: String,
        message: String,
    },
    /// Two workflows are the default for one product type.
    #[error("product type {product_type_id} has two default workflows: '{first}' and '{second}'")]
    TwoDefaults {
        product_type_id: i64,
        first: String,
        second: String,
    },
    /// Two workflows declare themselves the fallback.
    #[error("two workflows are the fallback for product types without their own: '{first}' and '{second}'")]
    TwoFallbacks { first: String, second: String },
}

/// Loads and validates the workflows compiled into the binary.
pub fn load_builtin() -> Result<Workflows, WorkflowError> {
    load(BUILTIN)
}

/// Loads and validates workflows from `(file name, TOML text)` pairs.
pub fn load(files: &[(&str, &str)]) -> Result<Workflows, WorkflowError> {
    let mut by_name = BTreeMap::new();
    let mut defaults: BTreeMap<i64, String> = BTreeMap::new();
    let mut fallback: Option<String> = None;
    for (file, text) in files {
        let wf: Workflow = toml::from_str(text).map_err(|e| WorkflowError::Parse {
            file: (*file).to_string(),
            message: e.message().to_string(),
        })?;
        validate::validate(&wf)?;
        for binding in wf.product_types.iter().filter(|b| b.default) {
            if let Some(first) = defaults.insert(binding.product_type_id, wf.name.clone()) {
                return Err(WorkflowError::TwoDefaults {
                    product_type_id: binding.product_type_id,
                    first,
                    second: wf.name.clone(),
                });
            }
        }
        if wf.fallback {
            if let Some(first) = fallback.replace(wf.name.clone()) {
                return Err(WorkflowError::TwoFallbacks {
                    first,
                    second: wf.name.clone(),
                });
            }
        }
        if by_name.contains_key(&wf.name) {
            return Err(WorkflowError::DuplicateWorkflow { workflow: wf.name });
        }
        by_name.insert(wf.name.clone(), wf);
    }
    Ok(Workflows {
        by_name,
        defaults,
        fallback,
    })
}

#[cfg(test)]
mod tests;
