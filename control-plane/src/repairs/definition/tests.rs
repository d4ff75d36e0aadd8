//! The shipped workflows load, and each kind of broken definition is
//! rejected with a message that names the workflow and the place.

use super::*;

/// A small valid workflow; tests break it one way at a time.
const GOOD: &str = r#"
name = "mini"
initial_state = "check"

[[product_type]]
product_type_id = 6
default = true
config = { pass_capacity_mah = 8000 }

[[state]]
ident = "check"
name = { en = "Check", fr = "Vérification" }
description = { en = "Check the unit", fr = "Vérifiez l'unité" }

[[state.input]]
ident = "voltage"
data_type = "float"
label = { en = "Battery Voltage", fr = "Tension de la batterie" }
validation_rules = { min = 3.5, max = 7.5 }

[[state.event]]
ident = "done"
label = { en = "Done", fr = "Fait" }

[[state.transition]]
event = "done"
when = [{ input = "voltage", op = "ge", value = 6.0 }]
to = "ok"

[[state.transition]]
event = "done"
to = "scrap"

[[state]]
ident = "ok"
name = { en = "Returned", fr = "Remise en service" }
description = { en = "Done", fr = "Terminé" }
end = { product_state = "ACTIVATED", process = "Repair and Return" }

[[state]]
ident = "scrap"
name = { en = "Scrapped", fr = "Mise au rebut" }
description = { en = "Scrapped", fr = "Mise au rebut" }
end = { product_state = "TERMINATED" }
"#;

fn broken(from: &str, to: &str) -> String {
    load(&[("mini.toml", &GOOD.replacen(from, to, 1))])
        .expect_err("the broken definition must be rejected")
        .to_string()
}

#[test]
fn the_builtin_workflows_load() {
    let wfs = load_builtin().unwrap();
    let wf = wfs
        .default_for(6)
        .expect("a default workflow for BBOXX Home 2");
    assert_eq!(wf.name, "bboxx_home_2");
    assert!(wf.state("replace_pcb").is_some());
    assert!(wf.config_for(6).unwrap().contains_key("pass_capacity_mah"));
    load(&[("mini.toml", GOOD)]).unwrap();
}

/// Every product type the system creates has its own default workflow, and
/// any other type gets the fallback.
#[test]
fn every_product_type_has_a_workflow() {
    use crate::actions::manufacturing::ProductKind;
    let wfs = load_builtin().unwrap();
    for (kind, name) in [
        ("home2", "bboxx_home_2"),
        ("home3", "bboxx_home_3"),
        ("hub2", "bboxx_hub_2"),
        ("enterprise", "bboxx_enterprise"),
    ] {
        let id = ProductKind::parse(kind).unwrap().product_type_id();
        let wf = wfs.default_for(id).unwrap_or_else(|| panic!("{kind}"));
        assert_eq!(wf.name, name, "{kind}");
        assert!(wf.config_for(id).is_some(), "{kind} has a config block");
    }
    assert_eq!(wfs.default_for(9999).unwrap().name, "generic");
    // Only one workflow may be the fallback.
    let fallback = GOOD.replacen("initial_state", "fallback = true\ninitial_state", 1);
    let other = fallback
        .replacen("name = \"mini\"", "name = \"other\"", 1)
        .replacen("default = true", "default = false", 1);
    assert_eq!(
        load(&[("a.toml", &fallback), ("b.toml", &other)])
            .unwrap_err()
            .to_string(),
        "two workflows are the fallback for product types without their own: 'mini' and 'other'"
    );
    let wfs = load(&[("a.toml", &fallback)]).unwrap();
    assert_eq!(wfs.default_for(42).unwrap().name, "mini");
    assert!(load(&[("a.toml", GOOD)]).unwrap().default_for(42).is_none());
}

#[test]
fn unknown_state_is_rejected() {
    assert_eq!(
        broken("to = \"ok\"", "to = \"okk\""),
        "workflow 'mini': state 'check' transition 1 refers to unknown state 'okk'"
    );
    assert_eq!(
        broken("initial_state = \"check\"", "initial_state = \"start\""),
        "workflow 'mini': initial_state refers to unknown state 'start'"
    );
}

#[test]
fn unreachable_state_is_rejected() {
    let text = format!(
        "{GOOD}\n[[state]]\nident = \"orphan\"\nname = {{ en = \"O\", fr = \"O\" }}\ndescription = {{ en = \"O\", fr = \"O\" }}\nend = {{ product_state = \"TERMINATED\" }}\n"
    );
    assert_eq!(
        load(&[("mini.toml", &text)]).unwrap_err().to_string(),
        "workflow 'mini': state 'orphan' is unreachable from the initial state 'check'"
    );
}

