//! `push_body`: the input as the body of a push to each entity and of a
//! bulk, through the parsing and validation the routes run before any
//! lock (`routes::records::parse_push_body`, `routes::bulk::parse_body`,
//! `engine::validate::validate`).
//!
//! A refused body is a 400 naming its fields, an invalid JSON 400, or a
//! 413. An accepted one holds every record of its lists exactly once:
//! applied, only if it meets contract section 3 (a canonical id, times
//! that parse within bounds, `data` an object within the size and depth
//! limits), or refused with its index, a contract code and a message that
//! names the field at fault.

use std::collections::HashSet;
use std::sync::OnceLock;

use healthsync::config::{self, Config};
use healthsync::engine::validate::{Batch, EARLIEST_MS, MAX_CLOCK_AHEAD_MS, MAX_DATA_DEPTH};
use healthsync::engine::{SyncAsk, MAX_PULL_LIMIT};
use healthsync::error::ApiError;
use healthsync::http::{Body, Params, Request};
use healthsync::routes::{bulk, records};
use healthsync::store::clock;
use healthsync::sync::{compact_len, Entity};
use serde_json::{Map, Value};

/// Small, so that records past them fit in the inputs libFuzzer makes.
const MAX_RECORD_BYTES: usize = 300;
const MAX_BATCH: usize = 16;
/// The server clock: 2024-06-01T12:00:00Z.
const NOW_MS: i64 = 1_717_243_200_000;

/// Words a refusal's message names the field with.
const FIELDS: &[&str] = &[
    "id",
    "data",
    "updated_at",
    "deleted_at",
    "base_version",
    "record",
];

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let variables = [
            ("DB_HOST", "127.0.0.1"),
            ("DB_NAME", "fuzz"),
            ("DB_USER", "fuzz"),
            ("JWT_SECRET_KEY", "fuzz-Kq3vX8mW2rT6yB9nL4hJ7dF1gS5zCp0"),
            ("MAX_RECORD_BYTES", "300"),
            ("MAX_BATCH", "16"),
        ];
        let variables = variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        config::parse(&variables).expect("the fuzz configuration parses")
    })
}

pub fn check(data: &[u8]) {
    let config = config();
    assert_eq!(config.max_record_bytes, MAX_RECORD_BYTES);
    assert_eq!(config.max_batch, MAX_BATCH);
    let mut params = Params::new();
    params.insert("REQUEST_METHOD", "POST");
    params.insert("REQUEST_URI", "/api/sync/bulk");
    params.insert("CONTENT_TYPE", "application/json");
    let request = Request::from_params(&params, Body::Bytes(data.to_vec()));
    // What the body holds, parsed apart from the code under test.
    let body: Option<Map<String, Value>> = serde_json::from_slice(data).ok();

    for entity in Entity::ALL {
        match records::parse_push_body(&request, entity, config, NOW_MS) {
            Err(refusal) => check_refusal(&refusal),
            Ok(ask) => {
                assert!(ask.page.is_none(), "a push asks for no page");
                assert_eq!(ask.batches.len(), 1, "a push is one batch");
                let list = list_of(body.as_ref(), entity.list_key());
                check_batch(&ask.batches[0], entity, list);
            }
        }
    }
    match bulk::parse_body(&request, config, NOW_MS) {
        Err(refusal) => check_refusal(&refusal),
        Ok(ask) => check_bulk(&ask, body.as_ref()),
    }
}

fn list_of<'body>(body: Option<&'body Map<String, Value>>, key: &str) -> &'body [Value] {
    match body.and_then(|body| body.get(key)) {
        Some(Value::Array(list)) => list,
        other => panic!("accepted with {key} = {other:?}"),
    }
}

fn check_refusal(refusal: &ApiError) {
    match refusal {
        ApiError::Validation { details, .. } => {
            assert!(!details.is_empty(), "a refusal names its fields")
        }
        ApiError::InvalidJson(_) | ApiError::PayloadTooLarge(_) => {}
        other => panic!("a body refused with {other:?}"),
    }
}

fn check_bulk(ask: &SyncAsk, body: Option<&Map<String, Value>>) {
    let page = ask.page.expect("a bulk asks for a page");
    assert!((1..=MAX_PULL_LIMIT).contains(&page.limit), "{page:?}");
    let order = |entity: Entity| Entity::ALL.iter().position(|e| *e == entity);
    for pair in ask.batches.windows(2) {
        assert!(
            order(pair[0].entity) < order(pair[1].entity),
            "batches in contract order, each entity once"
        );
    }
    let total: usize = ask.batches.iter().map(Batch::len).sum();
    assert!(total <= MAX_BATCH, "{total} records past MAX_BATCH");
    for batch in &ask.batches {
        check_batch(batch, batch.entity, list_of(body, batch.entity.bulk_key()));
    }
}

