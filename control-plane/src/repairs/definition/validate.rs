//! The checks a workflow must pass before the server starts: every state
//! reachable and able to reach an end, every reference resolved, every
//! text translated, every rule fitting its data type.

use std::collections::{BTreeSet, HashMap, VecDeque};

use serde_json::Number;

use super::{
    resolve_input, DataType, Effect, GuardOp, InputSpec, SelectionType, State, Text, Workflow,
    WorkflowError, LANGUAGES,
};

/// Checks one workflow; the first mistake found is returned.
pub(super) fn validate(wf: &Workflow) -> Result<(), WorkflowError> {
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
