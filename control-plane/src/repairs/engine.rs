//! The workflow state machine: pure, no database.
//!
//! A repair is a current state plus a context (the inputs given so far, per
//! state). [`apply`] takes a technician's action (inputs or an event) and
//! answers with the new context and the transition to take, if any; the
//! service then writes the effects. Rules:
//! - inputs must be inputs of the current state and pass their IRT rules
//!   (every violation is reported, by input);
//! - once every required input of the state has a value, the first
//!   transition without an event whose guards hold fires (the definition
//!   guarantees the last one has no guard);
//! - an event must be one of the current state's events, needs the
//!   state's required inputs first, and fires the first of its
//!   transitions whose guards hold; if none holds it is refused;
//! - entering a state forgets the inputs of any earlier visit to it, so a
//!   retest after a repair starts clean;
//! - an end state takes no more actions.
//!
//! Guards compare numbers as numbers; a guard on an input without a value
//! is false, except `absent`.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use super::definition::{resolve_input, Guard, GuardOp, State, Transition, Workflow};
use super::irt::{self, Violation};

/// Inputs given so far: state ident to `{input ident: value}`.
pub type Context = Map<String, Json>;

/// What a technician did.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// `send_inputs`: input ident to value.
    Inputs(&'a Map<String, Json>),
    /// `send_events`: the event ident.
    Event(&'a str),
}

/// The outcome of an action.
#[derive(Debug)]
pub struct Step<'w> {
    /// The context after the action: what the repair stores.
    pub context: Context,
    /// The inputs the decision was made on (before entering the target
    /// state forgot that state's earlier inputs): what effects read.
    pub values: Context,
    /// The transition the action fired, if any.
    pub transition: Option<&'w Transition>,
}

/// Why an action is refused (all are the client's mistakes: 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The repair is in an end state.
    #[error("The repair is finished (state '{state}'); it takes no more inputs or events")]
    Finished { state: String },
    /// `send_inputs` with nothing in it.
    #[error("No inputs given: send a JSON object of input ident to value")]
    NoInputs,
    /// One or more inputs broke a rule (or are not inputs of the state).
    #[error("{} input(s) are invalid", .0.len())]
    Invalid(Vec<Violation>),
    /// The event is not one of the current state's events.
    #[error("Event '{event}' is not an event of state '{state}'; expected one of {allowed:?}")]
    UnknownEvent {
        event: String,
        state: String,
        allowed: Vec<String>,
    },
    /// The event came before the state's required inputs.
    #[error("Event '{event}' needs the input(s) {missing:?} of state '{state}' first")]
    MissingInputs {
        event: String,
        state: String,
        missing: Vec<String>,
    },
    /// No transition of the event has all its guards satisfied.
    #[error("Event '{event}' cannot be taken in state '{state}': {conditions}")]
    GuardsNotMet {
        event: String,
        state: String,
        conditions: String,
    },
}

/// Applies `action` in `state`. `options` gives the allowed values of the
/// state's selection inputs, by input ident.
pub fn apply<'w>(
    wf: &'w Workflow,
    state: &'w State,
    context: &Context,
    action: Action<'_>,
    options: &HashMap<String, Vec<Json>>,
) -> Result<Step<'w>, EngineError> {
    if state.end.is_some() {
        return Err(EngineError::Finished {
            state: state.ident.clone(),
        });
    }
    let mut context = context.clone();
    let transition = match action {
        Action::Inputs(inputs) => {
            if inputs.is_empty() {
                return Err(EngineError::NoInputs);
            }
            let mut violations = Vec::new();
            for (ident, value) in inputs {
                let Some(spec) = state.input(ident) else {
                    let known: Vec<&str> = state.inputs.iter().map(|i| i.ident.as_str()).collect();
                    violations.push(Violation {
                        input: ident.clone(),
                        rule: "ident",
                        message: format!(
                            "is not an input of state '{}' (its inputs: {known:?})",
                            state.ident
                        ),
                    });
                    continue;
                };
                let allowed = options.get(ident).map(Vec::as_slice).unwrap_or_default();
                if let Err(v) = irt::validate(spec, allowed, value) {
                    violations.push(v);
                }
            }
            if !violations.is_empty() {
                return Err(EngineError::Invalid(violations));
            }
            let given = context
                .entry(state.ident.clone())
                .or_insert_with(|| Json::Object(Map::new()));
            if let Json::Object(given) = given {
                for (k, v) in inputs {
                    given.insert(k.clone(), v.clone());
                }
            }
            if missing_inputs(state, &context).is_empty() {
                state
                    .transitions
                    .iter()
                    .filter(|t| t.event.is_none())
                    .find(|t| guards_hold(wf, state, &context, &t.when))
            } else {
                None
            }
        }
        Action::Event(event) => {
            if !state.events.iter().any(|e| e.ident == event) {
                return Err(EngineError::UnknownEvent {
                    event: event.to_string(),
                    state: state.ident.clone(),
                    allowed: state.events.iter().map(|e| e.ident.clone()).collect(),
                });
            }
            let missing = missing_inputs(state, &context);
            if !missing.is_empty() {
                return Err(EngineError::MissingInputs {
                    event: event.to_string(),
                    state: state.ident.clone(),
                    missing,
                });
            }
            let candidates: Vec<&Transition> = state
                .transitions
                .iter()
                .filter(|t| t.event.as_deref() == Some(event))
                .collect();
            let fired = candidates
                .iter()
                .copied()
                .find(|t| guards_hold(wf, state, &context, &t.when));
            if fired.is_none() {
                let conditions: Vec<String> = candidates
                    .iter()
                    .flat_map(|t| t.when.iter().map(describe))
                    .collect();
                return Err(EngineError::GuardsNotMet {
                    event: event.to_string(),
                    state: state.ident.clone(),
                    conditions: format!("it needs {}", conditions.join(" and ")),
                });
            }
            fired
        }
    };
    let values = context.clone();
    if let Some(t) = transition {
        // A new visit starts without the inputs of an earlier one.
        context.remove(&t.to);
    }
    Ok(Step {
        context,
        values,
        transition,
    })
}

