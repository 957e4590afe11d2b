//! The merge core (wire contract, section 4): for one pushed record and the row the server holds
//! under its id, decides what the server must store and how a concurrent edit resolved.
//! It owns the four rules, the per-entity strategies and the derived id of a kept-both meal.
//! It must not do IO, read a clock, draw random ids, panic or fail: every input has an outcome.

use std::collections::HashSet;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Entity, Incoming, Record, Stored};

/// Namespace of the derived ids of kept-both meals: the UUID v5 of `NAMESPACE_URL` and
/// `https://healthsync.invalid/meals/kept-both`, written out because `Uuid::new_v5` is not const.
/// Changing it would give the same kept-both pair a second copy on devices that synced before
/// the change, so it is fixed for the life of the contract.
const KEPT_BOTH_MEAL_NAMESPACE: Uuid = Uuid::from_u128(0xc8c4_6500_02f4_5243_8a60_94a7_88c9_18e4);

const BODY_MEASUREMENTS_FIELD: &str = "bodyMeasurements";
const NOTES_FIELD: &str = "notes";
const SIDE_EFFECTS_FIELD: &str = "sideEffects";
const MEAL_DATE_FIELD: &str = "date";

/// Separates two notes that are both kept, so each stays readable as its own paragraph.
const NOTES_SEPARATOR: &str = "\n\n";

/// How a concurrent edit resolved, as reported to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    ClientWins,
    ServerWins,
    Merged,
    KeptBoth,
}

impl Resolution {
    /// The label on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::ClientWins => "client_wins",
            Resolution::ServerWins => "server_wins",
            Resolution::Merged => "merged",
            Resolution::KeptBoth => "kept_both",
        }
    }
}

/// What the server must do with one pushed record.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Rule 1: no stored row; store the incoming record as sent.
    Insert,
    /// Rule 2: same content as stored; nothing changes, no conflict.
    Retry,
    /// Rule 3: plain update; store the incoming record as sent.
    Update,
    /// Rule 4: concurrent edit. `store` is the record the server must now hold under the
    /// original id, or None when the stored record stays unchanged (server wins, or a merge
    /// whose result equals the stored record).
    Conflict {
        resolution: Resolution,
        store: Option<Record>,
    },
    /// Meals only: different dates on both sides. The server's record stays unchanged; the
    /// client's record must be stored under `derived_id`, decided by `decide_derived` against
    /// whatever is stored under that id. Reported to the device as `Resolution::KeptBoth`.
    KeepBoth { derived_id: String },
}

/// Applies the four rules of section 4 to one pushed record of `entity`, against the row the
/// server holds under the same id (None when there is none). A merge whose `data` would come
/// to more than `max_record_bytes` as compact JSON is resolved by last write wins instead.
#[must_use]
pub fn decide(
    entity: Entity,
    incoming: &Incoming,
    stored: Option<&Stored>,
    max_record_bytes: usize,
) -> Outcome {
    let stored = match stored {
        None => return Outcome::Insert,
        Some(stored) => stored,
    };
    // Rule 2 comes before rule 3 so that a device resending a write it already made (after a
    // lost response) is told nothing happened, whatever base_version it carries.
    if incoming.record.same_content(&stored.record) {
        return Outcome::Retry;
    }
    if is_plain_update(incoming, stored) {
        return Outcome::Update;
    }
    resolve_concurrent_edit(entity, &incoming.record, &stored.record, max_record_bytes)
}

/// For a meal kept both: the client's record, re-keyed by the caller to the derived id, against
/// the row stored under that id (None when there is none). Applied as if sent under that id
/// without `base_version`, by last write wins and never a further copy, so that repeating a push
/// converges on one copy instead of spawning a chain of them. Never returns `KeepBoth`.
#[must_use]
pub fn decide_derived(incoming: &Record, stored: Option<&Stored>) -> Outcome {
    let stored = match stored {
        None => return Outcome::Insert,
        Some(stored) => stored,
    };
    if incoming.same_content(&stored.record) {
        return Outcome::Retry;
    }
    if incoming.updated_at > stored.record.updated_at {
        return Outcome::Update;
    }
    server_wins()
}

/// The id under which the client's side of a kept-both meal is stored: UUID v5 in
/// `KEPT_BOTH_MEAL_NAMESPACE` of `"{id}\n{date}"`, where date is the client's `data.date` as
/// compact JSON (`null` when missing). Deterministic, so a retried push lands on the same copy
/// and two devices making the same split agree on it. Lower-case, hyphenated.
#[must_use]
pub fn derived_meal_id(id: &str, client_data: &Map<String, Value>) -> String {
    let date_as_json = match client_data.get(MEAL_DATE_FIELD) {
        Some(date) => date.to_string(),
        None => Value::Null.to_string(),
    };
    let name = format!("{id}\n{date_as_json}");
    Uuid::new_v5(&KEPT_BOTH_MEAL_NAMESPACE, name.as_bytes())
        .hyphenated()
        .to_string()
}

/// Rule 3: the device edited the version the server holds, or, without a base version, wrote
/// strictly later than the stored record.
fn is_plain_update(incoming: &Incoming, stored: &Stored) -> bool {
    match incoming.base_version {
        Some(base_version) => base_version == stored.version,
        None => incoming.record.updated_at > stored.record.updated_at,
    }
}

/// The two sides of a concurrent edit, ordered by write time. On a tie the server's side is
/// the later one: the stored record has already been seen by other devices, so keeping it
/// avoids churning them for an edit that is not provably newer.
struct WriteOrder<'records> {
    later: &'records Record,
    earlier: &'records Record,
}

impl<'records> WriteOrder<'records> {
    fn of(client: &'records Record, server: &'records Record) -> Self {
        if client.updated_at > server.updated_at {
            return WriteOrder {
                later: client,
                earlier: server,
            };
        }
        WriteOrder {
            later: server,
            earlier: client,
        }
    }
}

/// Rule 4.
fn resolve_concurrent_edit(
    entity: Entity,
    client: &Record,
    server: &Record,
    max_record_bytes: usize,
) -> Outcome {
    // A deletion is never merged into: reviving a record with the other side's fields, or
    // copying a deleted meal, would resurrect what a user removed. So last write wins first.
    if client.deleted_at.is_some() || server.deleted_at.is_some() {
        return last_write_wins(client, server);
    }
    let order = WriteOrder::of(client, server);
    let merged = match entity {
        Entity::HealthMetrics => merge_health_metrics(&client.id, &order),
        Entity::Medications => merge_medications(&client.id, &order),
        Entity::Meals => return resolve_meal_edit(client, server),
        Entity::Exercises | Entity::MealPlans => return last_write_wins(client, server),
    };
    // Two records each within the limit can merge into one past it; stored, it would be
    // refused on every later push of it.
    if super::compact_len(&merged.data) > max_record_bytes {
        return last_write_wins(client, server);
    }
    label_resolution(merged, client, server)
}

