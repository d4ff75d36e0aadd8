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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::Deserialize;
use serde_json::{Map, Number, Value as Json};

/// The languages every user-visible text must be given in; the first is
/// the default (spec: "Internationalization").
pub const LANGUAGES: [&str; 2] = ["en", "fr"];

/// The workflow files compiled into the binary: (file name, contents). Every
/// product type the system creates (`create_product/<kind>`, `create_hub2`)
/// has its own; `generic.toml` serves any other.
const BUILTIN: &[(&str, &str)] = &[
    (
        "bboxx_home_2.toml",
        include_str!("../../workflows/bboxx_home_2.toml"),
    ),
    (
        "bboxx_home_3.toml",
        include_str!("../../workflows/bboxx_home_3.toml"),
    ),
    (
        "bboxx_hub_2.toml",
        include_str!("../../workflows/bboxx_hub_2.toml"),
    ),
    (
        "bboxx_enterprise.toml",
        include_str!("../../workflows/bboxx_enterprise.toml"),
    ),
    ("generic.toml", include_str!("../../workflows/generic.toml")),
];

/// A language the API answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English, the default.
    #[default]
    En,
    /// French.
    Fr,
}

impl Lang {
    /// The language code (`"en"`, `"fr"`).
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Fr => "fr",
        }
    }

    /// The best supported language of an `Accept-Language` header
    /// (`fr-FR,fr;q=0.9,en;q=0.8`); English when none is supported.
    pub fn from_accept_language(header: Option<&str>) -> Self {
        let Some(header) = header else {
            return Self::En;
        };
        let mut best: Option<(f32, Self)> = None;
        for part in header.split(',') {
            let mut pieces = part.split(';');
            let tag = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = pieces
                .find_map(|p| p.trim().strip_prefix("q=").map(str::to_string))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("");
            let lang = match primary {
                "fr" => Self::Fr,
                "en" => Self::En,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or_default()
    }
}

/// A user-visible text in every supported language.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Text(BTreeMap<String, String>);

impl Text {
    /// The text in `lang` (validation guarantees it exists).
    pub fn get(&self, lang: Lang) -> &str {
        self.0
            .get(lang.code())
            .or_else(|| self.0.get(LANGUAGES[0]))
            .map(String::as_str)
            .unwrap_or_default()
    }
}

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
    fn allowed_rules(self) -> &'static [&'static str] {
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
    /// The rules that are set, as the spec writes them (for `current_state`).
    pub fn to_json(&self) -> Map<String, Json> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Json>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        };
        put("max", self.max.clone().map(Json::Number));
        put("maxlength", self.maxlength.map(Json::from));
        put("min", self.min.clone().map(Json::Number));
        put("minlength", self.minlength.map(Json::from));
        put("options", self.options.clone().map(Json::Array));
        put("step", self.step.clone().map(Json::Number));
        m
    }

    fn set_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.min.is_some() {
            v.push("min");
        }
        if self.max.is_some() {
            v.push("max");
        }
        if self.step.is_some() {
            v.push("step");
        }
        if self.options.is_some() {
            v.push("options");
        }
        if self.minlength.is_some() {
            v.push("minlength");
        }
        if self.maxlength.is_some() {
            v.push("maxlength");
        }
        v
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
        validate(&wf)?;
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

