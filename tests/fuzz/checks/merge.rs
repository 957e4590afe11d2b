//! `merge`: a pushed record and the stored one under the same id, both
//! generated from the input, through `sync::decide`. It must be total and
//! deterministic, never grow a record past `max_record_bytes` that both
//! sides were within, and keep what contract section 4 says a merge keeps:
//! every field of both health-metrics records, every `sideEffects` element
//! of both medications, unless the conflict fell back to last write wins.
//!
//! Input: entity, limit, then each side (client, then stored): flags,
//! times, version, and `data` as a small tree of fields whose names and
//! strings come mostly from the vocabulary of the merge rules.

use healthsync::sync::merge::derived_meal_id;
use healthsync::sync::{
    compact_len, decide, decide_derived, Entity, Incoming, Outcome, Record, Resolution, Stored,
};
use serde_json::{Map, Number, Value};

use super::input::Input;

const ID: &str = "3f2b8c1e-6a4d-4e5f-9a7b-1c2d3e4f5a6b";
/// 2024-01-15T10:30:00Z; the sides' times fall in the 16 ms after it, so
/// ties are common.
const BASE_MS: i64 = 1_705_314_600_000;
const KEYS: &[&str] = &[
    "sideEffects",
    "bodyMeasurements",
    "notes",
    "date",
    "name",
    "dose",
    "weight",
    "waist",
];
const STRINGS: &[&str] = &[
    "",
    "a",
    "b",
    "ab",
    "nausea",
    "headache",
    "2024-01-15",
    "2024-01-16",
];

struct Case {
    entity: Entity,
    max_record_bytes: usize,
    incoming: Incoming,
    stored: Stored,
}

fn string(input: &mut Input) -> String {
    let choice = input.byte();
    if choice < 0xC0 {
        return STRINGS[usize::from(choice) % STRINGS.len()].to_owned();
    }
    let len = input.below(16);
    String::from_utf8_lossy(input.take(len)).into_owned()
}

fn key(input: &mut Input) -> String {
    let choice = input.byte();
    if choice < 0xF0 {
        return KEYS[usize::from(choice) % KEYS.len()].to_owned();
    }
    string(input)
}

fn value(input: &mut Input, depth: usize) -> Value {
    let kinds = if depth == 0 { 5 } else { 8 };
    match input.below(kinds) {
        0 => Value::Null,
        1 => Value::Bool(input.byte() & 1 == 1),
        2 => Value::from(i64::from(input.byte()) - 128),
        3 => Number::from_f64(f64::from(input.byte()) / 2.0).map_or(Value::Null, Value::Number),
        4 | 7 => Value::String(string(input)),
        5 => {
            let len = input.below(5);
            Value::Array((0..len).map(|_| value(input, depth - 1)).collect())
        }
        _ => Value::Object(object(input, depth - 1)),
    }
}

fn object(input: &mut Input, depth: usize) -> Map<String, Value> {
    let fields = input.below(6);
    let mut object = Map::new();
    for _ in 0..fields {
        let name = key(input);
        let member = value(input, depth);
        object.insert(name, member);
    }
    object
}

/// One side: flags (deleted, has a base version), `updated_at`,
/// `deleted_at`, a version, `data`.
fn side(input: &mut Input) -> (Record, Option<u64>) {
    let flags = input.byte();
    let updated_at = BASE_MS + i64::from(input.byte() % 16);
    let deleted_at = BASE_MS + i64::from(input.byte() % 16);
    let version = u64::from(input.byte() % 4);
    let record = Record {
        id: ID.to_owned(),
        data: object(input, 3),
        updated_at,
        deleted_at: (flags & 1 == 1).then_some(deleted_at),
    };
    (record, (flags & 2 == 2).then_some(version))
}

fn decode(data: &[u8]) -> Case {
    let mut input = Input::new(data);
    let entity = input.pick(&Entity::ALL);
    let max_record_bytes = 8 + 4 * usize::from(input.byte());
    let (client, base_version) = side(&mut input);
    let (server, version) = side(&mut input);
    Case {
        entity,
        max_record_bytes,
        incoming: Incoming {
            record: client,
            base_version,
        },
        stored: Stored {
            record: server,
            version: version.unwrap_or(0),
        },
    }
}

