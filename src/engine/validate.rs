//! Per-record validation of pushed records (contract section 3), before any
//! lock is taken: a bad record becomes a `RecordError` and the rest of its
//! batch still applies.

use std::collections::HashSet;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::engine::wire::{RecordError, Rendered};
use crate::store::clock;
use crate::sync::{Entity, Incoming, Record};

/// How far ahead of the server clock a device's timestamp may be.
pub const MAX_CLOCK_AHEAD_MS: i64 = 5 * 60 * 1000;
/// 2000-01-01T00:00:00Z: anything earlier is a device with a broken clock.
pub const EARLIEST_MS: i64 = 946_684_800_000;
/// Deepest nesting of a record's `data` (`data` itself is level 1).
pub const MAX_DATA_DEPTH: usize = 32;

/// One record that passed validation, with where it stood in the body.
pub struct Valid {
    /// The record as sent, but its `data`, moved to `incoming` (an empty
    /// object stands in): `client_version` puts it back.
    pub raw: Value,
    /// Its position in the body's list.
    pub index: usize,
    pub incoming: Incoming,
    pub data_json: String,
}

/// A batch after validation: what will be applied, and what was refused.
pub struct Batch {
    pub entity: Entity,
    pub valid: Vec<Valid>,
    pub errors: Vec<RecordError>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.valid.len() + self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn record_error(
    id: Option<&Value>,
    index: usize,
    code: &'static str,
    message: String,
) -> RecordError {
    RecordError {
        id: id.and_then(Value::as_str).map(str::to_owned),
        index,
        code,
        message,
    }
}

impl Valid {
    /// The record exactly as the device sent it, as a tree: what the
    /// push-body fuzz check compares with the body, and the rendered form
    /// below with it.
    pub fn client_version(&self) -> Value {
        let mut sent = self.raw.clone();
        if let Some(data) = sent.get_mut("data") {
            *data = Value::Object(self.incoming.record.data.clone());
        }
        sent
    }

    /// The same, rendered (a conflict's `client_version`, in the answer
    /// and the conflict log) without copying the record first.
    pub fn render_client_version(&self) -> Result<Rendered, serde_json::Error> {
        Rendered::of(&Sent(self))
    }
}

/// A `Valid` as the device sent it: `raw`, with `data` put back.
struct Sent<'a>(&'a Valid);