/// The required inputs of `state` that have no value yet.
pub fn missing_inputs(state: &State, context: &Context) -> Vec<String> {
    state
        .inputs
        .iter()
        .filter(|i| i.required)
        .filter(|i| {
            context
                .get(&state.ident)
                .and_then(|g| g.get(&i.ident))
                .is_none_or(Json::is_null)
        })
        .map(|i| i.ident.clone())
        .collect()
}

/// The value of an input named by a guard or effect (`ident` of `state`,
/// or `state.ident`).
pub fn lookup<'c>(context: &'c Context, state: &State, reference: &str) -> Option<&'c Json> {
    let (s, i) = reference
        .split_once('.')
        .unwrap_or((state.ident.as_str(), reference));
    context
        .get(s)
        .and_then(|g| g.get(i))
        .filter(|v| !v.is_null())
}

fn guards_hold(wf: &Workflow, state: &State, context: &Context, guards: &[Guard]) -> bool {
    guards.iter().all(|g| {
        debug_assert!(resolve_input(wf, state, &g.input).is_some());
        let v = lookup(context, state, &g.input);
        let operand = g.value.as_ref().unwrap_or(&Json::Null);
        match (g.op, v) {
            (GuardOp::Present, v) => v.is_some(),
            (GuardOp::Absent, v) => v.is_none(),
            (_, None) => false,
            (GuardOp::Eq, Some(v)) => same(v, operand),
            (GuardOp::Ne, Some(v)) => !same(v, operand),
            (GuardOp::In, Some(v)) => operand
                .as_array()
                .is_some_and(|list| list.iter().any(|o| same(v, o))),
            (GuardOp::Contains, Some(v)) => v
                .as_array()
                .is_some_and(|list| list.iter().any(|x| same(x, operand))),
            (op, Some(v)) => match (v.as_f64(), operand.as_f64()) {
                (Some(a), Some(b)) => match op {
                    GuardOp::Lt => a < b,
                    GuardOp::Le => a <= b,
                    GuardOp::Gt => a > b,
                    _ => a >= b,
                },
                _ => false,
            },
        }
    })
}