/// Checks one workflow; the first mistake found is returned.
fn validate(wf: &Workflow) -> Result<(), WorkflowError> {
    let w = || wf.name.clone();
    let invalid = |at: String, message: String| WorkflowError::Invalid {
        workflow: w(),
        at,
        message,
    };
    if wf.name.trim().is_empty() {
        return Err(invalid("name".into(), "must not be empty".into()));
    }
    unique(wf, "state", wf.states.iter().map(|s| s.ident.as_str()))?;
    if wf.state(&wf.initial_state).is_none() {
        return Err(WorkflowError::UnknownState {
            workflow: w(),
            at: "initial_state".into(),
            state: wf.initial_state.clone(),
        });
    }
    unique(
        wf,
        "product type",
        wf.product_types
            .iter()
            .map(|p| p.product_type_id.to_string())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    )?;
    for state in &wf.states {
        let at = |what: &str| format!("state '{}' {what}", state.ident);
        translated(wf, &at("name"), &state.name)?;
        translated(wf, &at("description"), &state.description)?;
        unique(wf, "input", state.inputs.iter().map(|i| i.ident.as_str()))?;
        unique(wf, "event", state.events.iter().map(|e| e.ident.as_str()))?;
        if let Some(end) = &state.end {
            if !state.inputs.is_empty() || !state.events.is_empty() || !state.transitions.is_empty()
            {
                return Err(invalid(
                    at(""),
                    "an end state has no inputs, events or transitions".into(),
                ));
            }
            if let Some(p) = &end.process {
                const PROCESSES: [&str; 4] = [
                    "Repair and Return",
                    "Replaced",
                    "Repossessed",
                    "Broken on Arrival",
                ];
                if !PROCESSES.contains(&p.as_str()) {
                    return Err(invalid(
                        at("end.process"),
                        format!("'{p}' is not one of {PROCESSES:?}"),
                    ));
                }
            }
        }
        for input in &state.inputs {
            validate_input(wf, state, input)?;
        }
        for event in &state.events {
            translated(
                wf,
                &at(&format!("event '{}' label", event.ident)),
                &event.label,
            )?;
            if !state
                .transitions
                .iter()
                .any(|t| t.event.as_deref() == Some(&event.ident))
            {
                return Err(invalid(
                    at(&format!("event '{}'", event.ident)),
                    "no transition is triggered by this event".into(),
                ));
            }
        }
        let mut last_input_transition_guarded = None;
        for (n, t) in state.transitions.iter().enumerate() {
            let tat = at(&format!("transition {}", n + 1));
            if wf.state(&t.to).is_none() {
                return Err(WorkflowError::UnknownState {
                    workflow: w(),
                    at: tat,
                    state: t.to.clone(),
                });
            }
            match &t.event {
                Some(e) if !state.events.iter().any(|ev| &ev.ident == e) => {
                    return Err(invalid(
                        tat,
                        format!("event '{e}' is not an event of the state"),
                    ));
                }
                Some(_) => {}
                None => {
                    if state.inputs.is_empty() {
                        return Err(invalid(
                            tat,
                            "a transition without `event` fires on inputs, but the state has none"
                                .into(),
                        ));
                    }
                    last_input_transition_guarded = Some(!t.when.is_empty());
                }
            }
            for g in &t.when {
                let input = resolve_input(wf, state, &g.input).ok_or_else(|| {
                    invalid(tat.clone(), format!("guard on unknown input '{}'", g.input))
                })?;
                let needs_value = !matches!(g.op, GuardOp::Present | GuardOp::Absent);
                if needs_value != g.value.is_some() {
                    return Err(invalid(
                        tat.clone(),
                        format!(
                            "guard on '{}': operator {:?} {} a value",
                            g.input,
                            g.op,
                            if needs_value { "needs" } else { "takes no" }
                        ),
                    ));
                }
                if g.op == GuardOp::Contains && input.selection_type != Some(SelectionType::Multi) {
                    return Err(invalid(
                        tat.clone(),
                        format!("guard on '{}': 'contains' needs a multi selection", g.input),
                    ));
                }
            }
            for effect in &t.effects {
                validate_effect(wf, state, &tat, effect)?;
            }
        }
        if last_input_transition_guarded == Some(true) {
            return Err(invalid(
                at("transitions"),
                "the last transition on inputs must have no guard, so complete inputs always lead somewhere".into(),
            ));
        }
        if state.end.is_none() && state.transitions.is_empty() {
            return Err(WorkflowError::DeadEnd {
                workflow: w(),
                state: state.ident.clone(),
            });
        }
    }
    check_graph(wf)
}

