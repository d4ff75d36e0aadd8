//! Parsing the `q` URL parameter into a [`QuerySpec`].
//!
//! Parsing knows nothing about tables: it checks the shape of `q` (keys,
//! operators, arguments) so that a malformed query is refused with the
//! position of the bad filter before any catalogue lookup. Names are resolved
//! and values typed later, by [`compile`](super::compile).
//!
//! The JSON is walked by hand rather than derived with serde so that every
//! refusal can say which filter and which key is wrong.

use serde_json::{Map, Value as Json};

use super::QueryError;

/// A parsed `q` parameter. Every part is optional in `q`; absent parts are
/// empty here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuerySpec {
    /// Top-level filters; a row must satisfy all of them.
    pub filters: Vec<Filter>,
    /// `limit`; `0` and `null` mean "no limit", as in Flask-Restless, which
    /// only applies a limit that is truthy.
    pub limit: Option<u64>,
    /// `offset`; `0` and `null` mean no offset.
    pub offset: Option<u64>,
    pub order_by: Vec<OrderBy>,
    /// `group_by` field names, in order.
    pub group_by: Vec<String>,
    /// `single`: the caller answers 404 for no row and 400 for several.
    pub single: bool,
}

/// One filter object.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `{"and": [...]}`: all must hold (an empty list holds).
    And(Vec<Self>),
    /// `{"or": [...]}`: one must hold (an empty list never holds).
    Or(Vec<Self>),
    /// `{"name", "op", "val" | "field"}`.
    Compare(Comparison),
}

/// `{"name": <field or relation>, "op": <operator>, "val" | "field": ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// A column, `relation__field`, or (for `has`/`any`) a relation.
    pub name: String,
    pub op: Op,
    /// The operator as the client spelt it, for messages.
    pub op_name: String,
    pub arg: Argument,
}

/// The second operand of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Argument {
    /// Unary operators (`is_null`, `is_not_null`): any `val` is ignored, as
    /// the spec's examples send `"val": ""`.
    None,
    /// `val`: a JSON value, typed against the column at compile time
    /// (never `null`; a list for `in`/`not_in`).
    Value(Json),
    /// `field` (or the spec's `fieldname`): another column of the table the
    /// filter applies to.
    Field(String),
    /// `has`/`any` with a filter object (or a list of them) as `val`: the
    /// nested filters apply to the related table and must all hold.
    Filters(Vec<Filter>),
}

/// The operators of the query language, each with all of its spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    In,
    NotIn,
    IsNull,
    IsNotNull,
    Like,
    ILike,
    /// A to-one relation's row satisfies the argument.
    Has,
    /// Some row of a to-many relation satisfies the argument.
    Any,
    /// No row of a relation satisfies the argument: the negation of `any`
    /// (an extension; Flask-Restless has no negation, and "units with no
    /// connection since ..." needs one).
    NotAny,
}

impl Op {
    /// Parses any spelling the spec or Flask-Restless 0.17 accepts
    /// (`equals_to` is the spec's; `equal_to` and `ne` are Flask-Restless').
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "==" | "eq" | "equals" | "equals_to" | "equal_to" => Self::Eq,
            "!=" | "ne" | "neq" | "does_not_equal" | "not_equal_to" => Self::Ne,
            ">" | "gt" => Self::Gt,
            "<" | "lt" => Self::Lt,
            ">=" | "ge" | "gte" | "geq" => Self::Ge,
            "<=" | "le" | "lte" | "leq" => Self::Le,
            "in" => Self::In,
            "not_in" => Self::NotIn,
            "is_null" => Self::IsNull,
            "is_not_null" => Self::IsNotNull,
            "like" => Self::Like,
            "ilike" => Self::ILike,
            "has" => Self::Has,
            "any" => Self::Any,
            "not_any" => Self::NotAny,
            _ => return None,
        })
    }

    /// `is_null` and `is_not_null` take no argument.
    pub fn is_unary(self) -> bool {
        matches!(self, Self::IsNull | Self::IsNotNull)
    }

    /// `has`, `any` and `not_any` apply to a relation.
    pub fn is_relational(self) -> bool {
        matches!(self, Self::Has | Self::Any | Self::NotAny)
    }
}

/// One `order_by` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    /// A column or `relation__field` (to-one relations only).
    pub field: String,
    pub direction: Direction,
}

/// Sort direction; `asc` when `direction` is absent, as in Flask-Restless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Asc,
    Desc,
}