#[test]
fn missing_translation_is_rejected() {
    assert_eq!(
        broken(
            "name = { en = \"Check\", fr = \"Vérification\" }",
            "name = { en = \"Check\" }"
        ),
        "workflow 'mini': state 'check' name has no 'fr' translation"
    );
    assert_eq!(
        broken(
            "label = { en = \"Done\", fr = \"Fait\" }",
            "label = { en = \"Done\", fr = \" \" }"
        ),
        "workflow 'mini': state 'check' event 'done' label has no 'fr' translation"
    );
    assert_eq!(
        broken(
            "label = { en = \"Battery Voltage\", fr = \"Tension de la batterie\" }",
            "label = { fr = \"Tension de la batterie\" }"
        ),
        "workflow 'mini': state 'check' input 'voltage' label has no 'en' translation"
    );
    assert_eq!(
        broken(
            "description = { en = \"Done\", fr = \"Terminé\" }",
            "description = { en = \"Done\", fr = \"Terminé\", de = \"Fertig\" }"
        ),
        "workflow 'mini': state 'ok' description has a text in unsupported language 'de' (supported: en, fr)"
    );
}

#[test]
fn dead_ends_unknown_events_and_inputs_are_rejected() {
    // A state from which no end can be reached.
    let limbo = format!(
        "{}\n[[state]]\nident = \"limbo\"\nname = {{ en = \"L\", fr = \"L\" }}\ndescription = {{ en = \"L\", fr = \"L\" }}\n[[state.event]]\nident = \"wait\"\nlabel = {{ en = \"W\", fr = \"W\" }}\n[[state.transition]]\nevent = \"wait\"\nto = \"limbo\"\n",
        GOOD.replacen(
            "when = [{ input = \"voltage\", op = \"ge\", value = 6.0 }]\nto = \"ok\"",
            "when = [{ input = \"voltage\", op = \"ge\", value = 6.0 }]\nto = \"ok\"\n\n[[state.transition]]\nevent = \"done\"\nwhen = [{ input = \"voltage\", op = \"lt\", value = 4.0 }]\nto = \"limbo\"",
            1
        )
    );
    let e = load(&[("mini.toml", &limbo)]).unwrap_err().to_string();
    assert_eq!(
        e,
        "workflow 'mini': state 'limbo' cannot reach an end state"
    );
    assert_eq!(
        broken(
            "event = \"done\"\nto = \"scrap\"",
            "event = \"gone\"\nto = \"scrap\""
        ),
        "workflow 'mini': state 'check' transition 2: event 'gone' is not an event of the state"
    );
    assert_eq!(
        broken("input = \"voltage\", op", "input = \"current\", op"),
        "workflow 'mini': state 'check' transition 1: guard on unknown input 'current'"
    );
}

#[test]
fn rules_must_fit_the_data_type() {
    assert_eq!(
        broken("{ min = 3.5, max = 7.5 }", "{ minlength = 3 }"),
        "workflow 'mini': state 'check' input 'voltage': rule 'minlength' does not apply to data type 'float' (allowed: [\"min\", \"max\", \"step\", \"options\"])"
    );
    assert_eq!(
        broken("{ min = 3.5, max = 7.5 }", "{ min = 8.0, max = 7.5 }"),
        "workflow 'mini': state 'check' input 'voltage': rule 'min' is above 'max'"
    );
    assert_eq!(
        broken("data_type = \"float\"", "data_type = \"selection\""),
        "workflow 'mini': state 'check' input 'voltage': rule 'min' does not apply to data type 'selection' (allowed: [])"
    );
}

#[test]
fn format_mistakes_and_duplicates_are_rejected() {
    let e = broken("ident = \"ok\"", "ident = \"ok\"\ncolour = \"red\"");
    assert!(
        e.starts_with("workflow file 'mini.toml': unknown field `colour`"),
        "{e}"
    );
    assert_eq!(
        broken("ident = \"scrap\"", "ident = \"ok\""),
        "workflow 'mini': state 'ok' is defined twice"
    );
    let e = load(&[("a.toml", GOOD), ("b.toml", GOOD)])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "product type 6 has two default workflows: 'mini' and 'mini'"
    );
    let second = GOOD.replacen("default = true", "default = false", 1);
    let e = load(&[("a.toml", GOOD), ("b.toml", &second)])
        .unwrap_err()
        .to_string();
    assert_eq!(e, "workflow 'mini' is defined twice");
    assert_eq!(
        broken("product_state = \"TERMINATED\"", "product_state = \"TERMINATED\", process = \"Lost\""),
        "workflow 'mini': state 'scrap' end.process: 'Lost' is not one of [\"Repair and Return\", \"Replaced\", \"Repossessed\", \"Broken on Arrival\"]"
    );
}

#[test]
fn accept_language_picks_the_best_supported_language() {
    assert_eq!(Lang::from_accept_language(None), Lang::En);
    assert_eq!(Lang::from_accept_language(Some("fr")), Lang::Fr);
    assert_eq!(
        Lang::from_accept_language(Some("fr-FR,fr;q=0.9,en;q=0.8")),
        Lang::Fr
    );
    assert_eq!(
        Lang::from_accept_language(Some("de-DE,en;q=0.5,fr;q=0.7")),
        Lang::Fr
    );
    assert_eq!(Lang::from_accept_language(Some("de")), Lang::En);
    assert_eq!(Lang::from_accept_language(Some("*")), Lang::En);
}