/// Every record of `list` is in the batch once: applied in order, or
/// refused at its index.
fn check_batch(batch: &Batch, entity: Entity, list: &[Value]) {
    assert_eq!(batch.entity, entity);
    assert_eq!(batch.len(), list.len(), "every record accounted for");
    assert!(
        list.len() <= MAX_BATCH,
        "{} records past MAX_BATCH",
        list.len()
    );
    let refused: Vec<usize> = batch.errors.iter().map(|error| error.index).collect();
    assert!(
        refused.windows(2).all(|pair| pair[0] < pair[1]),
        "refusals in order, one per index: {refused:?}"
    );
    let applied_at: Vec<usize> = (0..list.len())
        .filter(|index| !refused.contains(index))
        .collect();
    assert_eq!(applied_at.len(), batch.valid.len(), "indexes {refused:?}");
    let mut ids = HashSet::new();
    for (valid, index) in batch.valid.iter().zip(&applied_at) {
        let sent = valid.client_version();
        assert_eq!(sent, list[*index], "record {index} applied as sent");
        let rendered = valid
            .render_client_version()
            .expect("a record as sent renders");
        assert_eq!(
            rendered.0.get(),
            serde_json::to_string(&list[*index]).expect("a parsed body renders"),
            "record {index}'s client_version rendered as sent"
        );
        let record = &valid.incoming.record;
        check_applied(&sent, &valid.incoming, &valid.data_json);
        assert!(ids.insert(record.id.clone()), "{} applied twice", record.id);
    }
    for error in &batch.errors {
        let raw = &list[error.index];
        assert_eq!(
            error.id.as_deref(),
            raw.get("id").and_then(Value::as_str),
            "a refusal carries the id as sent"
        );
        let message = error.message.as_str();
        assert!(
            FIELDS.iter().any(|field| message.contains(field)),
            "refusal of record {} names no field: {message}",
            error.index
        );
        match error.code {
            "VALIDATION_ERROR" | "CLOCK_SKEW" => {}
            "DUPLICATE_ID" => {
                let id = canonical_form(error.id.as_deref().unwrap_or(""));
                let earlier = applied_at
                    .iter()
                    .zip(&batch.valid)
                    .any(|(index, valid)| *index < error.index && valid.incoming.record.id == id);
                assert!(earlier, "DUPLICATE_ID {id} with no earlier record");
            }
            other => panic!("refused with code {other}"),
        }
    }
}

/// Contract section 3, checked apart from `validate`.
fn check_applied(raw: &Value, incoming: &healthsync::sync::Incoming, data_json: &str) {
    let record = &incoming.record;
    let sent_id = raw.get("id").and_then(Value::as_str).unwrap_or("");
    assert_eq!(record.id, canonical_form(sent_id), "id {sent_id:?}");
    assert!(is_canonical_uuid(&record.id), "id {:?}", record.id);

    let sent_data = raw.get("data").and_then(Value::as_object);
    assert_eq!(sent_data, Some(&record.data), "data is the object sent");
    assert_eq!(
        serde_json::to_string(&record.data).ok().as_deref(),
        Some(data_json)
    );
    assert!(
        compact_len(&record.data) <= MAX_RECORD_BYTES,
        "data of {} bytes",
        compact_len(&record.data)
    );
    let depth = json_depth(&Value::Object(record.data.clone()));
    assert!(depth <= MAX_DATA_DEPTH, "data {depth} levels deep");

    let updated_at = raw.get("updated_at").and_then(Value::as_str);
    check_time("updated_at", updated_at, record.updated_at);
    match (raw.get("deleted_at"), record.deleted_at) {
        (None | Some(Value::Null), None) => {}
        (Some(Value::String(text)), Some(millis)) => check_time("deleted_at", Some(text), millis),
        (sent, kept) => panic!("deleted_at {sent:?} kept as {kept:?}"),
    }
    match (raw.get("base_version"), incoming.base_version) {
        (None | Some(Value::Null), None) => {}
        (Some(sent), Some(kept)) => assert_eq!(sent.as_u64(), Some(kept), "base_version"),
        (sent, kept) => panic!("base_version {sent:?} kept as {kept:?}"),
    }
}

fn check_time(field: &str, sent: Option<&str>, kept: i64) {
    let text = sent.unwrap_or_else(|| panic!("{field} applied without a string"));
    assert_eq!(clock::parse_rfc3339(text), Some(kept), "{field} {text:?}");
    assert!(
        (EARLIEST_MS..=NOW_MS + MAX_CLOCK_AHEAD_MS).contains(&kept),
        "{field} {text:?} out of bounds"
    );
}

fn canonical_form(id: &str) -> String {
    id.to_ascii_lowercase()
}

/// 36 characters: lower-case hex digits, hyphens at 8-4-4-4-12; not nil.
fn is_canonical_uuid(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(index, c)| match index {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
        && id.chars().any(|c| c != '0' && c != '-')
}

/// Depth as MySQL's `JSON_DEPTH` counts it: a scalar or an empty container
/// is 1, a container one more than its deepest member.
fn json_depth(value: &Value) -> usize {
    match value {
        Value::Object(object) => 1 + object.values().map(json_depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        _ => 1,
    }
}