/// The same meal edited on two devices is last write wins. Different dates cannot be merged
/// without moving one side's meal to the other's day, so both are kept.
fn resolve_meal_edit(client: &Record, server: &Record) -> Outcome {
    if same_meal_date(&client.data, &server.data) {
        return last_write_wins(client, server);
    }
    Outcome::KeepBoth {
        derived_id: derived_meal_id(&client.id, &client.data),
    }
}

fn last_write_wins(client: &Record, server: &Record) -> Outcome {
    if client.updated_at > server.updated_at {
        return client_wins(client);
    }
    server_wins()
}

fn client_wins(client: &Record) -> Outcome {
    Outcome::Conflict {
        resolution: Resolution::ClientWins,
        store: Some(client.clone()),
    }
}

fn server_wins() -> Outcome {
    Outcome::Conflict {
        resolution: Resolution::ServerWins,
        store: None,
    }
}

/// Names a merge result by what it turned out to be, so a merge that changed nothing is
/// reported as the plain win it is, and the client always gets back exactly what it sent when
/// its side won.
fn label_resolution(record_to_hold: Record, client: &Record, server: &Record) -> Outcome {
    if record_to_hold.same_content(client) {
        return client_wins(client);
    }
    if record_to_hold.same_content(server) {
        return server_wins();
    }
    Outcome::Conflict {
        resolution: Resolution::Merged,
        store: Some(record_to_hold),
    }
}

/// A merged record: the later side's write time, never deleted (deletions were settled by last
/// write wins before any merge), under the original id.
fn merged_record(original_id: &str, later: &Record, data: Map<String, Value>) -> Record {
    Record {
        id: original_id.to_owned(),
        data,
        updated_at: later.updated_at,
        deleted_at: None,
    }
}

/// Every field from the later side, plus the fields only the earlier side has; body
/// measurements are unioned and notes combined, so that readings taken on two devices are not
/// lost to a timestamp.
fn merge_health_metrics(original_id: &str, order: &WriteOrder) -> Record {
    let mut data = order.later.data.clone();
    for (field, earlier_value) in &order.earlier.data {
        match data.get_mut(field) {
            None => {
                data.insert(field.clone(), earlier_value.clone());
            }
            Some(later_value) => match field.as_str() {
                BODY_MEASUREMENTS_FIELD => union_body_measurements(later_value, earlier_value),
                NOTES_FIELD => combine_notes(later_value, earlier_value),
                _ => {}
            },
        }
    }
    merged_record(original_id, order.later, data)
}

/// Objects: union by key, the later side keeping its keys. Arrays: union by value, later
/// elements first. Any other pair of types: the later value as is, since there is no union of
/// an object with an array that both devices would read the same way.
fn union_body_measurements(later_value: &mut Value, earlier_value: &Value) {
    match (later_value, earlier_value) {
        (Value::Object(later_fields), Value::Object(earlier_fields)) => {
            for (key, earlier_field_value) in earlier_fields {
                if !later_fields.contains_key(key) {
                    later_fields.insert(key.clone(), earlier_field_value.clone());
                }
            }
        }
        (Value::Array(later_elements), Value::Array(earlier_elements)) => {
            append_missing_elements(later_elements, earlier_elements);
        }
        _ => {}
    }
}

/// Both texts, later first, unless one already contains the other: a device that appended to
/// a note would otherwise get its old text repeated after the new one.
fn combine_notes(later_value: &mut Value, earlier_value: &Value) {
    let (later_text, earlier_text) = match (later_value, earlier_value) {
        (Value::String(later_text), Value::String(earlier_text)) => (later_text, earlier_text),
        _ => return,
    };
    if later_text.contains(earlier_text.as_str()) {
        return;
    }
    if earlier_text.contains(later_text.as_str()) {
        later_text.clone_from(earlier_text);
        return;
    }
    later_text.push_str(NOTES_SEPARATOR);
    later_text.push_str(earlier_text);
}

/// Last write wins, except that side effects reported on either device are all kept: losing a
/// reported side effect to a timestamp is worse than showing one twice across edits.
fn merge_medications(original_id: &str, order: &WriteOrder) -> Record {
    let mut data = order.later.data.clone();
    if let (Some(Value::Array(winner_elements)), Some(Value::Array(loser_elements))) = (
        data.get_mut(SIDE_EFFECTS_FIELD),
        order.earlier.data.get(SIDE_EFFECTS_FIELD),
    ) {
        append_missing_elements(winner_elements, loser_elements);
    }
    merged_record(original_id, order.later, data)
}

/// Appends the loser's elements the winner does not hold, by JSON value, in the loser's order.
/// Checked against the growing result so a duplicate within the loser is not introduced
/// either; duplicates already in the winner are its own and stay. Linear in both sides:
/// elements are compared by their compact JSON (object keys sorted, numbers in one spelling),
/// which is equal exactly when the values are.
fn append_missing_elements(winner_elements: &mut Vec<Value>, loser_elements: &[Value]) {
    let mut held: HashSet<String> = winner_elements.iter().map(Value::to_string).collect();
    for element in loser_elements {
        if held.insert(element.to_string()) {
            winner_elements.push(element.clone());
        }
    }
}