/// Every state reachable from the initial one, and an end reachable from every state.
fn check_graph(wf: &Workflow) -> Result<(), WorkflowError> {
    let index: HashMap<&str, usize> = wf
        .states
        .iter()
        .enumerate()
        .map(|(i, s)| (s.ident.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = wf
        .states
        .iter()
        .map(|s| s.transitions.iter().map(|t| index[t.to.as_str()]).collect())
        .collect();
    let mut seen = vec![false; wf.states.len()];
    let mut queue = VecDeque::from([index[wf.initial_state.as_str()]]);
    while let Some(i) = queue.pop_front() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        queue.extend(edges[i].iter().copied());
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(WorkflowError::UnreachableState {
            workflow: wf.name.clone(),
            state: wf.states[i].ident.clone(),
            initial: wf.initial_state.clone(),
        });
    }
    // Backwards from the end states.
    let mut ends: Vec<bool> = wf.states.iter().map(|s| s.end.is_some()).collect();
    loop {
        let mut changed = false;
        for (i, out) in edges.iter().enumerate() {
            if !ends[i] && out.iter().any(|&j| ends[j]) {
                ends[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    if let Some(i) = ends.iter().position(|e| !e) {
        return Err(WorkflowError::DeadEnd {
            workflow: wf.name.clone(),
            state: wf.states[i].ident.clone(),
        });
    }
    Ok(())
}

fn validate_input(wf: &Workflow, state: &State, input: &InputSpec) -> Result<(), WorkflowError> {
    let at = format!("state '{}' input '{}'", state.ident, input.ident);
    let invalid = |message: String| WorkflowError::Invalid {
        workflow: wf.name.clone(),
        at: at.clone(),
        message,
    };
    if input.ident.contains('.') || input.ident.is_empty() {
        return Err(invalid(
            "an input ident must be non-empty and contain no '.'".into(),
        ));
    }
    translated(wf, &format!("{at} label"), &input.label)?;
    let ty = input.data_type;
    for rule in input.validation_rules.set_names() {
        if !ty.allowed_rules().contains(&rule) {
            return Err(invalid(format!(
                "rule '{rule}' does not apply to data type '{}' (allowed: {:?})",
                ty.as_str(),
                ty.allowed_rules()
            )));
        }
    }
    let r = &input.validation_rules;
    if ty == DataType::Int {
        for (name, n) in [("min", &r.min), ("max", &r.max), ("step", &r.step)] {
            if n.as_ref().is_some_and(|n| !n.is_i64()) {
                return Err(invalid(format!(
                    "rule '{name}' of an int must be an integer"
                )));
            }
        }
        if r.options.iter().flatten().any(|o| !o.is_i64()) {
            return Err(invalid(
                "rule 'options' of an int must list integers".into(),
            ));
        }
    }
    if ty == DataType::Float && r.options.iter().flatten().any(|o| !o.is_number()) {
        return Err(invalid(
            "rule 'options' of a float must list numbers".into(),
        ));
    }
    if ty == DataType::String && r.options.iter().flatten().any(|o| !o.is_string()) {
        return Err(invalid(
            "rule 'options' of a string must list strings".into(),
        ));
    }
    if r.step
        .as_ref()
        .and_then(Number::as_f64)
        .is_some_and(|s| s <= 0.0)
    {
        return Err(invalid("rule 'step' must be positive".into()));
    }
    if let (Some(min), Some(max)) = (
        r.min.as_ref().and_then(Number::as_f64),
        r.max.as_ref().and_then(Number::as_f64),
    ) {
        if min > max {
            return Err(invalid("rule 'min' is above 'max'".into()));
        }
    }
    if let (Some(min), Some(max)) = (r.minlength, r.maxlength) {
        if min > max {
            return Err(invalid("rule 'minlength' is above 'maxlength'".into()));
        }
    }
    if ty == DataType::Selection {
        if input.selection_type.is_none() {
            return Err(invalid(
                "a selection needs selection_type 'single' or 'multi'".into(),
            ));
        }
        match (input.options.is_empty(), &input.replacement_options) {
            (true, None) => {
                return Err(invalid(
                    "a selection needs `options` or `replacement_options`".into(),
                ))
            }
            (false, Some(_)) => {
                return Err(invalid(
                    "a selection has either `options` or `replacement_options`, not both".into(),
                ))
            }
            _ => {}
        }
        let values: Vec<String> = input.options.iter().map(|o| o.value.to_string()).collect();
        unique(wf, "option value", values.iter().map(String::as_str))?;
        for o in &input.options {
            if !(o.value.is_string() || o.value.is_i64()) {
                return Err(invalid(format!(
                    "option value {} must be a string or an integer",
                    o.value
                )));
            }
            translated(wf, &format!("{at} option {}", o.value), &o.label)?;
        }
    } else if input.selection_type.is_some()
        || !input.options.is_empty()
        || input.replacement_options.is_some()
    {
        return Err(invalid(
            "selection_type, options and replacement_options belong to selections".into(),
        ));
    }
    Ok(())
}

fn validate_effect(
    wf: &Workflow,
    state: &State,
    at: &str,
    effect: &Effect,
) -> Result<(), WorkflowError> {
    let invalid = |message: String| WorkflowError::Invalid {
        workflow: wf.name.clone(),
        at: at.to_string(),
        message,
    };
    let (name, reference) = match effect {
        Effect::ReplacePart { part_type_input } => ("replace_part", part_type_input),
        Effect::RecordPartTypes { input } => ("record_part_types", input),
        Effect::SetBatteryCapacity { input } => ("set_battery_capacity", input),
    };
    let input = resolve_input(wf, state, reference)
        .ok_or_else(|| invalid(format!("effect {name} names unknown input '{reference}'")))?;
    let fits = match effect {
        Effect::ReplacePart { .. } => {
            input.replacement_options.is_some()
                && input.selection_type == Some(SelectionType::Single)
        }
        Effect::RecordPartTypes { .. } => {
            input.data_type == DataType::Selection && input.options.iter().all(|o| o.value.is_i64())
        }
        Effect::SetBatteryCapacity { .. } => {
            matches!(input.data_type, DataType::Int | DataType::Float)
        }
    };
    if !fits {
        return Err(invalid(format!(
            "effect {name} cannot use input '{reference}' ({})",
            match effect {
                Effect::ReplacePart { .. } => "needs a single selection with replacement_options",
                Effect::RecordPartTypes { .. } => "needs a selection of part type ids",
                Effect::SetBatteryCapacity { .. } => "needs an int or float",
            }
        )));
    }
    Ok(())
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

fn translated(wf: &Workflow, at: &str, text: &Text) -> Result<(), WorkflowError> {
    for lang in LANGUAGES {
        if text.0.get(lang).is_none_or(|t| t.trim().is_empty()) {
            return Err(WorkflowError::MissingTranslation {
                workflow: wf.name.clone(),
                at: at.to_string(),
                language: lang.to_string(),
            });
        }
    }
    if let Some(other) = text.0.keys().find(|k| !LANGUAGES.contains(&k.as_str())) {
        return Err(WorkflowError::UnsupportedLanguage {
            workflow: wf.name.clone(),
            at: at.to_string(),
            language: other.clone(),
        });
    }
    Ok(())
}

fn unique<'a>(
    wf: &Workflow,
    what: &'static str,
    idents: impl Iterator<Item = &'a str>,
) -> Result<(), WorkflowError> {
    let mut seen = BTreeSet::new();
    for ident in idents {
        if !seen.insert(ident) {
            return Err(WorkflowError::Duplicate {
                workflow: wf.name.clone(),
                what,
                ident: ident.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
