//! InfluxDB line protocol (1.x) encoding and InfluxQL quoting.
//!
//! Line protocol escaping rules:
//! - measurement: `,` and space are escaped with a backslash;
//! - tag keys, tag values, field keys: `,`, `=` and space;
//! - string field values: in double quotes, `"` and `\` escaped;
//! - integers end in `i`; floats are written in full (shortest round-trip);
//!   timestamps are nanoseconds.
//!
//! Line breaks cannot be carried at all: [`super::check_point`] refuses them.

use std::fmt::Write as _;

use super::{check_point, FieldValue, Point, TsdbError, IMEI_TAG};

fn escape(out: &mut String, s: &str, specials: &[char]) {
    for c in s.chars() {
        if c == '\\' || specials.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn escape_measurement(out: &mut String, s: &str) {
    escape(out, s, &[',', ' ']);
}

fn escape_key(out: &mut String, s: &str) {
    escape(out, s, &[',', '=', ' ']);
}

/// Appends one point as a line (with trailing `\n`).
pub fn encode_point(out: &mut String, p: &Point) -> Result<(), TsdbError> {
    check_point(p)?;
    escape_measurement(out, &p.measurement);
    // Tags sorted by key, as InfluxDB prefers; `product_imei` joins the rest.
    let mut imei_done = false;
    for (k, v) in &p.tags {
        if !imei_done && k.as_str() > IMEI_TAG {
            push_tag(out, IMEI_TAG, &p.imei);
            imei_done = true;
        }
        push_tag(out, k, v);
    }
    if !imei_done {
        push_tag(out, IMEI_TAG, &p.imei);
    }
    let mut first = true;
    for (k, v) in &p.fields {
        out.push(if first { ' ' } else { ',' });
        first = false;
        escape_key(out, k);
        out.push('=');
        match v {
            FieldValue::Float(f) => {
                // `{:?}` keeps a `.0` so the value is never read as an integer
                // column by stores that infer types.
                let _ = write!(out, "{f:?}");
            }
            FieldValue::Int(i) => {
                let _ = write!(out, "{i}i");
            }
            FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            FieldValue::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    let _ = writeln!(out, " {}", p.time_ns);
    Ok(())
}

fn push_tag(out: &mut String, k: &str, v: &str) {
    out.push(',');
    escape_key(out, k);
    out.push('=');
    escape_key(out, v);
}

/// Encodes points as a line-protocol body.
pub fn encode(points: &[Point]) -> Result<String, TsdbError> {
    let mut out = String::with_capacity(points.len() * 128);
    for p in points {
        encode_point(&mut out, p)?;
    }
    Ok(out)
}

/// An InfluxQL identifier: always double-quoted, `"` and `\` escaped.
pub fn quote_ident(s: &str) -> String {
    quoted(s, '"')
}

/// An InfluxQL string literal: single-quoted, `'` and `\` escaped.
pub fn quote_str(s: &str) -> String {
    quoted(s, '\'')
}

/// `s` between `quote`s, with `quote` and `\` escaped by a backslash and newlines as `\n`.
fn quoted(s: &str, quote: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn escapes_per_line_protocol() {
        let p = Point {
            measurement: "tele metry,x".into(),
            imei: "013777946874001".into(),
            tags: BTreeMap::from([
                ("a b".into(), "c=d,e".into()),
                ("site".into(), "back\\slash".into()),
            ]),
            fields: vec![
                ("current".into(), FieldValue::Float(1.0)),
                ("pulse count".into(), FieldValue::Int(-3)),
                ("on".into(), FieldValue::Bool(true)),
                ("log".into(), FieldValue::Str(r#"say "hi" \o/"#.into())),
            ],
            time_ns: 1_472_688_000_000_000_000,
        };
        assert_eq!(
            encode(&[p]).unwrap(),
            "tele\\ metry\\,x,a\\ b=c\\=d\\,e,product_imei=013777946874001,site=back\\\\slash \
             current=1.0,pulse\\ count=-3i,on=true,log=\"say \\\"hi\\\" \\\\o/\" 1472688000000000000\n"
        );
    }

    #[test]
    fn refuses_what_the_protocol_cannot_carry() {
        let mut p = Point {
            measurement: "telemetry".into(),
            imei: "1".into(),
            tags: BTreeMap::new(),
            fields: vec![("x".into(), FieldValue::Str("a\nb".into()))],
            time_ns: 0,
        };
        assert!(encode(std::slice::from_ref(&p)).is_err());
        p.fields = vec![("x".into(), FieldValue::Float(f64::NAN))];
        assert!(encode(std::slice::from_ref(&p)).is_err());
        p.fields = vec![("x\ny".into(), FieldValue::Int(1))];
        assert!(encode(std::slice::from_ref(&p)).is_err());
        p.fields = vec![];
        assert!(encode(&[p]).is_err());
    }

    #[test]
    fn influxql_quoting() {
        assert_eq!(quote_ident(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote_str(r"it's \ ok"), r"'it\'s \\ ok'");
    }
}