pub fn check(data: &[u8]) {
    let case = decode(data);
    let Case {
        entity,
        max_record_bytes: limit,
        ref incoming,
        ref stored,
    } = case;
    let outcome = decide(entity, incoming, Some(stored), limit);
    let again = decide(entity, &incoming.clone(), Some(&stored.clone()), limit);
    assert_eq!(outcome, again, "decide is deterministic");
    assert_eq!(decide(entity, incoming, None, limit), Outcome::Insert);

    let client = &incoming.record;
    let server = &stored.record;
    match &outcome {
        Outcome::Insert => panic!("Insert over a stored record"),
        Outcome::Retry => assert!(client.same_content(server), "Retry of other content"),
        Outcome::Update => {
            let plain = match incoming.base_version {
                Some(base) => base == stored.version,
                None => client.updated_at > server.updated_at,
            };
            assert!(plain, "Update that is not a plain update");
        }
        Outcome::KeepBoth { derived_id } => check_kept_both(&case, derived_id),
        Outcome::Conflict { resolution, store } => {
            check_conflict(&case, *resolution, store.as_ref());
        }
    }
}

fn check_kept_both(case: &Case, derived_id: &str) {
    let client = &case.incoming.record;
    assert_eq!(case.entity, Entity::Meals, "only meals are kept both");
    assert_eq!(derived_id, derived_meal_id(ID, &client.data));
    assert_ne!(derived_id, ID, "a kept-both meal under its own id");
    let rekeyed = Record {
        id: derived_id.to_owned(),
        ..client.clone()
    };
    assert_eq!(decide_derived(&rekeyed, None), Outcome::Insert);
    let outcome = decide_derived(&rekeyed, Some(&case.stored));
    assert!(
        !matches!(outcome, Outcome::KeepBoth { .. }),
        "a derived record kept both again"
    );
}

fn check_conflict(case: &Case, resolution: Resolution, store: Option<&Record>) {
    let client = &case.incoming.record;
    let server = &case.stored.record;
    let limit = case.max_record_bytes;
    match (resolution, store) {
        (Resolution::ClientWins, Some(held)) => assert_eq!(held, client, "client_wins as sent"),
        (Resolution::ServerWins, None) => {}
        (Resolution::Merged, Some(held)) => {
            assert_eq!(held.id, ID, "a merge under the original id");
            assert_eq!(held.deleted_at, None, "a merge is never deleted");
            assert!(client.deleted_at.is_none() && server.deleted_at.is_none());
            assert_eq!(held.updated_at, client.updated_at.max(server.updated_at));
        }
        (resolution, store) => panic!("{resolution:?} holding {store:?}"),
    }
    // The record the server holds afterwards.
    let held = store.unwrap_or(server);
    let within = |record: &Record| compact_len(&record.data) <= limit;
    if within(client) && within(server) {
        assert!(
            within(held),
            "{resolution:?} holds {} bytes past the limit of {limit}",
            compact_len(&held.data)
        );
    }
    let both_live = client.deleted_at.is_none() && server.deleted_at.is_none();
    if !both_live {
        return;
    }
    match case.entity {
        Entity::HealthMetrics if resolution == Resolution::Merged => {
            for field in client.data.keys().chain(server.data.keys()) {
                assert!(held.data.contains_key(field), "merge lost field {field}");
            }
        }
        Entity::Medications => check_side_effects(case, resolution, held),
        _ => {}
    }
}

/// Every element of both `sideEffects` lists is held, or the union would
/// have passed the limit and the later side won as it was.
fn check_side_effects(case: &Case, resolution: Resolution, held: &Record) {
    let client = &case.incoming.record;
    let server = &case.stored.record;
    let (Some(Value::Array(client_list)), Some(Value::Array(server_list))) = (
        client.data.get("sideEffects"),
        server.data.get("sideEffects"),
    ) else {
        return;
    };
    let held_list = match held.data.get("sideEffects") {
        Some(Value::Array(list)) => list.as_slice(),
        _ => &[],
    };
    let missing: Vec<&Value> = client_list
        .iter()
        .chain(server_list)
        .filter(|element| !held_list.contains(element))
        .collect();
    if missing.is_empty() {
        return;
    }
    let (later, earlier) = if client.updated_at > server.updated_at {
        (client, server)
    } else {
        (server, client)
    };
    assert!(
        resolution != Resolution::Merged && held.data == later.data,
        "{resolution:?} lost side effects {missing:?}"
    );
    let mut union = later.data.clone();
    if let (Some(Value::Array(list)), Some(Value::Array(earlier_list))) = (
        union.get_mut("sideEffects"),
        earlier.data.get("sideEffects"),
    ) {
        for element in earlier_list {
            if !list.contains(element) {
                list.push(element.clone());
            }
        }
    }
    assert!(
        compact_len(&union) > case.max_record_bytes,
        "last write wins lost side effects {missing:?} though the union fits"
    );
}
