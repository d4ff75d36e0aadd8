//! Timestamps of the product data API: every form the spec lists on input,
//! InfluxDB's RFC 3339 on output. Pure functions, nanoseconds since the epoch.
//!
//! Accepted (spec: "Writing Data for a Product"):
//! - milliseconds since the epoch, as a JSON number or a string of digits
//!   (`1475685693839`);
//! - ISO 8601 with `T`, up to nanoseconds, with `Z`, an offset or no zone
//!   (UTC): `2016-10-04T12:30:00.123456789Z`;
//! - the same with a space instead of `T` (`2016-10-04 12:30:00.123456789`);
//! - a bare date, midnight UTC (`2016-10-04`);
//! - the "most sensibly formatted" form: `Tue, October 4th 2016` (weekday
//!   optional but checked when given; month and weekday names full or
//!   abbreviated, any case; the ordinal suffix optional).

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc, Weekday};
use serde_json::Value as Json;

const NS_PER_MS: i64 = 1_000_000;

/// The largest magnitude of epoch milliseconds [`parse_json`] takes (the
/// nanoseconds must fit an `i64`); the OpenAPI document states it.
pub const MAX_ABS_MS: i64 = 9_200_000_000_000;

/// The years a date-time may have (1678 to 2261: the nanoseconds must fit
/// an `i64`), as a pattern for the OpenAPI document, whose `date-time`
/// format has no bounds.
pub const YEARS_PATTERN: &str =
    "^(167[89]|16[89][0-9]|1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9]|226[01])-";

/// A timestamp from a JSON value (number: epoch milliseconds; string: any
/// accepted form), in nanoseconds. The error says what was wrong.
pub fn parse_json(value: &Json) -> Result<i64, String> {
    match value {
        Json::Number(n) => {
            if let Some(ms) = n.as_i64() {
                if ms.unsigned_abs() > MAX_ABS_MS.unsigned_abs() {
                    return Err(format!("timestamp {ms} ms is out of range"));
                }
                Ok(ms * NS_PER_MS)
            } else {
                let ms = n.as_f64().unwrap_or(f64::NAN);
                let ns = (ms * NS_PER_MS as f64).round();
                // `as` saturates; the bounds check keeps saturated values out.
                if ns.is_finite() && ns.abs() <= (MAX_ABS_MS * NS_PER_MS) as f64 {
                    Ok(ns as i64)
                } else {
                    Err(format!("timestamp {n} ms is out of range"))
                }
            }
        }
        Json::String(s) => parse_str(s),
        other => Err(format!(
            "a timestamp must be epoch milliseconds or a date-time string, got {other}"
        )),
    }
}

/// A timestamp from text (query strings carry everything as text).
pub fn parse_str(text: &str) -> Result<i64, String> {
    let s = text.trim();
    let bad = || {
        format!(
            "unrecognised timestamp {text:?}: use epoch milliseconds, \
             'yyyy-mm-ddTHH:MM:SS.nnnnnnnnnZ', 'yyyy-mm-dd HH:MM:SS.nnnnnnnnn', \
             'yyyy-mm-dd' or 'Tue, October 4th 2016'"
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = s.parse().map_err(|_| bad())?;
        return ms
            .checked_mul(NS_PER_MS)
            .ok_or_else(|| format!("timestamp {text:?} is out of range"));
    }
    let naive = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&Utc).naive_utc()
    } else if let Some(t) = naive_iso(s) {
        t
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0).ok_or_else(bad)?
    } else if let Some(d) = human_date(s)? {
        d.and_hms_opt(0, 0, 0).ok_or_else(bad)?
    } else {
        return Err(bad());
    };
    naive
        .and_utc()
        .timestamp_nanos_opt()
        .ok_or_else(|| format!("timestamp {text:?} is out of range (years 1678 to 2261)"))
}

/// ISO forms without a zone (or with a bare `Z`), `T` or space.
fn naive_iso(s: &str) -> Option<NaiveDateTime> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
}

/// `[Weekday,] Month Day[st|nd|rd|th][,] Year`. `Ok(None)` when the text
/// does not have that shape; an error when it does but is wrong (a day
/// that does not exist, a weekday that does not match the date).
fn human_date(s: &str) -> Result<Option<NaiveDate>, String> {
    let words: Vec<&str> = s
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    let (weekday, rest) = match words.as_slice() {
        [w, rest @ ..] if rest.len() == 3 => match weekday(w) {
            Some(d) => (Some(d), rest),
            None => return Ok(None),
        },
        rest if rest.len() == 3 => (None, rest),
        _ => return Ok(None),
    };
    let Some(month) = month(rest[0]) else {
        return Ok(None);
    };
    let day_text = rest[1];
    let day_digits = day_text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &day_text[day_digits.len()..];
    if !["", "st", "nd", "rd", "th"].contains(&suffix.to_ascii_lowercase().as_str()) {
        return Ok(None);
    }
    let (Ok(day), Ok(year)) = (day_digits.parse::<u32>(), rest[2].parse::<i32>()) else {
        return Ok(None);
    };
    let date = NaiveDate::from_ymd_opt(year, month, day)
        .ok_or_else(|| format!("{s:?} is not a date that exists"))?;
    if let Some(w) = weekday {
        if date.weekday() != w {
            return Err(format!(
                "{s:?}: {} is a {}, not a {}",
                date.format("%Y-%m-%d"),
                date.format("%A"),
                weekday_name(w)
            ));
        }
    }
    Ok(Some(date))
}