/// A missing date on either side counts as the same date: a record that never had one cannot
/// be told apart from the other as a different meal.
fn same_meal_date(client_data: &Map<String, Value>, server_data: &Map<String, Value>) -> bool {
    match (
        client_data.get(MEAL_DATE_FIELD),
        server_data.get(MEAL_DATE_FIELD),
    ) {
        (Some(client_date), Some(server_date)) => client_date == server_date,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use Entity::{Exercises, HealthMetrics, MealPlans, Meals, Medications};
    use Expect::{ClientWins, Insert, KeepBoth, Merged, Retry, ServerWins, Update};

    const ID: &str = "3f2b8c1e-6a4d-4e5f-9a7b-1c2d3e4f5a6b";
    const OTHER_ID: &str = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";
    const NO_ROW: Option<Stored> = None;
    /// `MAX_RECORD_BYTES`' default.
    const LIMIT: usize = 64 * 1024;

    /// The expected outcome, written without repeating the incoming record.
    enum Expect {
        Insert,
        Retry,
        Update,
        /// Conflict resolved to the incoming record as sent.
        ClientWins,
        /// Conflict resolved to the stored record, left unchanged.
        ServerWins,
        /// Conflict resolved to a merge with this data and `updated_at`, under the original id.
        Merged(Value, i64),
        /// Meal kept both, under the id derived from the incoming record.
        KeepBoth,
    }

    fn fields(data: Value) -> Map<String, Value> {
        assert!(data.is_object(), "test data must be a JSON object: {data}");
        match data {
            Value::Object(fields) => fields,
            _ => Map::new(),
        }
    }

    fn parse(text: &str) -> Value {
        let parsed = serde_json::from_str(text);
        assert!(parsed.is_ok(), "test literal must parse: {text}");
        parsed.unwrap_or_default()
    }

    fn record(data: Value, updated_at: i64, deleted_at: Option<i64>) -> Record {
        Record {
            id: ID.to_owned(),
            data: fields(data),
            updated_at,
            deleted_at,
        }
    }

    fn sent(data: Value, updated_at: i64, base_version: Option<u64>) -> Incoming {
        Incoming {
            record: record(data, updated_at, None),
            base_version,
        }
    }

    fn sent_deleted(data: Value, updated_at: i64, deleted_at: i64, base: Option<u64>) -> Incoming {
        Incoming {
            record: record(data, updated_at, Some(deleted_at)),
            base_version: base,
        }
    }

    fn held(data: Value, updated_at: i64, version: u64) -> Option<Stored> {
        Some(Stored {
            record: record(data, updated_at, None),
            version,
        })
    }

    fn held_deleted(data: Value, updated_at: i64, deleted_at: i64, version: u64) -> Option<Stored> {
        Some(Stored {
            record: record(data, updated_at, Some(deleted_at)),
            version,
        })
    }

    fn expected_outcome(expect: Expect, incoming: &Record) -> Outcome {
        match expect {
            Insert => Outcome::Insert,
            Retry => Outcome::Retry,
            Update => Outcome::Update,
            ClientWins => Outcome::Conflict {
                resolution: Resolution::ClientWins,
                store: Some(incoming.clone()),
            },
            ServerWins => Outcome::Conflict {
                resolution: Resolution::ServerWins,
                store: None,
            },
            Merged(data, updated_at) => Outcome::Conflict {
                resolution: Resolution::Merged,
                store: Some(record(data, updated_at, None)),
            },
            KeepBoth => Outcome::KeepBoth {
                derived_id: derived_meal_id(ID, &incoming.data),
            },
        }
    }

    fn check(entity: Entity, incoming: Incoming, stored: Option<Stored>, expect: Expect) {
        let wanted = expected_outcome(expect, &incoming.record);
        assert_eq!(decide(entity, &incoming, stored.as_ref(), LIMIT), wanted);
    }

    fn check_derived(incoming: Record, stored: Option<Stored>, expect: Expect) {
        let wanted = expected_outcome(expect, &incoming);
        assert_eq!(decide_derived(&incoming, stored.as_ref()), wanted);
    }

    // Rule 1: no stored row.

    #[test]
    fn no_stored_row_is_insert() {
        check(
            Exercises,
            sent(json!({"name": "run"}), 10, None),
            NO_ROW,
            Insert,
        );
    }

    #[test]
    fn no_stored_row_is_insert_even_with_a_base_version() {
        check(
            Exercises,
            sent(json!({"name": "run"}), 10, Some(4)),
            NO_ROW,
            Insert,
        );
    }

    #[test]
    fn no_stored_row_is_insert_even_for_a_tombstone() {
        check(Meals, sent_deleted(json!({}), 10, 10, None), NO_ROW, Insert);
    }

    // Rule 2: same content is a retry.

    #[test]
    fn identical_record_is_retry() {
        check(
            Exercises,
            sent(json!({"minutes": 30}), 10, None),
            held(json!({"minutes": 30}), 10, 3),
            Retry,
        );
    }

    #[test]
    fn identical_record_with_a_stale_base_version_is_retry() {
        check(
            HealthMetrics,
            sent(json!({"weight": 70}), 10, Some(1)),
            held(json!({"weight": 70}), 10, 3),
            Retry,
        );
    }

    #[test]
    fn identical_record_with_a_matching_base_version_is_retry() {
        check(
            Medications,
            sent(json!({"dose": "1"}), 10, Some(3)),
            held(json!({"dose": "1"}), 10, 3),
            Retry,
        );
    }

    #[test]
    fn identical_tombstone_is_retry() {
        check(
            Meals,
            sent_deleted(json!({"date": "d"}), 10, 12, Some(1)),
            held_deleted(json!({"date": "d"}), 10, 12, 3),
            Retry,
        );
    }

    #[test]
    fn retry_ignores_key_order() {
        let client = parse(r#"{"a": 1, "b": {"x": [1, {"p": 1, "q": 2}], "y": 2}}"#);
        let server = parse(r#"{"b": {"y": 2, "x": [1, {"q": 2, "p": 1}]}, "a": 1}"#);
        check(
            Exercises,
            sent(client, 10, None),
            held(server, 10, 3),
            Retry,
        );
    }

    #[test]
    fn retry_compares_numbers_as_values_so_1e2_equals_100_point_0() {
        let client = parse(r#"{"weight": 1e2}"#);
        let server = parse(r#"{"weight": 100.0}"#);
        check(
            HealthMetrics,
            sent(client, 10, Some(1)),
            held(server, 10, 3),
            Retry,
        );
    }

    #[test]
    fn integer_1_and_float_1_point_0_are_different_content() {
        check(
            Exercises,
            sent(json!({"sets": 1}), 10, None),
            held(json!({"sets": 1.0}), 10, 3),
            ServerWins,
        );
    }

    #[test]
    fn same_data_and_time_with_a_different_deleted_at_is_not_retry() {
        check(
            Exercises,
            sent(json!({"sets": 1}), 10, Some(3)),
            held_deleted(json!({"sets": 1}), 10, 10, 3),
            Update,
        );
    }

    #[test]
    fn tombstones_deleted_at_different_times_are_not_retry() {
        check(
            Exercises,
            sent_deleted(json!({}), 10, 11, None),
            held_deleted(json!({}), 10, 10, 3),
            ServerWins,
        );
    }

    #[test]
    fn same_data_with_a_different_updated_at_is_not_retry() {
        check(
            Exercises,
            sent(json!({"sets": 1}), 11, Some(3)),
            held(json!({"sets": 1}), 10, 3),
            Update,
        );
    }

    // Rule 3: plain update.

    #[test]
    fn matching_base_version_is_update() {
        check(
            Exercises,
            sent(json!({"minutes": 45}), 20, Some(3)),
            held(json!({"minutes": 30}), 10, 3),
            Update,
        );
    }

    #[test]
    fn matching_base_version_with_an_earlier_updated_at_is_still_update() {
        check(
            Exercises,
            sent(json!({"minutes": 45}), 5, Some(3)),
            held(json!({"minutes": 30}), 10, 3),
            Update,
        );
    }

    #[test]
    fn matching_base_version_with_an_equal_updated_at_is_update() {
        check(
            HealthMetrics,
            sent(json!({"weight": 70}), 10, Some(3)),
            held(json!({"weight": 72}), 10, 3),
            Update,
        );
    }

    #[test]
    fn matching_base_version_tombstone_is_update() {
        check(
            Exercises,
            sent_deleted(json!({"minutes": 30}), 20, 20, Some(3)),
            held(json!({"minutes": 30}), 10, 3),
            Update,
        );
    }

    #[test]
    fn matching_base_version_over_a_stored_tombstone_is_update() {
        check(
            Exercises,
            sent(json!({"minutes": 30}), 5, Some(3)),
            held_deleted(json!({"minutes": 30}), 10, 10, 3),
            Update,
        );
    }

    #[test]
    fn matching_base_version_is_update_even_for_a_meal_moved_to_another_date() {
        check(
            Meals,
            sent(json!({"date": "2024-01-02"}), 20, Some(3)),
            held(json!({"date": "2024-01-01"}), 10, 3),
            Update,
        );
    }

    #[test]
    fn no_base_version_with_a_later_updated_at_is_update() {
        check(
            HealthMetrics,
            sent(json!({"weight": 70}), 11, None),
            held(json!({"weight": 72, "steps": 5}), 10, 3),
            Update,
        );
    }

    #[test]
    fn no_base_version_with_a_later_updated_at_is_update_even_for_a_meal_on_another_date() {
        check(
            Meals,
            sent(json!({"date": "2024-01-02"}), 11, None),
            held(json!({"date": "2024-01-01"}), 10, 3),
            Update,
        );
    }

    // Rule 4: concurrent edits, last write wins, server later on a tie.

    #[test]
    fn stale_base_version_with_later_edit_is_client_wins() {
        check(
            Exercises,
            sent(json!({"minutes": 45}), 20, Some(2)),
            held(json!({"minutes": 30}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn stale_base_version_with_earlier_edit_is_server_wins() {
        check(
            Exercises,
            sent(json!({"minutes": 45}), 5, Some(2)),
            held(json!({"minutes": 30}), 10, 3),
            ServerWins,
        );
    }

    #[test]
    fn stale_base_version_with_equal_timestamps_is_server_wins() {
        check(
            Exercises,
            sent(json!({"minutes": 45}), 10, Some(2)),
            held(json!({"minutes": 30}), 10, 3),
            ServerWins,
        );
    }

    #[test]
    fn base_version_ahead_of_the_stored_version_is_concurrent() {
        check(
            Exercises,
            sent(json!({"minutes": 45}), 5, Some(9)),
            held(json!({"minutes": 30}), 10, 3),
            ServerWins,
        );
    }

    #[test]
    fn no_base_version_with_equal_timestamps_is_server_wins() {
        check(
            Exercises,
            sent(json!({"minutes": 45}), 10, None),
            held(json!({"minutes": 30}), 10, 3),
            ServerWins,
        );
    }

    #[test]
    fn no_base_version_with_an_earlier_updated_at_is_server_wins() {
        check(
            Exercises,
            sent(json!({"minutes": 45}), 9, None),
            held(json!({"minutes": 30}), 10, 3),
            ServerWins,
        );
    }

    #[test]
    fn exercises_do_not_merge_fields() {
        check(
            Exercises,
            sent(json!({"minutes": 45}), 20, Some(2)),
            held(json!({"minutes": 30, "sets": 3}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn meal_plans_later_client_edit_is_client_wins() {
        check(
            MealPlans,
            sent(json!({"week": 1, "notes": "a"}), 20, Some(2)),
            held(json!({"week": 1, "notes": "b", "x": 1}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn meal_plans_later_server_edit_is_server_wins() {
        check(
            MealPlans,
            sent(json!({"week": 1, "notes": "a", "x": 1}), 10, Some(2)),
            held(json!({"week": 2, "notes": "b"}), 20, 3),
            ServerWins,
        );
    }

    #[test]
    fn meal_plans_tie_is_server_wins() {
        check(
            MealPlans,
            sent(json!({"week": 1}), 10, None),
            held(json!({"week": 2}), 10, 3),
            ServerWins,
        );
    }

    // Rule 4, tombstones: last write wins before any strategy.

    #[test]
    fn later_client_tombstone_beats_a_server_edit() {
        check(
            Exercises,
            sent_deleted(json!({"minutes": 30}), 20, 20, Some(2)),
            held(json!({"minutes": 45}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn earlier_client_tombstone_loses_to_a_server_edit() {
        check(
            Exercises,
            sent_deleted(json!({"minutes": 30}), 10, 10, Some(2)),
            held(json!({"minutes": 45}), 20, 3),
            ServerWins,
        );
    }

    #[test]
    fn client_tombstone_tied_with_a_server_edit_is_server_wins() {
        check(
            Exercises,
            sent_deleted(json!({"minutes": 30}), 10, 10, None),
            held(json!({"minutes": 45}), 10, 3),
            ServerWins,
        );
    }

    #[test]
    fn later_client_edit_beats_a_server_tombstone() {
        check(
            Exercises,
            sent(json!({"minutes": 45}), 20, Some(2)),
            held_deleted(json!({"minutes": 30}), 10, 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn earlier_client_edit_loses_to_a_server_tombstone() {
        check(
            Exercises,
            sent(json!({"minutes": 45}), 10, Some(2)),
            held_deleted(json!({"minutes": 30}), 20, 20, 3),
            ServerWins,
        );
    }

    #[test]
    fn client_edit_tied_with_a_server_tombstone_is_server_wins() {
        check(
            Exercises,
            sent(json!({"minutes": 45}), 10, None),
            held_deleted(json!({"minutes": 30}), 10, 10, 3),
            ServerWins,
        );
    }

    #[test]
    fn later_of_two_tombstones_wins() {
        check(
            Exercises,
            sent_deleted(json!({}), 20, 20, Some(2)),
            held_deleted(json!({}), 10, 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn later_client_edit_over_a_health_metrics_tombstone_is_not_merged() {
        check(
            HealthMetrics,
            sent(json!({"weight": 70}), 20, Some(2)),
            held_deleted(json!({"weight": 72, "steps": 5}), 10, 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn later_client_tombstone_over_health_metrics_is_not_merged() {
        check(
            HealthMetrics,
            sent_deleted(json!({"weight": 70}), 20, 20, Some(2)),
            held(json!({"weight": 72, "steps": 5}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn later_client_edit_over_a_medications_tombstone_does_not_union_side_effects() {
        check(
            Medications,
            sent(json!({"sideEffects": ["nausea"]}), 20, Some(2)),
            held_deleted(json!({"sideEffects": ["rash"]}), 10, 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn earlier_client_edit_over_a_meal_tombstone_on_another_date_is_not_kept_both() {
        check(
            Meals,
            sent(json!({"date": "2024-01-02"}), 10, Some(2)),
            held_deleted(json!({"date": "2024-01-01"}), 20, 20, 3),
            ServerWins,
        );
    }

    #[test]
    fn later_client_meal_tombstone_on_another_date_is_not_kept_both() {
        check(
            Meals,
            sent_deleted(json!({"date": "2024-01-02"}), 20, 20, Some(2)),
            held(json!({"date": "2024-01-01"}), 10, 3),
            ClientWins,
        );
    }

    // Rule 4, health_metrics merge.

    #[test]
    fn health_metrics_merge_equal_to_the_incoming_record_is_client_wins() {
        check(
            HealthMetrics,
            sent(json!({"weight": 70, "steps": 100}), 20, Some(2)),
            held(json!({"weight": 72}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn health_metrics_merge_equal_to_the_stored_record_is_server_wins() {
        check(
            HealthMetrics,
            sent(json!({"weight": 70}), 10, Some(2)),
            held(json!({"weight": 72, "steps": 5000}), 20, 3),
            ServerWins,
        );
    }

    #[test]
    fn health_metrics_later_client_scalars_win_and_server_only_fields_are_kept() {
        check(
            HealthMetrics,
            sent(json!({"weight": 70}), 20, Some(2)),
            held(json!({"weight": 72, "steps": 5000}), 10, 3),
            Merged(json!({"weight": 70, "steps": 5000}), 20),
        );
    }

    #[test]
    fn health_metrics_later_server_scalars_win_and_client_only_fields_are_kept() {
        check(
            HealthMetrics,
            sent(json!({"weight": 70, "heartRate": 60}), 10, Some(2)),
            held(json!({"weight": 72}), 20, 3),
            Merged(json!({"weight": 72, "heartRate": 60}), 20),
        );
    }

    #[test]
    fn health_metrics_empty_later_data_takes_every_earlier_field() {
        check(
            HealthMetrics,
            sent(json!({}), 20, Some(2)),
            held(json!({"weight": 72, "notes": "x"}), 10, 3),
            Merged(json!({"weight": 72, "notes": "x"}), 20),
        );
    }

    #[test]
    fn health_metrics_later_null_is_taken_as_a_value() {
        check(
            HealthMetrics,
            sent(json!({"weight": null}), 20, Some(2)),
            held(json!({"weight": 72}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn health_metrics_tie_counts_the_server_as_later() {
        check(
            HealthMetrics,
            sent(
                json!({"weight": 70, "notes": "client", "heartRate": 60}),
                10,
                None,
            ),
            held(json!({"weight": 72, "notes": "server"}), 10, 3),
            Merged(
                json!({"weight": 72, "notes": "server\n\nclient", "heartRate": 60}),
                10,
            ),
        );
    }

    #[test]
    fn health_metrics_tie_whose_merge_equals_the_stored_record_is_server_wins() {
        check(
            HealthMetrics,
            sent(json!({"weight": 70}), 10, None),
            held(json!({"weight": 72}), 10, 3),
            ServerWins,
        );
    }

    #[test]
    fn health_metrics_body_measurement_objects_are_unioned_with_the_later_client_keeping_its_keys()
    {
        check(
            HealthMetrics,
            sent(
                json!({"bodyMeasurements": {"waist": 80, "hips": 95}}),
                20,
                Some(2),
            ),
            held(
                json!({"bodyMeasurements": {"waist": 82, "chest": 100}}),
                10,
                3,
            ),
            Merged(
                json!({"bodyMeasurements": {"waist": 80, "hips": 95, "chest": 100}}),
                20,
            ),
        );
    }

    #[test]
    fn health_metrics_body_measurement_objects_are_unioned_with_the_later_server_keeping_its_keys()
    {
        check(
            HealthMetrics,
            sent(
                json!({"bodyMeasurements": {"waist": 80, "hips": 95}}),
                10,
                Some(2),
            ),
            held(
                json!({"bodyMeasurements": {"waist": 82, "chest": 100}}),
                20,
                3,
            ),
            Merged(
                json!({"bodyMeasurements": {"waist": 82, "chest": 100, "hips": 95}}),
                20,
            ),
        );
    }

    #[test]
    fn health_metrics_body_measurement_object_union_is_by_top_level_key_only() {
        check(
            HealthMetrics,
            sent(
                json!({"bodyMeasurements": {"arm": {"left": 30}}}),
                20,
                Some(2),
            ),
            held(json!({"bodyMeasurements": {"arm": {"right": 31}}}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn health_metrics_body_measurement_object_union_adding_nothing_is_client_wins() {
        check(
            HealthMetrics,
            sent(
                json!({"bodyMeasurements": {"waist": 80, "hips": 95}}),
                20,
                Some(2),
            ),
            held(json!({"bodyMeasurements": {"waist": 82}}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn health_metrics_body_measurement_lists_are_unioned_later_elements_first() {
        check(
            HealthMetrics,
            sent(
                json!({"bodyMeasurements": [{"waist": 80}, {"hips": 95}]}),
                20,
                Some(2),
            ),
            held(
                json!({"bodyMeasurements": [{"chest": 100}, {"waist": 80}]}),
                10,
                3,
            ),
            Merged(
                json!({"bodyMeasurements": [{"waist": 80}, {"hips": 95}, {"chest": 100}]}),
                20,
            ),
        );
    }

    #[test]
    fn health_metrics_body_measurement_lists_follow_the_later_server_order() {
        check(
            HealthMetrics,
            sent(json!({"bodyMeasurements": [1, 4]}), 10, Some(2)),
            held(json!({"bodyMeasurements": [3, 2]}), 20, 3),
            Merged(json!({"bodyMeasurements": [3, 2, 1, 4]}), 20),
        );
    }

    #[test]
    fn health_metrics_body_measurement_list_union_introduces_no_duplicates() {
        check(
            HealthMetrics,
            sent(json!({"bodyMeasurements": [1, 2]}), 20, Some(2)),
            held(json!({"bodyMeasurements": [3, 2, 3, 1]}), 10, 3),
            Merged(json!({"bodyMeasurements": [1, 2, 3]}), 20),
        );
    }

    #[test]
    fn health_metrics_body_measurement_list_union_keeps_the_later_sides_own_duplicates() {
        check(
            HealthMetrics,
            sent(json!({"bodyMeasurements": [1, 1]}), 20, Some(2)),
            held(json!({"bodyMeasurements": [2, 1]}), 10, 3),
            Merged(json!({"bodyMeasurements": [1, 1, 2]}), 20),
        );
    }

    #[test]
    fn health_metrics_body_measurement_list_union_compares_elements_as_json_values() {
        check(
            HealthMetrics,
            sent(
                json!({"bodyMeasurements": [1, {"a": 1, "b": 2}]}),
                20,
                Some(2),
            ),
            held(json!({"bodyMeasurements": [1.0, {"b": 2, "a": 1}]}), 10, 3),
            Merged(json!({"bodyMeasurements": [1, {"a": 1, "b": 2}, 1.0]}), 20),
        );
    }

    #[test]
    fn health_metrics_body_measurement_list_union_adding_nothing_is_client_wins() {
        check(
            HealthMetrics,
            sent(json!({"bodyMeasurements": [1, 2, 3]}), 20, Some(2)),
            held(json!({"bodyMeasurements": [2]}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn health_metrics_body_measurements_list_over_object_takes_the_later_client_value() {
        check(
            HealthMetrics,
            sent(json!({"bodyMeasurements": [1]}), 20, Some(2)),
            held(json!({"bodyMeasurements": {"waist": 80}}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn health_metrics_body_measurements_object_over_list_takes_the_later_server_value() {
        check(
            HealthMetrics,
            sent(json!({"bodyMeasurements": [1], "steps": 5}), 10, Some(2)),
            held(json!({"bodyMeasurements": {"waist": 80}}), 20, 3),
            Merged(json!({"bodyMeasurements": {"waist": 80}, "steps": 5}), 20),
        );
    }

    #[test]
    fn health_metrics_body_measurements_null_on_the_later_side_is_taken_as_is() {
        check(
            HealthMetrics,
            sent(json!({"bodyMeasurements": null}), 20, Some(2)),
            held(json!({"bodyMeasurements": {"waist": 80}}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn health_metrics_body_measurements_only_on_the_earlier_side_are_kept() {
        check(
            HealthMetrics,
            sent(json!({"weight": 70}), 20, Some(2)),
            held(json!({"bodyMeasurements": {"waist": 80}}), 10, 3),
            Merged(json!({"weight": 70, "bodyMeasurements": {"waist": 80}}), 20),
        );
    }

    #[test]
    fn health_metrics_distinct_notes_are_joined_later_client_first() {
        check(
            HealthMetrics,
            sent(json!({"notes": "felt dizzy"}), 20, Some(2)),
            held(json!({"notes": "after lunch"}), 10, 3),
            Merged(json!({"notes": "felt dizzy\n\nafter lunch"}), 20),
        );
    }

    #[test]
    fn health_metrics_distinct_notes_are_joined_later_server_first() {
        check(
            HealthMetrics,
            sent(json!({"notes": "felt dizzy"}), 10, Some(2)),
            held(json!({"notes": "after lunch"}), 20, 3),
            Merged(json!({"notes": "after lunch\n\nfelt dizzy"}), 20),
        );
    }

    #[test]
    fn health_metrics_later_notes_containing_the_earlier_notes_stand_alone() {
        check(
            HealthMetrics,
            sent(json!({"notes": "after lunch, felt dizzy"}), 20, Some(2)),
            held(json!({"notes": "felt dizzy"}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn health_metrics_earlier_notes_containing_the_later_notes_replace_them() {
        check(
            HealthMetrics,
            sent(json!({"notes": "dizzy"}), 20, Some(2)),
            held(json!({"notes": "felt dizzy after lunch"}), 10, 3),
            Merged(json!({"notes": "felt dizzy after lunch"}), 20),
        );
    }

    #[test]
    fn health_metrics_earlier_client_notes_containing_the_server_notes_replace_them() {
        check(
            HealthMetrics,
            sent(json!({"notes": "felt dizzy after lunch"}), 10, Some(2)),
            held(json!({"notes": "dizzy"}), 20, 3),
            Merged(json!({"notes": "felt dizzy after lunch"}), 20),
        );
    }

    #[test]
    fn health_metrics_equal_notes_are_not_repeated() {
        check(
            HealthMetrics,
            sent(json!({"notes": "ok", "weight": 70}), 20, Some(2)),
            held(json!({"notes": "ok", "steps": 5}), 10, 3),
            Merged(json!({"notes": "ok", "weight": 70, "steps": 5}), 20),
        );
    }

    #[test]
    fn health_metrics_empty_later_notes_give_the_earlier_text() {
        check(
            HealthMetrics,
            sent(json!({"notes": ""}), 20, Some(2)),
            held(json!({"notes": "tired"}), 10, 3),
            Merged(json!({"notes": "tired"}), 20),
        );
    }

    #[test]
    fn health_metrics_empty_earlier_notes_leave_the_later_text() {
        check(
            HealthMetrics,
            sent(json!({"notes": "tired"}), 20, Some(2)),
            held(json!({"notes": ""}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn health_metrics_both_notes_empty_give_one_empty_text() {
        check(
            HealthMetrics,
            sent(json!({"notes": "", "weight": 70}), 20, Some(2)),
            held(json!({"notes": "", "steps": 5}), 10, 3),
            Merged(json!({"notes": "", "weight": 70, "steps": 5}), 20),
        );
    }

    #[test]
    fn health_metrics_notes_not_both_strings_take_the_later_client_value() {
        check(
            HealthMetrics,
            sent(json!({"notes": null}), 20, Some(2)),
            held(json!({"notes": "tired"}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn health_metrics_notes_not_both_strings_take_the_later_server_value() {
        check(
            HealthMetrics,
            sent(json!({"notes": "tired"}), 10, Some(2)),
            held(json!({"notes": ["tired"]}), 20, 3),
            ServerWins,
        );
    }

    #[test]
    fn health_metrics_notes_only_on_the_earlier_side_are_kept() {
        check(
            HealthMetrics,
            sent(json!({"weight": 70}), 20, Some(2)),
            held(json!({"notes": "tired"}), 10, 3),
            Merged(json!({"weight": 70, "notes": "tired"}), 20),
        );
    }

    #[test]
    fn health_metrics_other_text_fields_are_not_combined() {
        check(
            HealthMetrics,
            sent(json!({"comment": "a"}), 20, Some(2)),
            held(json!({"comment": "b"}), 10, 3),
            ClientWins,
        );
    }

    // Rule 4, medications.

    #[test]
    fn medications_side_effect_union_with_new_elements_is_merged() {
        check(
            Medications,
            sent(
                json!({"name": "ibuprofen", "sideEffects": ["nausea"]}),
                20,
                Some(2),
            ),
            held(
                json!({"name": "ibuprofen", "sideEffects": ["rash", "nausea"]}),
                10,
                3,
            ),
            Merged(
                json!({"name": "ibuprofen", "sideEffects": ["nausea", "rash"]}),
                20,
            ),
        );
    }

    #[test]
    fn medications_side_effect_union_onto_a_later_server_is_merged() {
        check(
            Medications,
            sent(
                json!({"dose": "200mg", "sideEffects": ["rash"]}),
                10,
                Some(2),
            ),
            held(json!({"dose": "400mg", "sideEffects": ["nausea"]}), 20, 3),
            Merged(
                json!({"dose": "400mg", "sideEffects": ["nausea", "rash"]}),
                20,
            ),
        );
    }

    #[test]
    fn medications_side_effect_union_on_a_tie_keeps_the_server_first() {
        check(
            Medications,
            sent(json!({"sideEffects": ["rash"]}), 10, None),
            held(json!({"sideEffects": ["nausea"]}), 10, 3),
            Merged(json!({"sideEffects": ["nausea", "rash"]}), 10),
        );
    }

    #[test]
    fn medications_side_effect_union_without_new_elements_is_client_wins() {
        check(
            Medications,
            sent(
                json!({"dose": "200mg", "sideEffects": ["nausea", "rash"]}),
                20,
                Some(2),
            ),
            held(json!({"dose": "400mg", "sideEffects": ["rash"]}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn medications_side_effect_union_without_new_elements_is_server_wins() {
        check(
            Medications,
            sent(
                json!({"dose": "200mg", "sideEffects": ["rash"]}),
                10,
                Some(2),
            ),
            held(
                json!({"dose": "400mg", "sideEffects": ["rash", "nausea"]}),
                20,
                3,
            ),
            ServerWins,
        );
    }

    #[test]
    fn medications_side_effect_union_adds_a_duplicated_loser_element_once() {
        check(
            Medications,
            sent(json!({"sideEffects": []}), 20, Some(2)),
            held(json!({"sideEffects": ["rash", "rash"]}), 10, 3),
            Merged(json!({"sideEffects": ["rash"]}), 20),
        );
    }

    #[test]
    fn medications_other_fields_are_last_write_wins() {
        check(
            Medications,
            sent(json!({"dose": "200mg"}), 20, Some(2)),
            held(json!({"dose": "400mg", "notes": "with food"}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn medications_side_effects_missing_on_the_winner_are_not_added() {
        check(
            Medications,
            sent(json!({"dose": "200mg"}), 20, Some(2)),
            held(json!({"sideEffects": ["rash"]}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn medications_side_effects_not_both_lists_are_last_write_wins() {
        check(
            Medications,
            sent(json!({"sideEffects": "none"}), 20, Some(2)),
            held(json!({"sideEffects": ["rash"]}), 10, 3),
            ClientWins,
        );
    }

    // Rule 4, meals.

    #[test]
    fn meals_on_the_same_date_with_a_later_client_are_client_wins() {
        check(
            Meals,
            sent(json!({"date": "2024-01-01", "name": "soup"}), 20, Some(2)),
            held(json!({"date": "2024-01-01", "calories": 300}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn meals_on_the_same_date_with_a_later_server_are_server_wins() {
        check(
            Meals,
            sent(json!({"date": "2024-01-01", "name": "soup"}), 10, Some(2)),
            held(json!({"date": "2024-01-01", "name": "salad"}), 20, 3),
            ServerWins,
        );
    }

    #[test]
    fn meals_on_the_same_date_with_a_tie_are_server_wins() {
        check(
            Meals,
            sent(json!({"date": "2024-01-01", "name": "soup"}), 10, None),
            held(json!({"date": "2024-01-01", "name": "salad"}), 10, 3),
            ServerWins,
        );
    }

    #[test]
    fn meals_with_the_date_missing_on_the_client_are_last_write_wins() {
        check(
            Meals,
            sent(json!({"name": "soup"}), 20, Some(2)),
            held(json!({"date": "2024-01-01", "name": "salad"}), 10, 3),
            ClientWins,
        );
    }

    #[test]
    fn meals_with_the_date_missing_on_the_server_are_last_write_wins() {
        check(
            Meals,
            sent(json!({"date": "2024-01-02", "name": "soup"}), 10, Some(2)),
            held(json!({"name": "salad"}), 20, 3),
            ServerWins,
        );
    }

    #[test]
    fn meals_on_different_dates_with_a_later_client_are_kept_both() {
        check(
            Meals,
            sent(json!({"date": "2024-01-02", "name": "soup"}), 20, Some(2)),
            held(json!({"date": "2024-01-01", "name": "soup"}), 10, 3),
            KeepBoth,
        );
    }

    #[test]
    fn meals_on_different_dates_with_a_later_server_are_kept_both() {
        check(
            Meals,
            sent(json!({"date": "2024-01-02"}), 10, None),
            held(json!({"date": "2024-01-01"}), 20, 3),
            KeepBoth,
        );
    }

    #[test]
    fn meal_dates_are_compared_as_json_values() {
        check(
            Meals,
            sent(json!({"date": 20240101}), 20, Some(2)),
            held(json!({"date": "20240101"}), 10, 3),
            KeepBoth,
        );
    }

    #[test]
    fn meal_date_null_is_a_value_not_a_missing_date() {
        check(
            Meals,
            sent(json!({"date": null}), 20, Some(2)),
            held(json!({"date": "2024-01-01"}), 10, 3),
            KeepBoth,
        );
    }

    #[test]
    fn kept_both_meal_carries_the_id_derived_from_the_client_date() {
        let incoming = sent(json!({"date": "2024-01-01"}), 20, Some(2));
        let derived_id = "7198061c-55a0-5b11-b9ac-ea822911b89d".to_owned();
        let stored = held(json!({"date": "2024-01-02"}), 10, 3);
        assert_eq!(
            decide(Meals, &incoming, stored.as_ref(), LIMIT),
            Outcome::KeepBoth { derived_id }
        );
    }

    // The derived id of a kept-both meal.

    #[test]
    fn kept_both_namespace_is_the_v5_of_the_documented_url() {
        let namespace = Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            b"https://healthsync.invalid/meals/kept-both",
        );
        assert_eq!(KEPT_BOTH_MEAL_NAMESPACE, namespace);
    }

    #[test]
    fn derived_meal_ids_match_vectors_computed_independently() {
        let cases = [
            (
                json!({"date": "2024-01-01"}),
                "7198061c-55a0-5b11-b9ac-ea822911b89d",
            ),
            (
                json!({"date": "2024-01-02", "name": "soup"}),
                "6785491c-71f3-5289-8bc8-275772570dd4",
            ),
            (
                json!({"date": {"month": 2, "day": 1}}),
                "a33b98cf-6ac2-558b-bdd4-97a300499319",
            ),
            (json!({}), "b34b5c3c-cfd5-5a58-8b03-2f700d6794a2"),
            (
                json!({"date": null}),
                "b34b5c3c-cfd5-5a58-8b03-2f700d6794a2",
            ),
        ];
        for (data, expected_id) in cases {
            assert_eq!(
                derived_meal_id(ID, &fields(data.clone())),
                expected_id,
                "data {data}"
            );
        }
    }

    #[test]
    fn derived_meal_id_is_the_same_for_the_same_id_and_date() {
        let first = derived_meal_id(ID, &fields(json!({"date": "2024-01-01", "name": "soup"})));
        let second = derived_meal_id(ID, &fields(json!({"date": "2024-01-01", "name": "salad"})));
        assert_eq!(first, second);
    }

    #[test]
    fn derived_meal_id_differs_by_date() {
        let first = derived_meal_id(ID, &fields(json!({"date": "2024-01-01"})));
        let second = derived_meal_id(ID, &fields(json!({"date": "2024-01-02"})));
        assert_ne!(first, second);
    }

    #[test]
    fn derived_meal_id_differs_by_record_id() {
        let data = fields(json!({"date": "2024-01-01"}));
        assert_ne!(derived_meal_id(ID, &data), derived_meal_id(OTHER_ID, &data));
    }

    #[test]
    fn derived_meal_id_is_a_lower_case_hyphenated_v5_uuid() {
        let derived_id = derived_meal_id(ID, &fields(json!({"date": "2024-01-01"})));
        let parsed = Uuid::parse_str(&derived_id).ok();
        assert_eq!(parsed.map(|uuid| uuid.get_version_num()), Some(5));
        assert_eq!(
            parsed.map(|uuid| uuid.hyphenated().to_string()),
            Some(derived_id.clone())
        );
        assert_eq!(derived_id, derived_id.to_lowercase());
    }

    // decide_derived: last write wins under the derived id, never a further copy.

    #[test]
    fn derived_copy_without_a_row_is_insert() {
        check_derived(
            record(json!({"date": "2024-01-02"}), 20, None),
            NO_ROW,
            Insert,
        );
    }

    #[test]
    fn derived_copy_with_the_same_content_is_retry() {
        check_derived(
            record(json!({"date": "2024-01-02"}), 20, None),
            held(json!({"date": "2024-01-02"}), 20, 7),
            Retry,
        );
    }

    #[test]
    fn derived_copy_with_a_later_updated_at_is_update() {
        check_derived(
            record(json!({"date": "2024-01-02", "name": "soup"}), 21, None),
            held(json!({"date": "2024-01-02"}), 20, 7),
            Update,
        );
    }

    #[test]
    fn derived_copy_with_an_equal_updated_at_is_server_wins() {
        check_derived(
            record(json!({"date": "2024-01-02", "name": "soup"}), 20, None),
            held(json!({"date": "2024-01-02"}), 20, 7),
            ServerWins,
        );
    }

    #[test]
    fn derived_copy_with_an_earlier_updated_at_is_server_wins() {
        check_derived(
            record(json!({"date": "2024-01-02", "name": "soup"}), 19, None),
            held(json!({"date": "2024-01-02"}), 20, 7),
            ServerWins,
        );
    }

    #[test]
    fn derived_copy_against_another_date_is_never_kept_both() {
        check_derived(
            record(json!({"date": "2024-01-02"}), 10, None),
            held(json!({"date": "2024-01-03"}), 20, 7),
            ServerWins,
        );
    }

    #[test]
    fn later_derived_tombstone_is_update() {
        check_derived(
            record(json!({"date": "2024-01-02"}), 21, Some(21)),
            held(json!({"date": "2024-01-02"}), 20, 7),
            Update,
        );
    }

    #[test]
    fn derived_copy_tied_with_a_stored_tombstone_is_server_wins() {
        check_derived(
            record(json!({"date": "2024-01-02"}), 20, None),
            held_deleted(json!({"date": "2024-01-02"}), 20, 20, 7),
            ServerWins,
        );
    }

    // Labels on the wire.

    #[test]
    fn resolutions_have_their_wire_labels() {
        let labels = [
            Resolution::ClientWins,
            Resolution::ServerWins,
            Resolution::Merged,
            Resolution::KeptBoth,
        ]
        .map(Resolution::as_str);
        assert_eq!(
            labels,
            ["client_wins", "server_wins", "merged", "kept_both"]
        );
    }

    /// Distinct side effects, `count` of them, each `"<prefix> <n>"`.
    fn side_effects(prefix: &str, count: usize) -> Value {
        Value::Array((0..count).map(|n| json!(format!("{prefix} {n}"))).collect())
    }

    #[test]
    fn a_merge_past_the_record_limit_is_last_write_wins() {
        // Each side alone is within the limit; their union is not.
        let client = sent(
            json!({"name": "a", "sideEffects": side_effects("client", 3000)}),
            2000,
            Some(1),
        );
        let server = held(
            json!({"name": "a", "sideEffects": side_effects("server", 3000)}),
            1000,
            2,
        );
        let client_len = crate::sync::compact_len(&client.record.data);
        assert!(client_len < LIMIT && 2 * client_len > LIMIT, "{client_len}");

        let outcome = decide(Medications, &client, server.as_ref(), LIMIT);
        assert_eq!(outcome, expected_outcome(ClientWins, &client.record));

        // The same pair under a limit that holds the union merges as before.
        let outcome = decide(Medications, &client, server.as_ref(), 4 * LIMIT);
        let Outcome::Conflict {
            resolution: Resolution::Merged,
            store: Some(merged),
        } = outcome
        else {
            panic!("expected a merge, got {outcome:?}");
        };
        assert_eq!(
            merged.data["sideEffects"].as_array().map(Vec::len),
            Some(6000)
        );
    }

    #[test]
    fn a_health_metrics_merge_past_the_limit_keeps_the_later_side() {
        let notes = |fill: &str| json!(fill.repeat(LIMIT * 2 / 3));
        let client = sent(
            json!({"type": "weight", "notes": notes("c")}),
            1000,
            Some(1),
        );
        let server = held(json!({"type": "weight", "notes": notes("s")}), 2000, 2);
        assert_eq!(
            decide(HealthMetrics, &client, server.as_ref(), LIMIT),
            expected_outcome(ServerWins, &client.record)
        );
    }

    #[test]
    fn a_union_compares_values_not_spellings() {
        let mut winner = vec![json!({"a": 1, "b": [1.0]}), json!(100.0)];
        let loser = [
            json!({"b": [1.0], "a": 1}),
            json!(1e2),
            json!(1.0),
            json!(1),
            json!(1),
        ];
        append_missing_elements(&mut winner, &loser);
        assert_eq!(
            winner,
            vec![
                json!({"a": 1, "b": [1.0]}),
                json!(100.0),
                json!(1.0),
                json!(1)
            ]
        );
    }

    #[test]
    fn a_union_of_large_lists_keeps_every_distinct_element_once() {
        let Value::Array(mut winner) = side_effects("same", 20_000) else {
            return;
        };
        let Value::Array(loser) = side_effects("same", 30_000) else {
            return;
        };
        append_missing_elements(&mut winner, &loser);
        assert_eq!(winner.len(), 30_000);
        assert_eq!(winner[29_999], json!("same 29999"));
    }
}
