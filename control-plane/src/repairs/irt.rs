//! IRT input validation, exactly per the spec's "IRT Input Specifications".
//!
//! Pure: a value and its specification in, the first violated rule out.
//! The caller resolves a selection's options (fixed, or from the database)
//! and passes their values in.
//!
//! Where the spec is silent (recorded in `docs/decisions.md`):
//! - an `int` must be a JSON integer (`4.0` and `"4"` are refused); a
//!   `float` may be any JSON number;
//! - `step` counts from `min` when there is one, else from 0, as HTML's
//!   `step` attribute does; floats are compared with a relative tolerance
//!   of 1e-9 so that `4.8` is a multiple of `0.01`;
//! - lengths count characters (Unicode scalar values), not bytes, so
//!   "Réparé" is 6 long;
//! - a `multi` selection is a JSON array of distinct option values; the
//!   empty array is allowed (nothing selected).

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::{Number, Value as Json};

use super::definition::{DataType, InputSpec, SelectionType};

/// The three formats the spec accepts for `datetime` inputs.
pub const DATETIME_FORMATS: [&str; 3] = ["%H:%M:%S", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%SZ"];

/// One violated rule of one input: answered as a 400 naming both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input '{input}' violates rule '{rule}': {message}")]
pub struct Violation {
    /// The input's `ident`.
    pub input: String,
    /// The rule: `min`, `max`, `step`, `options`, `minlength`, `maxlength`,
    /// `data_type`, `format`, `selection_type` or `required`.
    pub rule: &'static str,
    pub message: String,
}

/// Checks `value` against `spec`. `options` are the allowed values of a
/// selection (ignored for other types). `null` is accepted only for an
/// input that is not required.
pub fn validate(spec: &InputSpec, options: &[Json], value: &Json) -> Result<(), Violation> {
    let fail = |rule: &'static str, message: String| {
        Err(Violation {
            input: spec.ident.clone(),
            rule,
            message,
        })
    };
    if value.is_null() {
        return if spec.required {
            fail("required", "a value is required".into())
        } else {
            Ok(())
        };
    }
    let rules = &spec.validation_rules;
    match spec.data_type {
        DataType::Int | DataType::Float => {
            let x = match (spec.data_type, value) {
                (DataType::Int, Json::Number(n)) if n.is_i64() || n.is_u64() => {
                    n.as_f64().unwrap_or_default()
                }
                (DataType::Float, Json::Number(n)) => n.as_f64().unwrap_or_default(),
                _ => {
                    let kind = if spec.data_type == DataType::Int {
                        "an integer"
                    } else {
                        "a number"
                    };
                    return fail("data_type", format!("must be {kind}, got {value}"));
                }
            };
            if let Some(min) = rules.min.as_ref().and_then(Number::as_f64) {
                if x < min {
                    return fail("min", format!("must be at least {min}, got {value}"));
                }
            }
            if let Some(max) = rules.max.as_ref().and_then(Number::as_f64) {
                if x > max {
                    return fail("max", format!("must be at most {max}, got {value}"));
                }
            }
            if let Some(step) = rules.step.as_ref().and_then(Number::as_f64) {
                let base = rules.min.as_ref().and_then(Number::as_f64).unwrap_or(0.0);
                if !is_multiple(x - base, step) {
                    return fail(
                        "step",
                        format!("must be {base} plus a multiple of {step}, got {value}"),
                    );
                }
            }
            if let Some(allowed) = &rules.options {
                let ok = allowed
                    .iter()
                    .filter_map(Json::as_f64)
                    .any(|o| nearly_equal(o, x));
                if !ok {
                    return fail(
                        "options",
                        format!("must be one of {}, got {value}", list(allowed)),
                    );
                }
            }
            Ok(())
        }
        DataType::String | DataType::Text => {
            let Json::String(s) = value else {
                return fail("data_type", format!("must be a string, got {value}"));
            };
            let len = s.chars().count() as u64;
            if let Some(min) = rules.minlength {
                if len < min {
                    return fail(
                        "minlength",
                        format!("must be at least {min} characters long, got {len}"),
                    );
                }
            }
            if let Some(max) = rules.maxlength {
                if len > max {
                    return fail(
                        "maxlength",
                        format!("must be at most {max} characters long, got {len}"),
                    );
                }
            }
            if let Some(allowed) = &rules.options {
                if !allowed.iter().any(|o| o.as_str() == Some(s)) {
                    return fail(
                        "options",
                        format!("must be one of {}, got {value}", list(allowed)),
                    );
                }
            }
            Ok(())
        }
        DataType::Datetime => {
            let ok = value
                .as_str()
                .is_some_and(|s| parse_datetime_input(s).is_some());
            if ok {
                Ok(())
            } else {
                fail(
                    "format",
                    format!(
                        "must be a date/time string in one of the formats {} (e.g. \"14:30:00\", \"2018-03-30\", \"2018-03-30T14:30:00Z\"), got {value}",
                        DATETIME_FORMATS.join(", ")
                    ),
                )
            }
        }
        DataType::Selection => match spec.selection_type.unwrap_or(SelectionType::Single) {
            SelectionType::Single => {
                if value.is_array() {
                    return fail(
                        "selection_type",
                        "is a single selection: submit one value, not a list".into(),
                    );
                }
                if options.contains(value) {
                    Ok(())
                } else {
                    fail(
                        "options",
                        format!("must be one of {}, got {value}", list(options)),
                    )
                }
            }
            SelectionType::Multi => {
                let Json::Array(values) = value else {
                    return fail(
                        "selection_type",
                        format!("is a multi selection: submit a list of values, got {value}"),
                    );
                };
                for (i, v) in values.iter().enumerate() {
                    if !options.contains(v) {
                        return fail(
                            "options",
                            format!("every value must be one of {}, got {v}", list(options)),
                        );
                    }
                    if values[..i].contains(v) {
                        return fail("options", format!("value {v} is selected twice"));
                    }
                }
                Ok(())
            }
        },
    }
}

