//! The types of the workflow format, as the TOML files declare them (see
//! the format in [`super`]), with the lookups the engine and the service use.

use serde::Deserialize;
use serde_json::{Map, Number, Value as Json};

use super::Text;

/// One repair workflow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Stored in `repair.workflow_name` and named by `repair_workflow_selector`.
    pub name: String,
    /// Where a new repair starts.
    pub initial_state: String,
    /// Serves every product type that has no default workflow of its own.
    #[serde(default)]
    pub fallback: bool,
    /// Product types this workflow serves.
    #[serde(default, rename = "product_type")]
    pub product_types: Vec<ProductTypeBinding>,
    /// The states, in the order they are written.
    #[serde(rename = "state")]
    pub states: Vec<State>,
}

impl Workflow {
    /// The state `ident`.
    pub fn state(&self, ident: &str) -> Option<&State> {
        self.states.iter().find(|s| s.ident == ident)
    }

    /// The `config` block for a product type, if the workflow declares one.
    pub fn config_for(&self, product_type_id: i64) -> Option<&Map<String, Json>> {
        self.product_types
            .iter()
            .find(|p| p.product_type_id == product_type_id)
            .and_then(|p| p.config.as_ref())
    }
}

/// A product type a workflow serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductTypeBinding {
    pub product_type_id: i64,
    /// Use this workflow when no `repair_workflow_selector` rule matches.
    #[serde(default)]
    pub default: bool,
    /// Values for the repair client (`config` in get_repair's answer).
    pub config: Option<Map<String, Json>>,
}

/// A state of a workflow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub ident: String,
    pub name: Text,
    pub description: Text,
    #[serde(default, rename = "input")]
    pub inputs: Vec<InputSpec>,
    #[serde(default, rename = "event")]
    pub events: Vec<EventSpec>,
    #[serde(default, rename = "transition")]
    pub transitions: Vec<Transition>,
    /// Present on end states: entering one ends the repair.
    pub end: Option<End>,
}

impl State {
    /// The input `ident` of this state.
    pub fn input(&self, ident: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.ident == ident)
    }
}

/// What happens to the unit when a repair ends in a state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct End {
    /// The unit's new state type: IN_REPAIR_SYSTEM may only go to these two.
    pub product_state: ProductState,
    /// `repair.process`, one of the column's options.
    pub process: Option<String>,
}

/// The state types a unit may leave IN_REPAIR_SYSTEM for (spec: change_state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ProductState {
    #[serde(rename = "ACTIVATED")]
    Activated,
    #[serde(rename = "TERMINATED")]
    Terminated,
}

impl ProductState {
    /// The `state_type_id` (spec: 5 and 9).
    pub fn state_type_id(self) -> i64 {
        match self {
            Self::Activated => 5,
            Self::Terminated => 9,
        }
    }

    /// The state type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Activated => "ACTIVATED",
            Self::Terminated => "TERMINATED",
        }
    }
}

/// The IRT data types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Int,
    Float,
    String,
    Text,
    Datetime,
    Selection,
}

impl DataType {
    /// The spelling of the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Int => "int",
            Self::Float => "float",
            Self::String => "string",
            Self::Text => "text",
            Self::Datetime => "datetime",
            Self::Selection => "selection",
        }
    }

    /// The validation rules the spec defines for this type.
    pub(super) fn allowed_rules(self) -> &'static [&'static str] {
        match self {
            Self::Int | Self::Float => &["min", "max", "step", "options"],
            Self::String => &["minlength", "maxlength", "options"],
            Self::Text => &["minlength", "maxlength"],
            Self::Datetime | Self::Selection => &[],
        }
    }
}

/// `single` or `multi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectionType {
    Single,
    Multi,
}

impl SelectionType {
    /// The spelling of the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Multi => "multi",
        }
    }
}

/// An IRT Input Specification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub ident: String,
    pub label: Text,
    pub data_type: DataType,
    /// A required input must be given before the state can be left.
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default)]
    pub validation_rules: Rules,
    pub selection_type: Option<SelectionType>,
    /// Fixed options of a selection.
    #[serde(default)]
    pub options: Vec<OptionSpec>,
    /// Options of a selection taken from `part_type_replacement_linker`.
    pub replacement_options: Option<ReplacementOptions>,
}

fn yes() -> bool {
    true
}

/// The validation rules of the spec; which apply depends on the data type.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub min: Option<Number>,
    pub max: Option<Number>,
    pub step: Option<Number>,
    pub options: Option<Vec<Json>>,
    pub minlength: Option<u64>,
    pub maxlength: Option<u64>,
}

impl Rules {
    /// Every rule with its value if set, in the order validation checks them.
    fn entries(&self) -> [(&'static str, Option<Json>); 6] {
        [
            ("min", self.min.clone().map(Json::Number)),
            ("max", self.max.clone().map(Json::Number)),
            ("step", self.step.clone().map(Json::Number)),
            ("options", self.options.clone().map(Json::Array)),
            ("minlength", self.minlength.map(Json::from)),
            ("maxlength", self.maxlength.map(Json::from)),
        ]
    }

    /// The rules that are set, as the spec writes them (for `current_state`):
    /// by name, alphabetically.
    pub fn to_json(&self) -> Map<String, Json> {
        let mut set: Vec<(&str, Json)> = self
            .entries()
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect();
        set.sort_by_key(|(name, _)| *name);
        set.into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect()
    }

    /// The names of the rules that are set.
    pub(super) fn set_names(&self) -> Vec<&'static str> {
        self.entries()
            .into_iter()
            .filter(|(_, value)| value.is_some())
            .map(|(name, _)| name)
            .collect()
    }
}

/// One fixed option of a selection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionSpec {
    pub value: Json,
    pub label: Text,
}

/// Selection options drawn from `part_type_replacement_linker`: the part
/// types that may replace the unit's part of this category.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplacementOptions {
    pub part_type_category_id: i64,
}

/// An IRT Event Specification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub ident: String,
    pub label: Text,
}

/// A way out of a state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// The event that triggers it; `None`: the state's inputs being complete.
    pub event: Option<String>,
    /// Every guard must hold for the transition to fire.
    #[serde(default)]
    pub when: Vec<Guard>,
    pub to: String,
    #[serde(default)]
    pub effects: Vec<Effect>,
}

/// A condition on an input value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// `ident` (this state's input) or `state.ident`.
    pub input: String,
    pub op: GuardOp,
    /// The operand; not used by `present`/`absent`.
    pub value: Option<Json>,
}

/// Guard operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// The value is one of the operand's list.
    In,
    /// A multi selection contains the operand.
    Contains,
    /// The input has a value.
    Present,
    /// The input has no value.
    Absent,
}

/// What a transition does besides moving the repair.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Effect {
    /// Replaces the unit's part of the input's replacement category by a new
    /// part of the selected type (`part`, `part_product_linker`,
    /// `repair_part_type_linker`).
    ReplacePart { part_type_input: String },
    /// Records each selected part type as replaced (`repair_part_type_linker`).
    RecordPartTypes { input: String },
    /// Stores the input in `repair.measured_battery_capacity`.
    SetBatteryCapacity { input: String },
}

/// The input a guard or effect names: `ident` in `state`, or `state.ident`.
pub fn resolve_input<'w>(
    wf: &'w Workflow,
    state: &'w State,
    reference: &str,
) -> Option<&'w InputSpec> {
    match reference.split_once('.') {
        Some((s, i)) => wf.state(s)?.input(i),
        None => state.input(reference),
    }
}