impl Serialize for Sent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Value::Object(fields) = &self.0.raw else {
            return self.0.raw.serialize(serializer);
        };
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (key, value) in fields {
            match key.as_str() {
                "data" => map.serialize_entry(key, &self.0.incoming.record.data)?,
                _ => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

impl Batch {
    /// The ids of the records that will be applied, for the locking read.
    pub fn ids(&self) -> Vec<&str> {
        self.valid
            .iter()
            .map(|valid| valid.incoming.record.id.as_str())
            .collect()
    }
}

/// Validates each record on its own; a bad one goes to `errors` and the
/// rest still apply. A second occurrence of an id (in any case) is a
/// `DUPLICATE_ID`.
pub fn validate(entity: Entity, list: Vec<Value>, config: &Config, now_ms: i64) -> Batch {
    let mut valid = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    let mut seen: HashSet<String> = HashSet::with_capacity(list.len());
    for (index, mut raw) in list.into_iter().enumerate() {
        match parse_record(&mut raw, config, now_ms) {
            Err((code, message)) => {
                errors.push(record_error(raw.get("id"), index, code, message));
            }
            Ok((incoming, data_json)) => {
                if !seen.insert(incoming.record.id.clone()) {
                    errors.push(record_error(
                        raw.get("id"),
                        index,
                        "DUPLICATE_ID",
                        "this id appears earlier in the batch".to_owned(),
                    ));
                    continue;
                }
                valid.push(Valid {
                    raw,
                    index,
                    incoming,
                    data_json,
                });
            }
        }
    }
    Batch {
        entity,
        valid,
        errors,
    }
}

type Refusal = (&'static str, String);

fn invalid(message: impl Into<String>) -> Refusal {
    ("VALIDATION_ERROR", message.into())
}

fn parse_record(
    raw: &mut Value,
    config: &Config,
    now_ms: i64,
) -> Result<(Incoming, String), Refusal> {
    let object = raw
        .as_object()
        .ok_or_else(|| invalid("each record must be a JSON object"))?;
    let id = match object.get("id") {
        Some(Value::String(id)) => canonical_uuid(id).ok_or_else(|| {
            invalid(
                "id must be a UUID: 36 characters, hex digits and hyphens at 8-4-4-4-12, not nil",
            )
        })?,
        None | Some(Value::Null) => return Err(invalid("id is required")),
        Some(_) => return Err(invalid("id must be a string")),
    };
    let data = match object.get("data") {
        Some(Value::Object(data)) => data,
        None | Some(Value::Null) => {
            return Err(invalid("data is required (an object, also on a tombstone)"))
        }
        Some(_) => return Err(invalid("data must be a JSON object")),
    };
    if value_depth_of_object(data) > MAX_DATA_DEPTH {
        return Err(invalid(format!(
            "data is nested deeper than {MAX_DATA_DEPTH} levels"
        )));
    }
    let data_json =
        serde_json::to_string(data).map_err(|_| invalid("data cannot be serialized"))?;
    if data_json.len() > config.max_record_bytes {
        return Err(invalid(format!(
            "data is {} bytes as compact JSON; the limit is {}",
            data_json.len(),
            config.max_record_bytes
        )));
    }
    let updated_at = match object.get("updated_at") {
        Some(Value::String(text)) => timestamp("updated_at", text, now_ms)?,
        None | Some(Value::Null) => return Err(invalid("updated_at is required")),
        Some(_) => return Err(invalid("updated_at must be an RFC 3339 string")),
    };
    let deleted_at = match object.get("deleted_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(timestamp("deleted_at", text, now_ms)?),
        Some(_) => return Err(invalid("deleted_at must be null or an RFC 3339 string")),
    };
    let base_version = match object.get("base_version") {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) => Some(
            whole_number(number)
                .ok_or_else(|| invalid("base_version must be a non-negative integer"))?,
        ),
        Some(_) => return Err(invalid("base_version must be a non-negative integer")),
    };
    // Accepted: the data moves to the record, not copied.
    let data = match raw.get_mut("data") {
        Some(Value::Object(data)) => std::mem::take(data),
        _ => return Err(invalid("data must be a JSON object")),
    };
    let record = Record {
        id,
        data,
        updated_at,
        deleted_at,
    };
    Ok((
        Incoming {
            record,
            base_version,
        },
        data_json,
    ))
}

/// A JSON number that is a non-negative integer, however it is spelled:
/// JSON (and JSON Schema's `integer`) make `41.0` the same integer as
/// `41`, and some encoders write whole doubles that way (Dart's
/// `jsonEncode(41.0)`). A fraction, a negative number or one past `u64`
/// is `None`.
pub fn whole_number(number: &serde_json::Number) -> Option<u64> {
    if let Some(whole) = number.as_u64() {
        return Some(whole);
    }
    // 2^64 as a double: every double below it that has no fraction fits.
    const PAST_U64: f64 = 18_446_744_073_709_551_616.0;
    match number.as_f64() {
        // In range and whole: the cast is exact.
        Some(value) if (0.0..PAST_U64).contains(&value) && value.fract() == 0.0 => {
            Some(value as u64)
        }
        _ => None,
    }
}

fn timestamp(field: &str, text: &str, now_ms: i64) -> Result<i64, Refusal> {
    let millis = clock::parse_rfc3339(text).ok_or_else(|| {
        invalid(format!(
            "{field} must be RFC 3339 with an offset, e.g. 2024-01-15T10:30:00.123Z"
        ))
    })?;
    if millis > now_ms + MAX_CLOCK_AHEAD_MS {
        return Err((
            "CLOCK_SKEW",
            format!("{field} is more than 5 minutes ahead of the server clock"),
        ));
    }
    if millis < EARLIEST_MS {
        return Err(("CLOCK_SKEW", format!("{field} is before 2000-01-01")));
    }
    Ok(millis)
}

/// The lower-case form of a UUID written exactly as 8-4-4-4-12 hex digits
/// (any case). Braced, URN and unhyphenated forms, and the nil UUID, are
/// refused, so one record never has two spellings.
pub fn canonical_uuid(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    for (index, byte) in bytes.iter().enumerate() {
        let hyphen_here = matches!(index, 8 | 13 | 18 | 23);
        if hyphen_here != (*byte == b'-') {
            return None;
        }
        if !hyphen_here && !byte.is_ascii_hexdigit() {
            return None;
        }
    }
    let parsed = uuid::Uuid::try_parse(text).ok()?;
    if parsed.is_nil() {
        return None;
    }
    Some(parsed.hyphenated().to_string())
}

/// Depth of an object's value tree, counted as MySQL's and MariaDB's
/// `JSON_DEPTH` counts it: the object is level 1, and a member (scalar or
/// not) is one level deeper than its container. MariaDB refuses to store
/// JSON deeper than 32 by this count, so the check must match it.
fn value_depth_of_object(object: &Map<String, Value>) -> usize {
    1 + object.values().map(value_depth).max().unwrap_or(0)
}

fn value_depth(value: &Value) -> usize {
    match value {
        Value::Object(object) => value_depth_of_object(object),
        Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Config {
        let variables = [
            ("DB_HOST", "127.0.0.1"),
            ("DB_NAME", "unit"),
            ("DB_USER", "unit"),
            ("JWT_SECRET_KEY", "unit-Kq3vX8mW2rT6yB9nL4hJ7dF1gS5zCp0"),
        ];
        let variables = variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        crate::config::parse(&variables).unwrap()
    }

    #[test]
    fn a_conflicts_client_version_is_rendered_as_sent() {
        let now = 1_765_000_000_000;
        let sent = json!({
            "id": "3F2B8C1E-1234-4ABC-8DEF-0123456789AB",
            "data": {"weight": 65.5, "note": "b\u{e9}\"\n", "tags": [1, {"z": null}]},
            "updated_at": "2025-12-06T05:46:40.000Z",
            "deleted_at": null,
            "extra": {"kept": true}
        });
        let batch = validate(Entity::HealthMetrics, vec![sent.clone()], &config(), now);
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        let valid = &batch.valid[0];
        assert_eq!(valid.client_version(), sent);
        let rendered = valid.render_client_version().unwrap();
        assert_eq!(rendered.0.get(), serde_json::to_string(&sent).unwrap());
    }

    #[test]
    fn only_the_canonical_uuid_form_is_accepted() {
        let check = |text: &str, expected: Option<&str>| {
            assert_eq!(canonical_uuid(text).as_deref(), expected, "{text}");
        };
        check(
            "3F2B8C1E-1234-4ABC-8DEF-0123456789AB",
            Some("3f2b8c1e-1234-4abc-8def-0123456789ab"),
        );
        check(
            "3f2b8c1e-1234-4abc-8def-0123456789ab",
            Some("3f2b8c1e-1234-4abc-8def-0123456789ab"),
        );
        check("00000000-0000-0000-0000-000000000000", None);
        check("3f2b8c1e12344abc8def0123456789ab", None);
        check("{3f2b8c1e-1234-4abc-8def-0123456789ab}", None);
        check("urn:uuid:3f2b8c1e-1234-4abc-8def-0123456789ab", None);
        check("3f2b8c1e-1234-4abc-8def-0123456789ag", None);
        check("3f2b8c1e-12344-abc-8def-0123456789ab", None);
        check("", None);
    }

    #[test]
    fn whole_numbers_are_integers_however_spelled() {
        let check = |text: &str, expected: Option<u64>| {
            let number: serde_json::Number = serde_json::from_str(text).unwrap();
            assert_eq!(whole_number(&number), expected, "{text}");
        };
        check("0", Some(0));
        check("41", Some(41));
        check("41.0", Some(41));
        check("1e3", Some(1000));
        check("18446744073709551615", Some(u64::MAX));
        check("-0.0", Some(0));
        check("41.5", None);
        check("-1", None);
        check("-1.0", None);
        check("18446744073709551616", None);
        check("1e20", None);
    }

    #[test]
    fn depth_counts_data_as_level_one() {
        let nested = |levels: usize| {
            let mut value = json!(1);
            for _ in 1..levels {
                value = json!({ "a": value });
            }
            json!({ "a": value })
        };
        let depth = |value: &Value| value.as_object().map(value_depth_of_object).unwrap_or(0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": 1})), 2);
        assert_eq!(depth(&json!({"a": []})), 2);
        assert_eq!(depth(&json!({"a": [1]})), 3);
        // `nested(n)` is n objects around a scalar.
        assert_eq!(depth(&nested(31)), 32);
        assert_eq!(depth(&nested(32)), 33);
    }
}