fn same(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn describe(g: &Guard) -> String {
    let op = match g.op {
        GuardOp::Eq => "=",
        GuardOp::Ne => "!=",
        GuardOp::Lt => "<",
        GuardOp::Le => "<=",
        GuardOp::Gt => ">",
        GuardOp::Ge => ">=",
        GuardOp::In => "in",
        GuardOp::Contains => "contains",
        GuardOp::Present => "present",
        GuardOp::Absent => "absent",
    };
    match &g.value {
        Some(v) => format!("'{}' {op} {v}", g.input),
        None => format!("'{}' {op}", g.input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repairs::definition::load_builtin;
    use serde_json::json;

    fn inputs(v: Json) -> Map<String, Json> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn inputs_fire_the_first_transition_whose_guards_hold() {
        let wfs = load_builtin().unwrap();
        let wf = wfs.get("bboxx_home_2").unwrap();
        let s = wf.state("usb_diag_test").unwrap();
        let opts = HashMap::from([("pcb_result".to_string(), vec![json!("pass"), json!("fail")])]);
        let ctx = Context::new();
        // Partial inputs: stored, no transition yet.
        let step = apply(
            wf,
            s,
            &ctx,
            Action::Inputs(&inputs(json!({"voltage": 6.5}))),
            &opts,
        )
        .unwrap();
        assert!(step.transition.is_none());
        let rest = inputs(
            json!({"serial": "MC0211-999002", "usb_port_result": "pass", "pcb_result": "pass"}),
        );
        let step = apply(wf, s, &step.context, Action::Inputs(&rest), &opts).unwrap();
        assert_eq!(step.transition.unwrap().to, "explain_skip_btb");
        let fail = inputs(
            json!({"serial": "MC0211-999002", "voltage": 6.5, "usb_port_result": "pass", "pcb_result": "fail"}),
        );
        let step = apply(wf, s, &ctx, Action::Inputs(&fail), &opts).unwrap();
        assert_eq!(step.transition.unwrap().to, "replace_pcb");
        let low = inputs(
            json!({"serial": "MC0211-999002", "voltage": 5.0, "usb_port_result": "pass", "pcb_result": "pass"}),
        );
        let step = apply(wf, s, &ctx, Action::Inputs(&low), &opts).unwrap();
        assert_eq!(step.transition.unwrap().to, "battery_test");
    }

    #[test]
    fn every_violation_and_unknown_input_is_reported() {
        let wfs = load_builtin().unwrap();
        let wf = wfs.get("bboxx_home_2").unwrap();
        let s = wf.state("usb_diag_test").unwrap();
        let bad = inputs(json!({"voltage": 9.0, "serial": "short", "colour": "red"}));
        let Err(EngineError::Invalid(v)) = apply(
            wf,
            s,
            &Context::new(),
            Action::Inputs(&bad),
            &HashMap::new(),
        ) else {
            panic!("expected violations")
        };
        let got: Vec<(&str, &str)> = v.iter().map(|v| (v.input.as_str(), v.rule)).collect();
        assert!(got.contains(&("voltage", "max")), "{got:?}");
        assert!(got.contains(&("serial", "minlength")), "{got:?}");
        assert!(got.contains(&("colour", "ident")), "{got:?}");
    }

    #[test]
    fn events_need_inputs_guards_and_membership() {
        let wfs = load_builtin().unwrap();
        let wf = wfs.get("bboxx_home_2").unwrap();
        let s = wf.state("charge_2").unwrap();
        let none = HashMap::new();
        let e = apply(wf, s, &Context::new(), Action::Event("cleaned"), &none).unwrap_err();
        assert!(matches!(e, EngineError::UnknownEvent { .. }), "{e}");
        let e = apply(
            wf,
            s,
            &Context::new(),
            Action::Event("battery.charged"),
            &none,
        )
        .unwrap_err();
        assert!(matches!(e, EngineError::MissingInputs { .. }), "{e}");
        let low = apply(
            wf,
            s,
            &Context::new(),
            Action::Inputs(&inputs(json!({"state_of_charge": 40}))),
            &none,
        )
        .unwrap();
        let e = apply(wf, s, &low.context, Action::Event("battery.charged"), &none).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Event 'battery.charged' cannot be taken in state 'charge_2': it needs 'state_of_charge' >= 50"
        );
        let full = apply(
            wf,
            s,
            &low.context,
            Action::Inputs(&inputs(json!({"state_of_charge": 55}))),
            &none,
        )
        .unwrap();
        let step = apply(
            wf,
            s,
            &full.context,
            Action::Event("battery.charged"),
            &none,
        )
        .unwrap();
        assert_eq!(step.transition.unwrap().to, "clean");
    }

    #[test]
    fn entering_a_state_forgets_its_earlier_inputs_and_end_states_refuse() {
        let wfs = load_builtin().unwrap();
        let wf = wfs.get("bboxx_home_2").unwrap();
        let s = wf.state("replace_pcb").unwrap();
        let mut ctx = Context::new();
        ctx.insert("usb_diag_test".into(), json!({"pcb_result": "fail"}));
        let opts = HashMap::from([("replacement_part_type".to_string(), vec![json!(61)])]);
        let step = apply(
            wf,
            s,
            &ctx,
            Action::Inputs(&inputs(json!({"replacement_part_type": 61}))),
            &opts,
        )
        .unwrap();
        assert_eq!(step.transition.unwrap().to, "usb_diag_test");
        assert!(step.context.get("usb_diag_test").is_none());
        let end = wf.state("returned_to_service").unwrap();
        let e = apply(wf, end, &Context::new(), Action::Event("x"), &opts).unwrap_err();
        assert!(matches!(e, EngineError::Finished { .. }));
    }
}