/// Parses the `q` URL parameter.
///
/// `null` for any key means the key is absent (clients build `q` from
/// optional variables, as the spec's example does).
pub fn parse(q: &str) -> Result<QuerySpec, QueryError> {
    // serde_json stops at 128 levels of nesting, which also bounds the
    // recursion below (and in compilation) for hostile inputs.
    let json: Json = serde_json::from_str(q).map_err(|e| QueryError::Json(e.to_string()))?;
    let Json::Object(top) = json else {
        return Err(QueryError::NotAnObject(kind(&json)));
    };
    let mut spec = QuerySpec::default();
    for (key, value) in &top {
        if value.is_null() {
            if !KEYS.contains(&key.as_str()) {
                return Err(QueryError::UnknownKey(key.clone()));
            }
            continue;
        }
        match key.as_str() {
            "filters" => {
                let list = value.as_array().ok_or(QueryError::BadParameter {
                    key: "filters",
                    expected: "a list of filter objects",
                })?;
                spec.filters = parse_filters(list, "")?;
            }
            "limit" => spec.limit = count(value, "limit")?,
            "offset" => spec.offset = count(value, "offset")?,
            "single" => {
                spec.single = value.as_bool().ok_or(QueryError::BadParameter {
                    key: "single",
                    expected: "true or false",
                })?;
            }
            "order_by" => spec.order_by = parse_order_by(value)?,
            "group_by" => spec.group_by = parse_group_by(value)?,
            _ => return Err(QueryError::UnknownKey(key.clone())),
        }
    }
    Ok(spec)
}

const KEYS: [&str; 6] = [
    "filters", "limit", "offset", "order_by", "group_by", "single",
];

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

/// `limit`/`offset`: a non-negative integer that fits the databases' signed
/// 64-bit LIMIT/OFFSET; `0` means "not given".
fn count(value: &Json, key: &'static str) -> Result<Option<u64>, QueryError> {
    let bad = QueryError::BadParameter {
        key,
        expected: "a non-negative integer",
    };
    let n = match value.as_i64() {
        Some(n) if n >= 0 => n as u64,
        // 5.0 from clients that only have floats.
        _ => match value.as_f64() {
            Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => f as u64,
            _ => return Err(bad),
        },
    };
    Ok((n > 0).then_some(n))
}

/// Parses a list of filters; `prefix` is the position of the enclosing
/// filter (`""` at top level) for messages.
fn parse_filters(list: &[Json], prefix: &str) -> Result<Vec<Filter>, QueryError> {
    list.iter()
        .enumerate()
        .map(|(i, f)| {
            let at = if prefix.is_empty() {
                format!("{}", i + 1)
            } else {
                format!("{prefix}.{}", i + 1)
            };
            parse_filter(f, &at)
        })
        .collect()
}

fn parse_filter(value: &Json, at: &str) -> Result<Filter, QueryError> {
    let bad = |reason: String| QueryError::BadFilter {
        at: at.to_string(),
        reason,
    };
    let Json::Object(obj) = value else {
        return Err(bad(format!("expected an object, got {}", kind(value))));
    };
    for junction in ["and", "or"] {
        if let Some(inner) = obj.get(junction) {
            if obj.len() != 1 {
                return Err(bad(format!(
                    "'{junction}' must be the only key of its object"
                )));
            }
            let list = inner
                .as_array()
                .ok_or_else(|| bad(format!("'{junction}' needs a list of filters")))?;
            let filters = parse_filters(list, at)?;
            return Ok(if junction == "and" {
                Filter::And(filters)
            } else {
                Filter::Or(filters)
            });
        }
    }
    parse_comparison(obj, at).map(Filter::Compare)
}