fn weekday(w: &str) -> Option<Weekday> {
    let w = w.to_ascii_lowercase();
    [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ]
    .into_iter()
    .find(|d| {
        let full = weekday_name(*d).to_ascii_lowercase();
        w == full || w == full[..3]
    })
}

fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

fn month(m: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let m = m.to_ascii_lowercase();
    let m = m.strip_suffix('.').unwrap_or(&m);
    MONTHS
        .iter()
        .position(|full| m == *full || (m.len() >= 3 && full.starts_with(m) && m.len() <= 4))
        .map(|i| i as u32 + 1)
}

/// Nanoseconds → RFC 3339 in UTC as InfluxDB writes it: `Z`, and a fraction
/// only when there is one, without trailing zeros (`2016-01-01T00:00:00Z`,
/// `2018-10-18T00:00:12.9Z`).
pub fn format_ns(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000) as u32;
    let Some(t) = DateTime::from_timestamp(secs, frac) else {
        // Every i64 of nanoseconds is a representable instant.
        return ns.to_string();
    };
    let mut out = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    if frac > 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Now, in nanoseconds.
pub fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEP_1_2016: i64 = 1_472_688_000_000 * NS_PER_MS;

    /// The bounds the OpenAPI document states are the ones enforced: epoch
    /// milliseconds up to [`MAX_ABS_MS`] either way, whether integer or not
    /// (the fuzzer found 9200000000001 accepted), and date-times in the
    /// years [`YEARS_PATTERN`] admits.
    #[test]
    fn the_documented_bounds_are_the_enforced_ones() {
        for ms in [MAX_ABS_MS, -MAX_ABS_MS] {
            assert!(parse_json(&json!(ms)).is_ok(), "{ms}");
            assert!(parse_json(&json!(ms as f64)).is_ok(), "{ms}");
        }
        for ms in [MAX_ABS_MS + 1, -MAX_ABS_MS - 1] {
            assert!(parse_json(&json!(ms)).is_err(), "{ms}");
        }
        assert!(parse_json(&json!(MAX_ABS_MS as f64 + 1.0)).is_err());
        let years = regex::Regex::new(YEARS_PATTERN).unwrap();
        for (year, admitted) in [
            (1677, false),
            (1678, true),
            (2000, true),
            (2261, true),
            (2262, false),
        ] {
            // The first and last instants of the year, at the offsets that
            // move them furthest out.
            for text in [
                format!("{year:04}-01-01T00:00:00+14:00"),
                format!("{year:04}-12-31T23:59:59-14:00"),
            ] {
                assert_eq!(years.is_match(&text), admitted, "{text}");
                if admitted {
                    assert!(parse_str(&text).is_ok(), "{text}");
                }
            }
        }
    }

    #[test]
    fn every_form_of_the_spec() {
        assert_eq!(parse_json(&json!(1472688000000i64)).unwrap(), SEP_1_2016);
        for s in [
            "1472688000000",
            "2016-09-01T00:00:00Z",
            "2016-09-01T00:00:00.000000000Z",
            "2016-09-01T00:00:00",
            "2016-09-01 00:00:00",
            "2016-09-01 00:00:00.000000000",
            "2016-09-01",
            "2016-09-01T01:00:00+01:00",
            "Thu, September 1st 2016",
            "thu, sep 1 2016",
            "September 1st, 2016",
        ] {
            assert_eq!(parse_str(s).unwrap(), SEP_1_2016, "{s}");
        }
        assert_eq!(
            parse_str("2016-09-01T00:00:00.123456789Z").unwrap(),
            SEP_1_2016 + 123_456_789
        );
        assert_eq!(
            parse_str("2016-09-01 00:00:00.5").unwrap(),
            SEP_1_2016 + 500_000_000
        );
        assert_eq!(
            parse_str("Tue, October 4th 2016").unwrap(),
            parse_str("2016-10-04").unwrap()
        );
        assert_eq!(parse_json(&json!(1.5)).unwrap(), 1_500_000);
    }

    #[test]
    fn bad_timestamps_say_why() {
        for s in [
            "",
            "yesterday",
            "2016-13-01",
            "2016-09-01T25:00:00Z",
            "Fri, September 31st 2016",
            "Mon, October 4th 2016",
            "Tue, Octember 4th 2016",
            "99999999999999999999",
            "2300-01-01",
        ] {
            assert!(parse_str(s).is_err(), "{s}");
        }
        assert!(parse_str("Mon, October 4th 2016")
            .unwrap_err()
            .contains("Tuesday"));
        assert!(parse_json(&json!(true)).is_err());
        assert!(parse_json(&json!(1e300)).is_err());
    }

    #[test]
    fn output_is_influx_rfc3339() {
        assert_eq!(format_ns(SEP_1_2016), "2016-09-01T00:00:00Z");
        assert_eq!(
            format_ns(SEP_1_2016 + 900_000_000),
            "2016-09-01T00:00:00.9Z"
        );
        assert_eq!(
            format_ns(SEP_1_2016 + 123_456_789),
            "2016-09-01T00:00:00.123456789Z"
        );
        assert_eq!(format_ns(-1), "1969-12-31T23:59:59.999999999Z");
    }
}
