//! Natural primary keys that the system assigns when a POST leaves them out.
//!
//! Most tables have a `<table>_id` integer key the database generates. Two have
//! a natural key whose POST example in the spec leaves it out ("handled
//! internally by the system and need not be explicitly specified"), so an
//! existing client of the original API sends no key at all:
//!
//! - `network.mccmnc` is derived from `mcc` and `mnc` (below), the code the
//!   units' cell reports and SIM providers use for the network;
//! - `channel.name` is numbered: the next 15-digit number not in use, the form
//!   the spec's example answers with (`"000000000000000"`).
//!
//! A client may still send the key itself. See `docs/decisions.md`, "Issue 19".

use sea_query::{Alias, Query, Value};
use serde_json::{Map, Value as Json};

use crate::catalogue::{Column, ColumnType, Table};
use crate::db::Tx;
use crate::error::ApiError;

/// The column that ties a user to its entity.
const USER_ENTITY: &str = "entity_id";

/// A PUT may move a user to another entity but not out of every entity.
pub(super) fn check_update(table: &Table, values: &[(String, Value)]) -> Result<(), ApiError> {
    let cleared = values.iter().any(|(name, value)| {
        name == USER_ENTITY && matches!(value, Value::BigInt(None) | Value::Int(None))
    });
    if table.name == "user" && cleared {
        return Err(ApiError::BadRequest(
            "field 'entity_id' may not be null: every user belongs to an entity".into(),
        ));
    }
    Ok(())
}

/// Digits of a generated channel name (the spec's example is 15 zeros).
const CHANNEL_NAME_DIGITS: usize = 15;

/// `true` when the system assigns `column` of `table` on create if the body
/// leaves it out, so it is not "required".
pub(super) fn assigned(table: &Table, column: &Column) -> bool {
    column.primary_key && matches!(table.name.as_str(), "network" | "channel")
}

/// Adds the natural key to `values` when the body left it out, and the operator's entity to
/// a user created without one: every user belongs to an entity (the spec's `user.entity_id`
/// is not-null), as the bootstrap administrator does (`startup::operator_entity_id`).
pub(super) async fn assign(
    tx: &mut Tx,
    table: &Table,
    values: &mut Vec<(String, Value)>,
) -> Result<(), ApiError> {
    if table.name == "user" && !values.iter().any(|(name, _)| name == USER_ENTITY) {
        let entity = crate::startup::operator_entity_id(tx).await?;
        values.push((USER_ENTITY.into(), Value::BigInt(Some(entity))));
    }
    let pk = table.primary_key();
    if !assigned(table, pk) || values.iter().any(|(name, _)| *name == pk.name) {
        return Ok(());
    }
    let key = match table.name.as_str() {
        "network" => Value::BigInt(Some(mccmnc(
            int_value(values, "mcc"),
            int_value(values, "mnc"),
        )?)),
        "channel" => Value::String(Some(Box::new(next_channel_name(tx, pk).await?))),
        _ => return Ok(()),
    };
    values.push((pk.name.clone(), key));
    Ok(())
}

fn int_value(values: &[(String, Value)], name: &str) -> Option<i64> {
    values.iter().find_map(|(n, v)| match v {
        Value::BigInt(i) if n == name => *i,
        _ => None,
    })
}

/// The MCC-MNC code of a network: the MCC followed by the MNC written with two
/// digits, or three when it is 100 or more (310 and 410 give 310410, 635 and 14
/// give 63514). A three-digit MNC below 100 (`010`) cannot be told from its
/// two-digit twin by its integer value: such a network is created with an
/// explicit `mccmnc`.
pub(super) fn mccmnc(mcc: Option<i64>, mnc: Option<i64>) -> Result<i64, ApiError> {
    let mut errors = Map::new();
    let (Some(mcc), Some(mnc)) = (mcc, mnc) else {
        errors.insert(
            "mccmnc".into(),
            Json::from(
                "field 'mccmnc' is required unless both 'mcc' and 'mnc' are given (it is derived from them)",
            ),
        );
        return Err(ApiError::Validation(errors));
    };
    for (name, value) in [("mcc", mcc), ("mnc", mnc)] {
        if !(0..=999).contains(&value) {
            errors.insert(
                name.into(),
                Json::from(format!(
                    "field '{name}' must be between 0 and 999 to derive 'mccmnc', got {value}"
                )),
            );
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let scale = if mnc >= 100 { 1000 } else { 100 };
    Ok(mcc * scale + mnc)
}

/// The lowest 15-digit channel name above every numbered channel.
async fn next_channel_name(tx: &mut Tx, pk: &Column) -> Result<String, ApiError> {
    let stmt = Query::select()
        .column(Alias::new(&pk.name))
        .from(Alias::new("channel"))
        .to_owned();
    let name = Column::computed(&pk.name, ColumnType::String);
    let highest = tx
        .fetch_all(&stmt, &[&name])
        .await?
        .iter()
        .filter_map(|row| row.get(&pk.name).and_then(Json::as_str))
        .filter(|n| n.len() == CHANNEL_NAME_DIGITS && n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| n.parse::<u64>().ok())
        .max();
    let next = highest.map_or(0, |h| h + 1);
    Ok(format!("{next:0width$}", width = CHANNEL_NAME_DIGITS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mccmnc_pads_the_mnc_to_two_or_three_digits() {
        assert_eq!(mccmnc(Some(635), Some(14)).unwrap(), 63514);
        assert_eq!(mccmnc(Some(310), Some(410)).unwrap(), 310410);
        assert_eq!(mccmnc(Some(639), Some(2)).unwrap(), 63902);
        assert_eq!(mccmnc(Some(1), Some(1)).unwrap(), 101);
    }

    #[test]
    fn mccmnc_needs_both_parts_in_range() {
        for (mcc, mnc, field) in [
            (None, Some(1), "mccmnc"),
            (Some(1), None, "mccmnc"),
            (Some(1000), Some(1), "mcc"),
            (Some(1), Some(-1), "mnc"),
        ] {
            match mccmnc(mcc, mnc) {
                Err(ApiError::Validation(e)) => assert!(e.contains_key(field), "{e:?}"),
                other => panic!("{mcc:?}/{mnc:?}: {other:?}"),
            }
        }
    }
}