fn parse_comparison(obj: &Map<String, Json>, at: &str) -> Result<Comparison, QueryError> {
    let bad = |reason: String| QueryError::BadFilter {
        at: at.to_string(),
        reason,
    };
    if let Some(key) = obj
        .keys()
        .find(|k| !["name", "op", "val", "field", "fieldname"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "unknown key '{key}'; expected name, op, val, field, or an 'and'/'or' list"
        )));
    }
    let name = match obj.get("name") {
        Some(Json::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(bad("'name' must be a non-empty string".into())),
        None => return Err(bad("missing 'name'".into())),
    };
    let op_name = match obj.get("op") {
        Some(Json::String(s)) => s.clone(),
        Some(_) => return Err(bad("'op' must be a string".into())),
        None => return Err(bad(format!("missing 'op' in filter on '{name}'"))),
    };
    let op = Op::parse(&op_name).ok_or_else(|| QueryError::UnknownOperator {
        op: op_name.clone(),
        at: at.to_string(),
    })?;
    let missing = |needs| QueryError::MissingArgument {
        name: name.clone(),
        op: op_name.clone(),
        needs,
    };
    let null = || QueryError::NullArgument {
        name: name.clone(),
        op: op_name.clone(),
    };

    let arg = if op.is_unary() {
        Argument::None
    } else if op.is_relational() {
        // Flask-Restless reads only `val` for has/any.
        match obj.get("val") {
            None => return Err(missing("'val'")),
            Some(Json::Null) => return Err(null()),
            Some(Json::Object(_)) => {
                Argument::Filters(vec![parse_filter(&obj["val"], &format!("{at}.1"))?])
            }
            Some(Json::Array(list)) if !list.is_empty() && list.iter().all(Json::is_object) => {
                Argument::Filters(parse_filters(list, at)?)
            }
            Some(v) => Argument::Value(v.clone()),
        }
    } else {
        // `field` wins over `val` when both are given, as in Flask-Restless;
        // `fieldname` is the spelling in the spec's example.
        let other = obj.get("field").or_else(|| obj.get("fieldname"));
        match (other, obj.get("val")) {
            (Some(Json::String(f)), _) if !matches!(op, Op::In | Op::NotIn) => {
                Argument::Field(f.clone())
            }
            (Some(Json::String(_)), _) => {
                return Err(QueryError::NotAList { name, op: op_name });
            }
            (Some(Json::Null) | None, Some(Json::Null)) => return Err(null()),
            (Some(Json::Null) | None, None) => return Err(missing("'val' or 'field'")),
            (Some(Json::Null) | None, Some(v)) => {
                if matches!(op, Op::In | Op::NotIn) && !v.is_array() {
                    return Err(QueryError::NotAList { name, op: op_name });
                }
                Argument::Value(v.clone())
            }
            (Some(_), _) => return Err(bad("'field' must be a string naming a field".into())),
        }
    };
    Ok(Comparison {
        name,
        op,
        op_name,
        arg,
    })
}

fn parse_order_by(value: &Json) -> Result<Vec<OrderBy>, QueryError> {
    let list = value.as_array().ok_or(QueryError::BadParameter {
        key: "order_by",
        expected: "a list of {\"field\", \"direction\"} objects",
    })?;
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let bad = |reason: String| QueryError::BadOrdering {
                key: "order_by",
                at: i + 1,
                reason,
            };
            let obj = entry
                .as_object()
                .ok_or_else(|| bad(format!("expected an object, got {}", kind(entry))))?;
            if let Some(key) = obj.keys().find(|k| *k != "field" && *k != "direction") {
                return Err(bad(format!(
                    "unknown key '{key}'; expected field and direction"
                )));
            }
            let field = field_of(obj).map_err(bad)?;
            let direction = match obj.get("direction") {
                None | Some(Json::Null) => Direction::Asc,
                Some(Json::String(d)) if d.eq_ignore_ascii_case("asc") => Direction::Asc,
                Some(Json::String(d)) if d.eq_ignore_ascii_case("desc") => Direction::Desc,
                Some(_) => return Err(bad("'direction' must be \"asc\" or \"desc\"".into())),
            };
            Ok(OrderBy { field, direction })
        })
        .collect()
}

fn parse_group_by(value: &Json) -> Result<Vec<String>, QueryError> {
    let list = value.as_array().ok_or(QueryError::BadParameter {
        key: "group_by",
        expected: "a list of {\"field\"} objects",
    })?;
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let bad = |reason: String| QueryError::BadOrdering {
                key: "group_by",
                at: i + 1,
                reason,
            };
            let obj = entry
                .as_object()
                .ok_or_else(|| bad(format!("expected an object, got {}", kind(entry))))?;
            if let Some(key) = obj.keys().find(|k| *k != "field") {
                return Err(bad(format!("unknown key '{key}'; expected field")));
            }
            field_of(obj).map_err(bad)
        })
        .collect()
}