/// A `datetime` input in one of the spec's formats: a time of day, a date,
/// or a UTC timestamp.
pub fn parse_datetime_input(s: &str) -> Option<DateTimeInput> {
    if let Ok(t) = NaiveTime::parse_from_str(s, DATETIME_FORMATS[0]) {
        // chrono accepts a leap second (":60"); the spec's %S does not.
        return (s.len() == 8).then_some(DateTimeInput::Time(t));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, DATETIME_FORMATS[1]) {
        return (s.len() == 10).then_some(DateTimeInput::Date(d));
    }
    NaiveDateTime::parse_from_str(s, DATETIME_FORMATS[2])
        .ok()
        .filter(|_| s.len() == 20)
        .map(DateTimeInput::Timestamp)
}

/// A parsed `datetime` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateTimeInput {
    Time(NaiveTime),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
}

fn nearly_equal(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn is_multiple(x: f64, step: f64) -> bool {
    let k = (x / step).round();
    nearly_equal(k * step, x)
}

fn list(values: &[Json]) -> String {
    let items: Vec<String> = values.iter().map(Json::to_string).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(toml_text: &str) -> InputSpec {
        toml::from_str(toml_text).unwrap()
    }

    fn rule_of(spec: &InputSpec, options: &[Json], v: Json) -> Option<&'static str> {
        validate(spec, options, &v).err().map(|e| {
            assert_eq!(e.input, spec.ident);
            e.rule
        })
    }

    const INT: &str = r#"ident = "n"
data_type = "int"
label = { en = "N", fr = "N" }
validation_rules = { min = 3, max = 7, step = 2 }"#;

    #[test]
    fn int_type_min_max_step() {
        let s = spec(INT);
        assert_eq!(rule_of(&s, &[], json!(3)), None);
        assert_eq!(rule_of(&s, &[], json!(7)), None);
        assert_eq!(rule_of(&s, &[], json!(2)), Some("min"));
        assert_eq!(rule_of(&s, &[], json!(9)), Some("max"));
        assert_eq!(rule_of(&s, &[], json!(4)), Some("step"));
        assert_eq!(rule_of(&s, &[], json!(4.0)), Some("data_type"));
        assert_eq!(rule_of(&s, &[], json!("5")), Some("data_type"));
        assert_eq!(rule_of(&s, &[], json!(null)), Some("required"));
    }

    #[test]
    fn int_options() {
        let s = spec(
            r#"ident = "n"
data_type = "int"
label = { en = "N", fr = "N" }
validation_rules = { options = [0, 2, 4] }"#,
        );
        assert_eq!(rule_of(&s, &[], json!(2)), None);
        assert_eq!(rule_of(&s, &[], json!(3)), Some("options"));
    }

    #[test]
    fn float_min_max_step_options() {
        let s = spec(
            r#"ident = "voltage"
data_type = "float"
label = { en = "V", fr = "V" }
validation_rules = { min = 3.5, max = 7.5, step = 0.01 }"#,
        );
        assert_eq!(rule_of(&s, &[], json!(4.8)), None);
        assert_eq!(rule_of(&s, &[], json!(5)), None, "an integer is a float");
        assert_eq!(rule_of(&s, &[], json!(3.49)), Some("min"));
        assert_eq!(rule_of(&s, &[], json!(7.51)), Some("max"));
        assert_eq!(rule_of(&s, &[], json!(4.805)), Some("step"));
        assert_eq!(rule_of(&s, &[], json!("4.8")), Some("data_type"));
        let o = spec(
            r#"ident = "fuse"
data_type = "float"
label = { en = "F", fr = "F" }
validation_rules = { options = [2.5, 5.0] }"#,
        );
        assert_eq!(rule_of(&o, &[], json!(5)), None);
        assert_eq!(rule_of(&o, &[], json!(2.5)), None);
        assert_eq!(rule_of(&o, &[], json!(3.0)), Some("options"));
    }

    #[test]
    fn string_lengths_count_characters_and_options() {
        let s = spec(
            r#"ident = "serial"
data_type = "string"
label = { en = "S", fr = "S" }
validation_rules = { minlength = 6, maxlength = 8 }"#,
        );
        assert_eq!(
            rule_of(&s, &[], json!("Réparé")),
            None,
            "6 characters, 8 bytes"
        );
        assert_eq!(rule_of(&s, &[], json!("short")), Some("minlength"));
        assert_eq!(rule_of(&s, &[], json!("much too long")), Some("maxlength"));
        assert_eq!(rule_of(&s, &[], json!(123456)), Some("data_type"));
        let o = spec(
            r#"ident = "r"
data_type = "string"
label = { en = "R", fr = "R" }
validation_rules = { options = ["pass", "fail"] }"#,
        );
        assert_eq!(rule_of(&o, &[], json!("pass")), None);
        assert_eq!(rule_of(&o, &[], json!("PASS")), Some("options"));
    }

    #[test]
    fn text_lengths_and_optional_null() {
        let s = spec(
            r#"ident = "termination_reason"
data_type = "text"
required = false
label = { en = "T", fr = "T" }
validation_rules = { minlength = 10, maxlength = 20 }"#,
        );
        assert_eq!(rule_of(&s, &[], json!("Lorem ipsum dolor")), None);
        assert_eq!(rule_of(&s, &[], json!("Lorem")), Some("minlength"));
        assert_eq!(
            rule_of(&s, &[], json!("Lorem ipsum dolor sit amet")),
            Some("maxlength")
        );
        assert_eq!(rule_of(&s, &[], json!(null)), None);
    }

    #[test]
    fn datetime_in_the_three_formats_only() {
        let s = spec(
            r#"ident = "refurb_date"
data_type = "datetime"
label = { en = "D", fr = "D" }"#,
        );
        for ok in ["14:30:00", "2018-03-30", "2018-03-30T14:30:00Z"] {
            assert_eq!(rule_of(&s, &[], json!(ok)), None, "{ok}");
        }
        for bad in [
            "2018-03-30 14:30:00",
            "2018-03-30T14:30:00",
            "2018-03-30T14:30:00+01:00",
            "2018-02-30",
            "25:00:00",
            "14:30",
            "30/03/2018",
            "",
        ] {
            assert_eq!(rule_of(&s, &[], json!(bad)), Some("format"), "{bad}");
        }
        assert_eq!(rule_of(&s, &[], json!(20180330)), Some("format"));
    }

    #[test]
    fn selection_single_and_multi() {
        let single = spec(
            r#"ident = "replacement_part_type"
data_type = "selection"
selection_type = "single"
label = { en = "P", fr = "P" }
replacement_options = { part_type_category_id = 1 }"#,
        );
        let options = [json!(61), json!(44), json!(48)];
        assert_eq!(rule_of(&single, &options, json!(44)), None);
        assert_eq!(rule_of(&single, &options, json!(43)), Some("options"));
        assert_eq!(rule_of(&single, &options, json!("44")), Some("options"));
        assert_eq!(
            rule_of(&single, &options, json!([44])),
            Some("selection_type")
        );
        let multi = spec(
            r#"ident = "internal_inspection_result"
data_type = "selection"
selection_type = "multi"
label = { en = "I", fr = "I" }
options = [{ value = 12, label = { en = "Light Pipes", fr = "Guides" } }]"#,
        );
        let options = [json!(69), json!(12), json!(15), json!(62)];
        assert_eq!(rule_of(&multi, &options, json!([12, 62])), None);
        assert_eq!(rule_of(&multi, &options, json!([])), None);
        assert_eq!(rule_of(&multi, &options, json!([12, 13])), Some("options"));
        assert_eq!(rule_of(&multi, &options, json!([12, 12])), Some("options"));
        assert_eq!(rule_of(&multi, &options, json!(12)), Some("selection_type"));
    }

    #[test]
    fn messages_name_the_input_and_the_rule() {
        let s = spec(INT);
        let e = validate(&s, &[], &json!(9)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "input 'n' violates rule 'max': must be at most 7, got 9"
        );
    }
}
