//! Conversion of JSON values from clients into typed SQL values for a
//! catalogue column, and the one timestamp format the API speaks.
//!
//! Bodies and filters share this code, so a value that a PUT accepts is the
//! same value a filter on that column accepts.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sea_query::Value;
use serde_json::Value as Json;

use crate::catalogue::{Column, ColumnType};

/// Timestamps are UTC ISO-8601 with microseconds and no zone
/// (`2016-10-21T11:38:16.884380`), as in the spec's examples.
pub const DATETIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

/// What [`format_datetime`] writes, as a pattern for the OpenAPI document's
/// responses: RFC 3339 (`format: date-time`) requires a zone, which the
/// spec's form has not. chrono signs a year outside 0000 to 9999.
pub const DATETIME_PATTERN: &str =
    r"^([0-9]{4}|[+-][0-9]{4,6})-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}$";

/// Dates as the spec writes them (`YYYY-MM-DD`).
pub const DATE_FORMAT: &str = "%Y-%m-%d";

/// Formats a timestamp the way the API returns it.
pub fn format_datetime(t: &NaiveDateTime) -> String {
    t.format(DATETIME_FORMAT).to_string()
}

/// The current time, truncated to microseconds so what is stored equals what is returned.
pub fn now() -> NaiveDateTime {
    let t = Utc::now().naive_utc();
    t.with_nanosecond_micros()
}

trait TruncateMicros {
    fn with_nanosecond_micros(self) -> Self;
}

impl TruncateMicros for NaiveDateTime {
    fn with_nanosecond_micros(self) -> Self {
        use chrono::Timelike;
        let micros = self.nanosecond() / 1_000 * 1_000;
        self.with_nanosecond(micros).unwrap_or(self)
    }
}

/// Why a JSON value does not fit a column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The JSON type does not match the column type.
    #[error("field '{field}' must be of type {expected}, got {got}")]
    WrongType {
        field: String,
        expected: &'static str,
        got: &'static str,
    },
    /// A string is not a timestamp or date in an accepted format.
    #[error("field '{field}' must be a {expected} like {example}, got '{got}'")]
    BadTime {
        field: String,
        expected: &'static str,
        example: &'static str,
        got: String,
    },
    /// The value is not one of the column's `options`.
    #[error("field '{field}' must be one of {options:?}, got '{got}'")]
    NotAnOption {
        field: String,
        options: Vec<String>,
        got: String,
    },
    /// A string is longer than the column allows.
    #[error("field '{field}' must be at most {max} characters long, got {got}")]
    TooLong {
        field: String,
        max: usize,
        got: usize,
    },
    /// `null` for a not-null column.
    #[error("field '{field}' may not be null")]
    Null { field: String },
    /// A string with the NUL character, which PostgreSQL cannot store
    /// (refused on SQLite too, so both backends accept the same values).
    #[error("field '{field}' may not contain the NUL character (\\u0000)")]
    Nul { field: String },
}

impl ValueError {
    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            Self::WrongType { field, .. }
            | Self::BadTime { field, .. }
            | Self::NotAnOption { field, .. }
            | Self::TooLong { field, .. }
            | Self::Null { field }
            | Self::Nul { field } => field,
        }
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// The typed null for a column, so the database sees the right parameter type.
pub fn null_for(ty: ColumnType) -> Value {
    match ty {
        ColumnType::Int => Value::BigInt(None),
        ColumnType::Float => Value::Double(None),
        ColumnType::String | ColumnType::Text => Value::String(None),
        ColumnType::Boolean => Value::Bool(None),
        ColumnType::Datetime => Value::ChronoDateTime(None),
        ColumnType::Date => Value::ChronoDate(None),
        ColumnType::Array => Value::Json(None),
    }
}

/// Parses a timestamp in the forms clients send: ISO-8601 with `T` or a
/// space, with or without fraction, with an optional `Z`/offset (converted to
/// UTC), or a bare date (midnight).
pub fn parse_datetime(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc).naive_utc());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), fmt) {
            return Some(t);
        }
    }
    NaiveDate::parse_from_str(text, DATE_FORMAT)
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