fn field_of(obj: &Map<String, Json>) -> Result<String, String> {
    match obj.get("field") {
        Some(Json::String(f)) if !f.is_empty() => Ok(f.clone()),
        Some(_) => Err("'field' must be a non-empty string".into()),
        None => Err("missing 'field'".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(filter: Json) -> Result<Filter, QueryError> {
        let mut spec = parse(&json!({ "filters": [filter] }).to_string())?;
        Ok(spec.filters.remove(0))
    }

    fn op_of(filter: Json) -> Op {
        match one(filter).unwrap() {
            Filter::Compare(c) => c.op,
            other => panic!("not a comparison: {other:?}"),
        }
    }

    #[test]
    fn every_operator_spelling() {
        let table: &[(&[&str], Op)] = &[
            (&["==", "eq", "equals", "equals_to", "equal_to"], Op::Eq),
            (
                &["!=", "ne", "neq", "does_not_equal", "not_equal_to"],
                Op::Ne,
            ),
            (&[">", "gt"], Op::Gt),
            (&["<", "lt"], Op::Lt),
            (&[">=", "ge", "gte", "geq"], Op::Ge),
            (&["<=", "le", "lte", "leq"], Op::Le),
            (&["like"], Op::Like),
            (&["ilike"], Op::ILike),
        ];
        for (spellings, op) in table {
            for s in *spellings {
                assert_eq!(
                    op_of(json!({"name": "capacity_limit", "op": s, "val": 15})),
                    *op,
                    "{s}"
                );
            }
        }
        assert_eq!(
            op_of(json!({"name": "a", "op": "in", "val": [1, 2, 5]})),
            Op::In
        );
        assert_eq!(
            op_of(json!({"name": "a", "op": "not_in", "val": []})),
            Op::NotIn
        );
        assert_eq!(
            op_of(json!({"name": "a", "op": "is_null", "val": ""})),
            Op::IsNull
        );
        assert_eq!(
            op_of(json!({"name": "a", "op": "is_not_null"})),
            Op::IsNotNull
        );
        assert_eq!(
            op_of(
                json!({"name": "notes", "op": "any", "val": {"name": "x", "op": "eq", "val": 1}})
            ),
            Op::Any
        );
        assert_eq!(
            op_of(json!({"name": "product_type", "op": "has", "val": 4})),
            Op::Has
        );
    }

    #[test]
    fn the_spec_example_parses() {
        let q = json!({
            "filters": [
                {"name": "product_imei", "op": "eq", "val": "013777894687"},
                {"name": "product_type_id", "op": "lt", "val": 3}
            ],
            "limit": 100, "offset": 10,
            "group_by": [{"field": "product_type_id"}, {"field": "hub_id"}, {"field": "shop_id"}],
            "order_by": [{"field": "created_at", "direction": "asc"}, {"field": "capacity_limit", "direction": "desc"}],
            "single": true
        });
        let spec = parse(&q.to_string()).unwrap();
        assert_eq!(spec.filters.len(), 2);
        assert_eq!(
            (spec.limit, spec.offset, spec.single),
            (Some(100), Some(10), true)
        );
        assert_eq!(spec.group_by, ["product_type_id", "hub_id", "shop_id"]);
        assert_eq!(
            spec.order_by[1],
            OrderBy {
                field: "capacity_limit".into(),
                direction: Direction::Desc
            }
        );
    }

    #[test]
    fn empty_and_null_parts_are_absent() {
        assert_eq!(parse("{}").unwrap(), QuerySpec::default());
        let spec = parse(
            r#"{"filters": null, "limit": null, "offset": 0, "single": null, "order_by": null}"#,
        )
        .unwrap();
        assert_eq!(spec, QuerySpec::default());
        assert_eq!(
            parse(r#"{"limit": 0}"#).unwrap().limit,
            None,
            "Flask-Restless ignores a falsy limit"
        );
        assert_eq!(parse(r#"{"limit": 5.0}"#).unwrap().limit, Some(5));
    }

    #[test]
    fn column_to_column_and_the_fieldname_typo() {
        let expected = Argument::Field("current_tamper_flag".into());
        for key in ["field", "fieldname"] {
            let f = one(json!({"name": "desired_tamper_flag", "op": "equals_to", key: "current_tamper_flag"})).unwrap();
            let Filter::Compare(c) = f else { panic!() };
            assert_eq!(c.arg, expected, "{key}");
        }
        // `field` wins over `val`, as in Flask-Restless.
        let Filter::Compare(c) =
            one(json!({"name": "a", "op": "eq", "val": 1, "field": "b"})).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.arg, Argument::Field("b".into()));
    }

    #[test]
    fn nested_boolean_formulas() {
        let f = one(json!({"or": [
            {"name": "a", "op": "eq", "val": 1},
            {"and": [
                {"name": "b", "op": "gt", "val": 2},
                {"or": [{"name": "c", "op": "is_null"}, {"not_a_filter": 1}]}
            ]}
        ]}));
        // The malformed leaf is reported with its dotted position.
        assert_eq!(
            f.unwrap_err().to_string(),
            "filter 1.2.2.2 is malformed: unknown key 'not_a_filter'; expected name, op, val, field, or an 'and'/'or' list"
        );
        let f = one(json!({"or": [{"name": "a", "op": "eq", "val": 1}, {"and": [{"name": "b", "op": "gt", "val": 2}]}]}))
            .unwrap();
        let Filter::Or(items) = f else {
            panic!("{f:?}")
        };
        assert!(matches!(&items[1], Filter::And(inner) if inner.len() == 1));
    }

    #[test]
    fn has_and_any_take_nested_filters_or_values() {
        let Filter::Compare(c) =
            one(json!({"name": "notes", "op": "any", "val": [{"name": "note_text", "op": "like", "val": "%x%"}, {"name": "product_note_id", "op": "gt", "val": 1}]}))
                .unwrap()
        else {
            panic!()
        };
        assert!(matches!(c.arg, Argument::Filters(ref f) if f.len() == 2));
        let Filter::Compare(c) =
            one(json!({"name": "states", "op": "any", "val": [1, 2]})).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.arg, Argument::Value(json!([1, 2])));
        let err =
            one(json!({"name": "notes", "op": "any", "val": {"name": "x", "op": "eqq", "val": 1}}))
                .unwrap_err();
        assert_eq!(err.to_string(), "unknown operator 'eqq' in filter 1.1");
    }

    #[test]
    fn malformed_q_is_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("{", "q is not valid JSON"),
            ("[1]", "q must be a JSON object, got a list"),
            (r#"{"filter": []}"#, "unknown key 'filter' in q"),
            (r#"{"limit": -1}"#, "'limit' must be a non-negative integer"),
            (
                r#"{"offset": -5}"#,
                "'offset' must be a non-negative integer",
            ),
            (
                r#"{"limit": "5"}"#,
                "'limit' must be a non-negative integer",
            ),
            (r#"{"single": "yes"}"#, "'single' must be true or false"),
            (
                r#"{"filters": {"name": "a"}}"#,
                "'filters' must be a list of filter objects",
            ),
            (
                r#"{"filters": [1]}"#,
                "filter 1 is malformed: expected an object, got a number",
            ),
            (
                r#"{"filters": [{"op": "eq", "val": 1}]}"#,
                "filter 1 is malformed: missing 'name'",
            ),
            (
                r#"{"filters": [{"name": "a", "val": 1}]}"#,
                "filter 1 is malformed: missing 'op' in filter on 'a'",
            ),
            (
                r#"{"filters": [{"name": "a", "op": "eq", "val": 1}, {"name": "b", "op": "eqq", "val": 1}]}"#,
                "unknown operator 'eqq' in filter 2",
            ),
            (
                r#"{"filters": [{"name": "capacity_limit", "op": "gt"}]}"#,
                "filter on 'capacity_limit' with op 'gt' needs 'val' or 'field'",
            ),
            (
                r#"{"filters": [{"name": "a", "op": "==", "val": null}]}"#,
                "filter on 'a' with op '==' compares with null; use is_null or is_not_null",
            ),
            (
                r#"{"filters": [{"name": "a", "op": "in", "val": 3}]}"#,
                "filter on 'a' with op 'in' needs a list as 'val'",
            ),
            (
                r#"{"filters": [{"name": "a", "op": "not_in", "field": "b"}]}"#,
                "filter on 'a' with op 'not_in' needs a list",
            ),
            (
                r#"{"filters": [{"name": "notes", "op": "any"}]}"#,
                "filter on 'notes' with op 'any' needs 'val'",
            ),
            (
                r#"{"filters": [{"name": "a", "op": "eq", "field": 3}]}"#,
                "'field' must be a string naming a field",
            ),
            (
                r#"{"filters": [{"or": [], "and": []}]}"#,
                "must be the only key of its object",
            ),
            (
                r#"{"filters": [{"or": {}}]}"#,
                "'or' needs a list of filters",
            ),
            (
                r#"{"order_by": [{"field": "a", "direction": "up"}]}"#,
                "order_by entry 1 is malformed: 'direction' must be",
            ),
            (
                r#"{"order_by": [{"name": "a"}]}"#,
                "order_by entry 1 is malformed: unknown key 'name'",
            ),
            (r#"{"order_by": "a"}"#, "'order_by' must be a list"),
            (
                r#"{"group_by": [{"field": "a"}, "b"]}"#,
                "group_by entry 2 is malformed: expected an object, got a string",
            ),
        ];
        for (q, expected) in cases {
            let err = parse(q).expect_err(q).to_string();
            assert!(err.contains(expected), "{q}: {err}");
        }
    }

    #[test]
    fn order_direction_defaults_to_asc() {
        let spec = parse(r#"{"order_by": [{"field": "a"}, {"field": "b", "direction": "DESC"}]}"#)
            .unwrap();
        assert_eq!(spec.order_by[0].direction, Direction::Asc);
        assert_eq!(spec.order_by[1].direction, Direction::Desc);
    }
}
