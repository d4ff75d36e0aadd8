//! Serial numbers `<prefix>-<number>-<check>` (see the module docs of
//! [`super`]).

use chrono::NaiveDateTime;

use crate::db::Tx;
use crate::error::ApiError;
use crate::rows::insert_id;

const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

fn code(c: char) -> Option<u32> {
    c.to_digit(36)
}

/// The Luhn mod 36 check character of `body` (non-alphanumerics ignored).
pub fn check_char(body: &str) -> char {
    let mut factor = 2;
    let mut sum = 0;
    for c in body.chars().rev().filter_map(code) {
        let addend = factor * c;
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / 36 + addend % 36;
    }
    ALPHABET[((36 - sum % 36) % 36) as usize] as char
}

/// Formats serial `number` with `prefix`.
pub fn format_serial(prefix: &str, number: i64) -> String {
    let digits = format!("{number:06}");
    let check = check_char(&format!("{prefix}{digits}"));
    format!("{prefix}-{digits}-{check}")
}

/// `true` when the last character of `serial` is the check character of
/// the rest.
pub fn is_valid_serial(serial: &str) -> bool {
    let Some((body, check)) = serial.rsplit_once('-') else {
        return false;
    };
    let mut chars = check.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => check_char(body) == c.to_ascii_uppercase(),
        _ => false,
    }
}

/// Draws the next serial number inside `tx`.
pub async fn next_serial(
    tx: &mut Tx,
    prefix: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<String, ApiError> {
    let n = insert_id(tx, "serial", vec![], by, now).await?;
    Ok(format_serial(prefix, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_have_the_spec_shape_and_a_working_check_character() {
        let s = format_serial("HB000501", 84031);
        assert!(s.starts_with("HB000501-084031-"), "{s}");
        assert_eq!(s.len(), "HB000501-084031-B".len());
        assert!(is_valid_serial(&s));
        // Every single-character change is caught.
        let bytes: Vec<char> = s.chars().collect();
        for i in 0..bytes.len() {
            if bytes[i] == '-' {
                continue;
            }
            for c in ALPHABET.iter().map(|b| *b as char) {
                if c == bytes[i] {
                    continue;
                }
                let mut changed = bytes.clone();
                changed[i] = c;
                let changed: String = changed.into_iter().collect();
                assert!(!is_valid_serial(&changed), "{changed} passes");
            }
        }
        assert_eq!(
            format_serial("HB000501", 1234567).split('-').nth(1),
            Some("1234567")
        );
        assert!(!is_valid_serial("nonsense"));
    }
}