/// Converts a client's JSON value to a SQL value for `column`, enforcing the
/// column's type, `options` and length. `null` is returned as a typed null;
/// whether null is allowed is the caller's decision (filters may compare with
/// null, inserts may not).
pub fn coerce(column: &Column, value: &Json) -> Result<Value, ValueError> {
    let field = || column.name.clone();
    let wrong = |expected: &'static str| ValueError::WrongType {
        field: field(),
        expected,
        got: json_kind(value),
    };
    if value.is_null() {
        return Ok(null_for(column.ty));
    }
    let out = match column.ty {
        ColumnType::Int => match value {
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::BigInt(Some(i)),
                // 3.0 is an int; 3.5 is not.
                None => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                        Value::BigInt(Some(f as i64))
                    }
                    _ => return Err(wrong("int")),
                },
            },
            _ => return Err(wrong("int")),
        },
        ColumnType::Float => match value.as_f64() {
            Some(f) => Value::Double(Some(f)),
            None => return Err(wrong("float")),
        },
        ColumnType::Boolean => match value {
            Json::Bool(b) => Value::Bool(Some(*b)),
            _ => return Err(wrong("boolean")),
        },
        ColumnType::String | ColumnType::Text => {
            let Json::String(text) = value else {
                return Err(wrong(column.ty.as_str()));
            };
            let text = text.clone();
            if text.contains('\0') {
                return Err(ValueError::Nul { field: field() });
            }
            if let Some(max) = column.max_len {
                let len = text.chars().count();
                if len > max {
                    return Err(ValueError::TooLong {
                        field: field(),
                        max,
                        got: len,
                    });
                }
            }
            Value::String(Some(Box::new(text)))
        }
        ColumnType::Datetime => match value {
            Json::String(s) => match parse_datetime(s) {
                Some(t) => Value::ChronoDateTime(Some(Box::new(t))),
                None => {
                    return Err(ValueError::BadTime {
                        field: field(),
                        expected: "datetime",
                        example: "2016-07-01T12:34:45.123456",
                        got: s.clone(),
                    })
                }
            },
            _ => return Err(wrong("datetime")),
        },
        ColumnType::Date => match value {
            Json::String(s) => {
                match NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), DATE_FORMAT) {
                    Ok(d) => Value::ChronoDate(Some(Box::new(d))),
                    Err(_) => {
                        return Err(ValueError::BadTime {
                            field: field(),
                            expected: "date",
                            example: "2016-07-01",
                            got: s.clone(),
                        })
                    }
                }
            }
            _ => return Err(wrong("date")),
        },
        ColumnType::Array => match value {
            Json::Array(_) => Value::Json(Some(Box::new(value.clone()))),
            _ => return Err(wrong("array")),
        },
    };
    if let (Some(options), Value::String(Some(s))) = (&column.options, &out) {
        if !options.iter().any(|o| o == s.as_str()) {
            return Err(ValueError::NotAnOption {
                field: field(),
                options: options.clone(),
                got: s.to_string(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Catalogue;
    use serde_json::json;

    fn column(table: &str, name: &str) -> Column {
        Catalogue::builtin()
            .table(table)
            .unwrap()
            .column(name)
            .unwrap()
            .clone()
    }

    /// The pattern the OpenAPI document gives response timestamps matches
    /// what the server writes, years beyond four digits included, and not
    /// the zoned forms it only reads.
    #[test]
    fn the_documented_pattern_is_what_the_server_writes() {
        let pattern = regex::Regex::new(DATETIME_PATTERN).unwrap();
        for text in [
            "2016-07-01T12:34:45.123456",
            "0000-01-01T00:00:00Z",
            "0000-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59.999999-01:00",
            "2016-07-01",
        ] {
            let written = format_datetime(&parse_datetime(text).unwrap());
            assert!(pattern.is_match(&written), "{text} -> {written}");
        }
        for zoned in ["2016-07-01T12:34:45.123456Z", "2016-07-01T12:34:45+00:00"] {
            assert!(!pattern.is_match(zoned), "{zoned}");
        }
    }

    #[test]
    fn ints_accept_whole_numbers_only() {
        let c = column("product", "product_type_id");
        assert_eq!(coerce(&c, &json!(3)).unwrap(), Value::BigInt(Some(3)));
        assert_eq!(coerce(&c, &json!(3.0)).unwrap(), Value::BigInt(Some(3)));
        let err = coerce(&c, &json!("3")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field 'product_type_id' must be of type int, got string"
        );
        assert!(coerce(&c, &json!(3.5)).is_err());
    }

    #[test]
    fn options_and_lengths_are_enforced() {
        let c = column("enable_history", "current_enable_state");
        assert!(coerce(&c, &json!("enabled")).is_ok());
        let err = coerce(&c, &json!("on")).unwrap_err();
        assert!(err.to_string().contains("must be one of"), "{err}");
        let imei = column("product", "product_imei");
        assert!(matches!(
            coerce(&imei, &json!("1234567890123456")),
            Err(ValueError::TooLong { max: 15, .. })
        ));
        assert_eq!(
            coerce(&imei, &json!("12345\u{0}")).unwrap_err(),
            ValueError::Nul {
                field: "product_imei".into()
            }
        );
    }

    #[test]
    fn datetimes_in_every_client_form() {
        let c = column("product", "disable_date");
        for text in [
            "2016-07-01 12:34:45",
            "2016-07-01T12:34:45.123456",
            "2016-07-01T12:34:45Z",
            "2016-07-01",
        ] {
            assert!(coerce(&c, &json!(text)).is_ok(), "{text}");
        }
        let err = coerce(&c, &json!("yesterday")).unwrap_err();
        assert!(err.to_string().contains("datetime"), "{err}");
        assert_eq!(
            format_datetime(&parse_datetime("2016-07-01 12:34:45.5").unwrap()),
            "2016-07-01T12:34:45.500000"
        );
    }

    #[test]
    fn now_has_microsecond_precision() {
        use chrono::Timelike;
        assert_eq!(now().nanosecond() % 1_000, 0);
    }
}
