//! Sync under concurrency: several pushers and a pager at once.
//!
//! What these tests pin down (contract sections 4-6): a device that pages
//! with `sync_token` sees every change exactly once, in version order,
//! whatever pushes run meanwhile; a record edited offline with an early
//! `updated_at` and pushed late is still pulled (the seed's bug); a retried
//! push changes nothing; and different users never block each other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::support::{now_ms, parse_ms, register, rfc3339, Resp, Rng, TestDb, User, ENTITIES};

// ---------------------------------------------------------------------------
// Helpers (local to this file on purpose: support.rs belongs to others).

const MEALS: usize = 2;
const EXERCISES: usize = 3;

/// A record as the server holds it, comparable across the wire and the
/// database: data as a JSON value, times in UTC milliseconds.
#[derive(Clone, Debug, PartialEq)]
struct Held {
    data: Value,
    updated_at: i64,
    deleted_at: Option<i64>,
    version: u64,
}

fn held_of_wire(record: &Value) -> (String, Held) {
    let id = record["id"]
        .as_str()
        .unwrap_or_else(|| panic!("record without id: {record}"))
        .to_owned();
    let held = Held {
        data: record["data"].clone(),
        updated_at: parse_ms(record["updated_at"].as_str().unwrap_or_default()),
        deleted_at: record["deleted_at"].as_str().map(parse_ms),
        version: record["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("record without version: {record}")),
    };
    (id, held)
}

/// One row of an entity table, straight from the database.
#[derive(Clone, Debug, PartialEq)]
struct DbRow {
    held: Held,
    server_updated_at: i64,
}

/// Every row the user owns in the five entity tables, keyed by
/// `(entity index, id)`.
fn db_state(db: &TestDb, user_id: &str) -> BTreeMap<(usize, String), DbRow> {
    let mut state = BTreeMap::new();
    for (index, (_, _, table)) in ENTITIES.iter().enumerate() {
        let sql = format!(
            "SELECT id, CAST(data AS CHAR), \
             TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', updated_at) DIV 1000, \
             TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', deleted_at) DIV 1000, \
             version, \
             TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', server_updated_at) DIV 1000 \
             FROM {table} WHERE user_id = '{user_id}'"
        );
        type Row = (String, String, i64, Option<i64>, u64, i64);
        for (id, data, updated_at, deleted_at, version, received) in db.query::<Row>(&sql) {
            let data: Value = serde_json::from_str(&data)
                .unwrap_or_else(|e| panic!("{table}.data of {id} is not JSON: {e}"));
            state.insert(
                (index, id),
                DbRow {
                    held: Held {
                        data,
                        updated_at,
                        deleted_at,
                        version,
                    },
                    server_updated_at: received,
                },
            );
        }
    }
    state
}

fn change_counter(db: &TestDb, user_id: &str) -> u64 {
    db.count(&format!(
        "SELECT change_counter FROM users WHERE id = '{user_id}'"
    ))
}

#[track_caller]
fn ok_data(response: &Resp, what: &str) -> Value {
    assert!(
        response.status == 200 && response.body["success"] == json!(true),
        "{what}: expected 200, got {}: {}\nstderr: {}",
        response.status,
        response.body,
        response.stderr
    );
    response.body["data"].clone()
}

fn record(id: &str, data: Value, updated_at: i64, deleted_at: Option<i64>) -> Value {
    json!({
        "id": id,
        "data": data,
        "updated_at": rfc3339(updated_at),
        "deleted_at": deleted_at.map(rfc3339),
    })
}

fn with_base(mut record: Value, base_version: u64) -> Value {
    record["base_version"] = json!(base_version);
    record
}

fn push(db: &TestDb, token: &str, entity: usize, records: &[Value]) -> Value {
    let (slug, list_key, _) = ENTITIES[entity];
    let response = db
        .post(&format!("/api/{slug}/sync"), &json!({ list_key: records }))
        .token(token)
        .send();
    ok_data(&response, &format!("push to {slug}"))
}

/// `{id: version}` of a push section's `applied`.
fn applied_versions(section: &Value) -> Vec<(String, u64)> {
    section["applied"]
        .as_array()
        .unwrap_or_else(|| panic!("no applied list: {section}"))
        .iter()
        .map(|entry| {
            (
                entry["id"].as_str().unwrap_or_default().to_owned(),
                entry["version"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("applied entry without version: {entry}")),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Pagers against concurrent pushers.

/// What a pusher last wrote to one of its records, and the version the
/// server acknowledged for it.
#[derive(Clone, Debug)]
struct Own {
    entity: usize,
    held: Held,
}

const PUSHERS: usize = 4;
const BATCHES: usize = 20;
const BATCH_SIZE: usize = 5;
const PAGE: usize = 3;

/// One pusher thread: `BATCHES` batches of `BATCH_SIZE` records, mixing new
/// records, edits (with `base_version`) and tombstones of its own earlier
/// records. Per-entity pushes (meals half the time), and with `bulk` some
/// batches go through `/sync/bulk` spread over several entities. Every push
/// must succeed without conflict or error. Returns what it last wrote to
/// each of its records.
fn run_pusher(db: &TestDb, token: &str, thread: u64, bulk: bool) -> HashMap<String, Own> {
    let mut rng = Rng(0xC0FF_EE00 + thread);
    let mut own: HashMap<String, Own> = HashMap::new();
    for batch in 0..BATCHES {
        let via_bulk = bulk && rng.chance(40);
        let batch_entity = if rng.chance(50) {
            MEALS
        } else {
            rng.below(ENTITIES.len())
        };
        let mut chosen: HashSet<String> = HashSet::new();
        // (entity, record as sent, the record as it will be held)
        let mut sent: Vec<(usize, Value, String, Held)> = Vec::new();
        for slot in 0..BATCH_SIZE {
            let entity = if via_bulk {
                rng.below(ENTITIES.len())
            } else {
                batch_entity
            };
            let mut candidates: Vec<(&String, &Own)> = own
                .iter()
                .filter(|(id, o)| {
                    o.entity == entity && o.held.deleted_at.is_none() && !chosen.contains(*id)
                })
                .collect();
            candidates.sort_by(|a, b| a.0.cmp(b.0));
            let now = now_ms();
            let data = json!({"thread": thread, "batch": batch, "slot": slot, "note": format!("t{thread} b{batch} s{slot}")});
            let roll = rng.below(100);
            let (id, base, deleted_at) = if !candidates.is_empty() && roll < 45 {
                let (id, o) = candidates[rng.below(candidates.len())];
                let deleted_at = if roll < 12 { Some(now) } else { None };
                (id.clone(), Some(o.held.version), deleted_at)
            } else {
                (rng.uuid(), None, None)
            };
            chosen.insert(id.clone());
            let mut wire = record(&id, data.clone(), now, deleted_at);
            if let Some(base) = base {
                wire = with_base(wire, base);
            }
            let held = Held {
                data,
                updated_at: now,
                deleted_at,
                version: 0,
            };
            sent.push((entity, wire, id, held));
        }

        let mut versions: HashMap<String, u64> = HashMap::new();
        if via_bulk {
            let mut body = Map::new();
            for (entity, wire, _, _) in &sent {
                let key = ENTITIES[*entity].2;
                body.entry(key)
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .unwrap_or_else(|| panic!("bulk list"))
                    .push(wire.clone());
            }
            // A pusher is not the pager: keep its page of changes tiny.
            body.insert("limit".into(), json!(1));
            let response = db
                .post("/api/sync/bulk", &Value::Object(body.clone()))
                .token(token)
                .send();
            let data = ok_data(&response, &format!("bulk push of pusher {thread}"));
            for (_, _, key) in ENTITIES {
                let section = &data[key];
                assert_eq!(section["conflicts"], json!(0), "bulk {key}: {section}");
                assert_eq!(section["errors"], json!([]), "bulk {key}: {section}");
                let list_len = body.get(key).and_then(Value::as_array).map_or(0, Vec::len);
                assert_eq!(section["synced"], json!(list_len), "bulk {key}: {section}");
                let applied = applied_versions(section);
                assert_eq!(applied.len(), list_len, "bulk {key}: {section}");
                assert!(
                    applied.windows(2).all(|w| w[0].1 < w[1].1),
                    "bulk {key}: versions must follow the body order: {section}"
                );
                versions.extend(applied);
            }
        } else {
            let records: Vec<Value> = sent.iter().map(|(_, wire, _, _)| wire.clone()).collect();
            let data = push(db, token, batch_entity, &records);
            assert_eq!(data["conflicts"], json!(0), "{data}");
            assert_eq!(data["errors"], json!([]), "{data}");
            assert_eq!(data["synced"], json!(BATCH_SIZE), "{data}");
            let applied = applied_versions(&data);
            let ids: Vec<&String> = sent.iter().map(|(_, _, id, _)| id).collect();
            let applied_ids: Vec<&String> = applied.iter().map(|(id, _)| id).collect();
            assert_eq!(
                applied_ids, ids,
                "applied must list the batch in body order"
            );
            assert!(
                applied.windows(2).all(|w| w[0].1 < w[1].1),
                "versions must follow the body order: {data}"
            );
            versions.extend(applied);
        }
        for (entity, _, id, mut held) in sent {
            held.version = *versions
                .get(&id)
                .unwrap_or_else(|| panic!("{id} missing from applied"));
            own.insert(id, Own { entity, held });
        }
    }
    own
}

/// Counts a pusher as finished when dropped, also when it panicked, so
/// the pager stops and the failure is reported instead of a hang.
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// One page of a pager: `(entity, record)` in the order received, whether
/// more remain, and the cursor to continue from.
type Page = (Vec<(usize, Value)>, bool, String);

/// Pages with `fetch` until `has_more` is false, again after a pause, until
/// every pusher is done, then a final drain. Asserts the exactly-once and
/// order rules on every page (records in the order `fetch` gives them);
/// returns the last version seen of each record, the number of pages and
/// of non-empty pages received while pushers still ran.
fn run_pager(
    finished: &AtomicUsize,
    mut fetch: impl FnMut(Option<&str>) -> Page,
) -> (BTreeMap<(usize, String), Held>, usize, usize) {
    let mut cursor: Option<String> = None;
    let mut seen: HashSet<(usize, String, u64)> = HashSet::new();
    let mut latest: BTreeMap<(usize, String), Held> = BTreeMap::new();
    let mut last_version = 0u64;
    let mut pages = 0usize;
    let mut pages_during_pushes = 0usize;
    loop {
        let pushers_done = finished.load(Ordering::SeqCst) == PUSHERS;
        loop {
            let (records, has_more, next) = fetch(cursor.as_deref());
            pages += 1;
            if !records.is_empty() && finished.load(Ordering::SeqCst) < PUSHERS {
                pages_during_pushes += 1;
            }
            assert!(
                records.len() <= PAGE,
                "page of {} records with limit {PAGE}",
                records.len()
            );
            assert!(
                !has_more || records.len() == PAGE,
                "has_more on a page of {} records (limit {PAGE}) after cursor {cursor:?}",
                records.len()
            );
            for (entity, record) in &records {
                let (id, held) = held_of_wire(record);
                let entity = *entity;
                assert!(
                    held.version > last_version,
                    "after cursor {cursor:?}: version {} of {id} is not after the last version seen, {last_version}",
                    held.version
                );
                last_version = held.version;
                assert!(
                    seen.insert((entity, id.clone(), held.version)),
                    "({id}, {}) received twice",
                    held.version
                );
                latest.insert((entity, id), held);
            }
            cursor = Some(next);
            if !has_more {
                break;
            }
        }
        if pushers_done {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Else the pushers ran before or after the pager, not with it.
    assert!(
        pages_during_pushes >= 2,
        "only {pages_during_pushes} non-empty pages arrived while pushers ran"
    );
    (latest, pages, pages_during_pushes)
}

/// Every pusher's last write is what the server holds (no lost update).
fn assert_pushers_hold(
    state: &BTreeMap<(usize, String), DbRow>,
    pushed: &[HashMap<String, Own>],
) -> usize {
    let mut total = 0;
    for (thread, own) in pushed.iter().enumerate() {
        for (id, o) in own {
            let row = state
                .get(&(o.entity, id.clone()))
                .unwrap_or_else(|| panic!("pusher {thread}'s {id} is not in the database"));
            assert_eq!(
                row.held, o.held,
                "pusher {thread}'s {id}: the server holds something else than its acknowledged last write"
            );
            total += 1;
        }
    }
    assert_eq!(total, state.len(), "rows nobody pushed");
    total
}

/// Compares what a pager ended with to the database, over `entities`.
fn assert_pager_matches(
    latest: &BTreeMap<(usize, String), Held>,
    state: &BTreeMap<(usize, String), DbRow>,
    entities: &[usize],
) {
    let expected: BTreeMap<(usize, String), Held> = state
        .iter()
        .filter(|((entity, _), _)| entities.contains(entity))
        .map(|(key, row)| (key.clone(), row.held.clone()))
        .collect();
    let missing: Vec<_> = expected
        .keys()
        .filter(|key| !latest.contains_key(*key))
        .collect();
    let extra: Vec<_> = latest
        .keys()
        .filter(|key| !expected.contains_key(*key))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the pager never received {missing:?}; it received records the server does not hold: {extra:?}"
    );
    for (key, held) in &expected {
        assert_eq!(
            latest.get(key),
            Some(held),
            "{key:?}: the last version the pager saw is not the server's final state"
        );
    }
}

#[test]
fn pager_sees_every_change_exactly_once_under_concurrent_pushes() {
    let started = Instant::now();
    let db = TestDb::new();
    let user = register(&db, "pager@example.com");
    let finished = AtomicUsize::new(0);
    let (pushed, (latest, pages, during)) = std::thread::scope(|scope| {
        let pushers: Vec<_> = (0..PUSHERS as u64)
            .map(|thread| {
                let (db, token, finished) = (&db, user.token.as_str(), &finished);
                scope.spawn(move || {
                    let _finished = Finished(finished);
                    run_pusher(db, token, thread, false)
                })
            })
            .collect();
        let pager = scope.spawn(|| {
            run_pager(&finished, |cursor| {
                let path = match cursor {
                    None => format!("/api/meals?limit={PAGE}"),
                    Some(token) => format!("/api/meals?sync_token={token}&limit={PAGE}"),
                };
                let response = db
                    .get(&path)
                    .token(&user.token)
                    .var("HTTP_X_DEVICE_ID", "pager")
                    .send();
                let data = ok_data(&response, &format!("GET {path}"));
                let records = data["meals"]
                    .as_array()
                    .unwrap_or_else(|| panic!("no meals list: {data}"))
                    .iter()
                    .map(|r| (MEALS, r.clone()))
                    .collect();
                let has_more = data["has_more"]
                    .as_bool()
                    .unwrap_or_else(|| panic!("no has_more: {data}"));
                let next = data["next_sync_token"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no next_sync_token: {data}"))
                    .to_owned();
                (records, has_more, next)
            })
        });
        let pushed: Vec<_> = pushers
            .into_iter()
            .map(|p| p.join().unwrap_or_else(|_| panic!("a pusher failed")))
            .collect();
        let pager = pager.join().unwrap_or_else(|_| panic!("the pager failed"));
        (pushed, pager)
    });

    let state = db_state(&db, &user.id);
    let total = assert_pushers_hold(&state, &pushed);
    assert_pager_matches(&latest, &state, &[MEALS]);
    // The comparison set: every meal the user holds, tombstones included.
    let meals = state.keys().filter(|(entity, _)| *entity == MEALS).count();
    assert!(meals > 20, "too few meals to mean anything: {meals}");
    assert_eq!(latest.len(), meals);
    // And a full pull from no cursor agrees with the database too.
    let full = full_pull(&db, &user, MEALS);
    assert_pager_matches(&full, &state, &[MEALS]);
    eprintln!(
        "pager: {pages} pages ({during} non-empty while pushing), {meals} meals of {total} records, {:.1?}",
        started.elapsed()
    );
}

#[test]
fn bulk_pager_sees_every_change_exactly_once_across_entities() {
    let started = Instant::now();
    let db = TestDb::new();
    let user = register(&db, "bulk-pager@example.com");
    let finished = AtomicUsize::new(0);
    let (pushed, (latest, pages, during)) = std::thread::scope(|scope| {
        let pushers: Vec<_> = (0..PUSHERS as u64)
            .map(|thread| {
                let (db, token, finished) = (&db, user.token.as_str(), &finished);
                scope.spawn(move || {
                    let _finished = Finished(finished);
                    run_pusher(db, token, 100 + thread, true)
                })
            })
            .collect();
        let pager = scope.spawn(|| {
            run_pager(&finished, |cursor| {
                let mut body = json!({ "limit": PAGE });
                if let Some(token) = cursor {
                    body["sync_token"] = json!(token);
                }
                let page = bulk_pull(&db, &user.token, "bulk-pager", &body);
                (page.records, page.has_more, page.sync_token)
            })
        });
        let pushed: Vec<_> = pushers
            .into_iter()
            .map(|p| p.join().unwrap_or_else(|_| panic!("a pusher failed")))
            .collect();
        let pager = pager.join().unwrap_or_else(|_| panic!("the pager failed"));
        (pushed, pager)
    });

    let state = db_state(&db, &user.id);
    let total = assert_pushers_hold(&state, &pushed);
    let all: Vec<usize> = (0..ENTITIES.len()).collect();
    assert_pager_matches(&latest, &state, &all);
    // Versions are one per write, so the number of distinct versions seen
    // is at least the number of records.
    assert_eq!(latest.len(), total);
    eprintln!(
        "bulk pager: {pages} pages ({during} non-empty while pushing), {total} records, {:.1?}",
        started.elapsed()
    );
}

/// One answer of a pure-pull bulk.
struct BulkPage {
    /// `(entity, record)` across the five sections, in version order.
    records: Vec<(usize, Value)>,
    has_more: bool,
    sync_token: String,
    sync_timestamp: String,
}

fn bulk_pull(db: &TestDb, token: &str, device: &str, body: &Value) -> BulkPage {
    let response = db
        .post("/api/sync/bulk", body)
        .token(token)
        .var("HTTP_X_DEVICE_ID", device)
        .send();
    let data = ok_data(&response, &format!("{device}: bulk pull {body}"));
    let mut records = Vec::new();
    for (index, (_, _, key)) in ENTITIES.iter().enumerate() {
        let section = &data[*key];
        assert_eq!(section["applied"], json!([]), "pure pull: {section}");
        let updates = section["server_updates"]
            .as_array()
            .unwrap_or_else(|| panic!("no server_updates in {key}: {data}"));
        let versions: Vec<u64> = updates
            .iter()
            .map(|r| r["version"].as_u64().unwrap_or(0))
            .collect();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{key}: versions not ascending: {versions:?}"
        );
        records.extend(updates.iter().map(|r| (index, r.clone())));
    }
    // One page across entities: compared in version order.
    records.sort_by_key(|(_, r)| r["version"].as_u64().unwrap_or(0));
    let text = |key: &str| {
        data[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key}: {data}"))
            .to_owned()
    };
    BulkPage {
        records,
        has_more: data["has_more"]
            .as_bool()
            .unwrap_or_else(|| panic!("no has_more: {data}")),
        sync_token: text("sync_token"),
        sync_timestamp: text("sync_timestamp"),
    }
}

/// A seed client: bulk pulls with `last_sync_at` = the `sync_timestamp` of
/// its last complete pull (paging on with `sync_token` while `has_more`),
/// against the same pushers. Contract sections 5-6: `since`/`last_sync_at`
/// is the server's receive time, exact, and paged the same way.
#[test]
fn last_sync_at_pager_sees_every_change_exactly_once_under_concurrent_pushes() {
    let started = Instant::now();
    let db = TestDb::new();
    let user = register(&db, "since-pager@example.com");
    let finished = AtomicUsize::new(0);
    let (pushed, (latest, pages, during)) = std::thread::scope(|scope| {
        let pushers: Vec<_> = (0..PUSHERS as u64)
            .map(|thread| {
                let (db, token, finished) = (&db, user.token.as_str(), &finished);
                scope.spawn(move || {
                    let _finished = Finished(finished);
                    run_pusher(db, token, 200 + thread, true)
                })
            })
            .collect();
        let pager = scope.spawn(|| {
            // The pager's cursor, spelled "since <time>" after a complete
            // pull and "token <token>" in the middle of a paged one.
            run_pager(&finished, |cursor| {
                let mut body = json!({ "limit": PAGE });
                match cursor.map(|c| c.split_once(' ').unwrap_or(("", c))) {
                    None => {}
                    Some(("since", at)) => body["last_sync_at"] = json!(at),
                    Some((_, token)) => body["sync_token"] = json!(token),
                }
                let page = bulk_pull(&db, &user.token, "since-pager", &body);
                let next = if page.has_more {
                    format!("token {}", page.sync_token)
                } else {
                    format!("since {}", page.sync_timestamp)
                };
                (page.records, page.has_more, next)
            })
        });
        let pushed: Vec<_> = pushers
            .into_iter()
            .map(|p| p.join().unwrap_or_else(|_| panic!("a pusher failed")))
            .collect();
        let pager = pager.join().unwrap_or_else(|_| panic!("the pager failed"));
        (pushed, pager)
    });

    let state = db_state(&db, &user.id);
    let total = assert_pushers_hold(&state, &pushed);
    let all: Vec<usize> = (0..ENTITIES.len()).collect();
    assert_pager_matches(&latest, &state, &all);
    eprintln!(
        "last_sync_at pager: {pages} pages ({during} non-empty while pushing), {total} records, {:.1?}",
        started.elapsed()
    );
}

/// Every record of one entity, paged from no cursor.
fn full_pull(db: &TestDb, user: &User, entity: usize) -> BTreeMap<(usize, String), Held> {
    let (slug, list_key, _) = ENTITIES[entity];
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/api/{slug}?limit=1000"),
            Some(token) => format!("/api/{slug}?sync_token={token}&limit=1000"),
        };
        let data = ok_data(&db.get(&path).token(&user.token).send(), &path);
        for record in data[list_key].as_array().cloned().unwrap_or_default() {
            let (id, held) = held_of_wire(&record);
            out.insert((entity, id), held);
        }
        cursor = data["next_sync_token"].as_str().map(str::to_owned);
        if data["has_more"] != json!(true) {
            return out;
        }
    }
}

// ---------------------------------------------------------------------------
// 2. The seed's bug: an early `updated_at` pushed late is still pulled.

fn pull_page(db: &TestDb, user: &User, device: &str, path: &str) -> Value {
    let response = db
        .get(path)
        .token(&user.token)
        .var("HTTP_X_DEVICE_ID", device)
        .send();
    ok_data(&response, &format!("{device}: GET {path}"))
}

fn ids_of(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_record_edited_offline_before_another_device_synced_is_still_pulled() {
    let db = TestDb::new();
    let user = register(&db, "offline@example.com");
    let mut rng = Rng(7);
    let start = now_ms();
    let token = user.token.as_str();

    // A record every device knows: W, pushed by C, pulled by A and B.
    let w = rng.uuid();
    let w_data = json!({"name": "porridge", "date": "2024-05-01", "calories": 300});
    let first = push(
        &db,
        token,
        MEALS,
        &[record(&w, w_data.clone(), start - 60_000, None)],
    );
    let w_version = applied_versions(&first)[0].1;

    // A syncs: a pull from nothing gives W and the token T.
    let a1 = pull_page(&db, &user, "A", "/api/meals");
    assert_eq!(ids_of(&a1["meals"]), vec![w.clone()]);
    let t1 = a1["next_sync_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let a_synced_at = now_ms();

    // B, offline, writes a new meal X and edits W, both stamped an hour
    // before A's sync (B's clock is behind, or B just sat on them).
    let early = a_synced_at - 3_600_000;
    let x = rng.uuid();
    let x_data = json!({"name": "toast", "date": "2024-05-01", "calories": 150});
    let w_edit = json!({"name": "porridge with honey", "date": "2024-05-01", "calories": 360});

    // C pushes something else; A pulls with T and gets it.
    std::thread::sleep(Duration::from_millis(5));
    let y = rng.uuid();
    let y_data = json!({"name": "salad", "date": "2024-05-01", "calories": 200});
    push(&db, token, MEALS, &[record(&y, y_data, now_ms(), None)]);
    let a2 = pull_page(&db, &user, "A", &format!("/api/meals?sync_token={t1}"));
    assert_eq!(
        ids_of(&a2["meals"]),
        vec![y.clone()],
        "A's second pull: {a2}"
    );
    let t2 = a2["next_sync_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // Only now does B push its early-stamped writes: X is new (no
    // base_version: an insert), W carries the version B saw (rule 3).
    let b = push(
        &db,
        token,
        MEALS,
        &[
            record(&x, x_data.clone(), early, None),
            with_base(record(&w, w_edit.clone(), early, None), w_version),
        ],
    );
    assert_eq!(b["synced"], json!(2), "B's push: {b}");
    assert_eq!(b["conflicts"], json!(0), "B's push: {b}");
    let b_applied = applied_versions(&b);

    // A pulls with its latest token and must receive both, although their
    // updated_at is an hour older than A's last sync.
    let a3 = pull_page(&db, &user, "A", &format!("/api/meals?sync_token={t2}"));
    assert_eq!(
        ids_of(&a3["meals"]),
        vec![x.clone(), w.clone()],
        "A must receive B's late push of early-stamped records: {a3}"
    );
    let got: Vec<(String, Held)> = a3["meals"]
        .as_array()
        .unwrap_or_else(|| panic!("meals"))
        .iter()
        .map(held_of_wire)
        .collect();
    assert_eq!(got[0].1.data, x_data);
    assert_eq!(got[0].1.updated_at, early);
    assert_eq!(got[0].1.version, b_applied[0].1);
    assert_eq!(got[1].1.data, w_edit);
    assert_eq!(got[1].1.version, b_applied[1].1);
    assert_eq!(a3["has_more"], json!(false));
    let t3 = a3["next_sync_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let a4 = pull_page(&db, &user, "A", &format!("/api/meals?sync_token={t3}"));
    assert_eq!(a4["meals"], json!([]), "nothing twice: {a4}");

    // The same with `since`: the server's receive time, not updated_at.
    // A bulk (a pure pull) gives sync_timestamp S.
    let bulk = db
        .post("/api/sync/bulk", &json!({}))
        .token(token)
        .var("HTTP_X_DEVICE_ID", "A")
        .send();
    let bulk = ok_data(&bulk, "A's bulk");
    let s = bulk["sync_timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("no sync_timestamp: {bulk}"))
        .to_owned();
    assert_eq!(
        ids_of(&bulk["meals"]["server_updates"]).len(),
        3,
        "a bulk with no cursor returns every record: {bulk}"
    );

    // B pushes an exercise and a meal stamped two hours before S.
    let early = parse_ms(&s) - 7_200_000;
    let z = rng.uuid();
    let z_data = json!({"kind": "walk", "minutes": 30});
    let v = rng.uuid();
    let v_data = json!({"name": "soup", "date": "2024-05-02", "calories": 250});
    let bz = push(
        &db,
        token,
        EXERCISES,
        &[record(&z, z_data.clone(), early, None)],
    );
    assert_eq!(bz["synced"], json!(1), "{bz}");
    let bv = push(
        &db,
        token,
        MEALS,
        &[record(&v, v_data.clone(), early, None)],
    );
    assert_eq!(bv["synced"], json!(1), "{bv}");

    // `since=S` per entity: exactly the writes received after S.
    let since = |slug: &str| {
        pull_page(
            &db,
            &user,
            "A",
            &format!("/api/{slug}?since={}", s.replace('+', "%2B")),
        )
    };
    let exercises = since("exercises");
    assert_eq!(
        ids_of(&exercises["exercises"]),
        vec![z.clone()],
        "since={s}: {exercises}"
    );
    assert_eq!(exercises["exercises"][0]["data"], z_data);
    let meals = since("meals");
    assert_eq!(
        ids_of(&meals["meals"]),
        vec![v.clone()],
        "since={s} must give the late push and nothing received before S: {meals}"
    );
    assert_eq!(since("health-metrics")["metrics"], json!([]));

    // `last_sync_at=S` in a bulk: the same two, nothing else.
    let bulk = db
        .post("/api/sync/bulk", &json!({ "last_sync_at": s }))
        .token(token)
        .var("HTTP_X_DEVICE_ID", "A")
        .send();
    let bulk = ok_data(&bulk, "A's bulk with last_sync_at");
    let mut got: Vec<(String, String)> = Vec::new();
    for (_, _, key) in ENTITIES {
        for id in ids_of(&bulk[key]["server_updates"]) {
            got.push((key.to_owned(), id));
        }
    }
    got.sort();
    let mut want = vec![("exercises".to_owned(), z), ("meals".to_owned(), v)];
    want.sort();
    assert_eq!(got, want, "bulk with last_sync_at={s}: {bulk}");
}

// ---------------------------------------------------------------------------
// 3. A retried push is rule 2: same answer, nothing written.

/// The user's rows and change counter, to compare before and after.
fn snapshot(db: &TestDb, user_id: &str) -> (BTreeMap<(usize, String), DbRow>, u64) {
    (db_state(db, user_id), change_counter(db, user_id))
}

#[test]
fn the_same_push_three_times_gives_the_same_state_and_versions_as_once() {
    let db = TestDb::new();
    let mut rng = Rng(33);
    let t0 = now_ms() - 600_000;

    // --- Per-entity push to /meals/sync.
    let user = register(&db, "retry@example.com");
    let token = user.token.as_str();
    let meal =
        |name: &str, date: &str, kcal: u32| json!({"name": name, "date": date, "calories": kcal});
    let (m1, m2, m3, m4) = (rng.uuid(), rng.uuid(), rng.uuid(), rng.uuid());
    let setup = push(
        &db,
        token,
        MEALS,
        &[
            record(&m1, meal("eggs", "2024-05-01", 200), t0, None),
            record(&m2, meal("cake", "2024-05-01", 500), t0, None),
            record(&m3, meal("rice", "2024-05-01", 300), t0, None),
            record(&m4, meal("stew", "2024-05-01", 450), t0, None),
        ],
    );
    let v: HashMap<String, u64> = applied_versions(&setup).into_iter().collect();
    // Another device moves M4 on; this device has not seen it.
    push(
        &db,
        token,
        MEALS,
        &[with_base(
            record(&m4, meal("stew", "2024-05-01", 470), t0 + 1_000, None),
            v[&m4],
        )],
    );

    let (n1, n2) = (rng.uuid(), rng.uuid());
    let body = json!({"meals": [
        record(&n1, meal("apple", "2024-05-02", 80), t0 + 2_000, None),
        with_base(record(&m1, meal("eggs", "2024-05-01", 220), t0 + 2_000, None), v[&m1]),
        with_base(record(&m2, meal("cake", "2024-05-01", 500), t0 + 2_000, Some(t0 + 2_000)), v[&m2]),
        // An edit to another date on a stale base: kept both.
        with_base(record(&m4, meal("stew", "2024-05-03", 450), t0 + 2_000, None), v[&m4]),
        // Unchanged resend: rule 2 already on the first push.
        record(&m3, meal("rice", "2024-05-01", 300), t0, None),
        record(&n2, meal("pear", "2024-05-02", 90), t0 + 2_000, None),
    ]});
    let send = || {
        ok_data(
            &db.post("/api/meals/sync", &body).token(token).send(),
            "meals push",
        )
    };
    let first = send();
    let after_first = snapshot(&db, &user.id);
    assert_eq!(first["synced"], json!(5), "{first}");
    assert_eq!(first["conflicts"], json!(1), "{first}");
    assert_eq!(first["errors"], json!([]), "{first}");
    assert_eq!(
        first["conflict_details"][0]["resolution"],
        json!("kept_both"),
        "{first}"
    );
    let updates = first["server_updates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(updates.len(), 2, "server's M4 and the kept copy: {first}");
    assert_eq!(updates[0]["id"], json!(m4));
    let derived = updates[1]["id"].as_str().unwrap_or_default().to_owned();
    assert_ne!(derived, m4);
    assert_eq!(updates[1]["data"], meal("stew", "2024-05-03", 450));
    let applied = applied_versions(&first);
    assert_eq!(
        applied.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        vec![n1.clone(), m1.clone(), m2.clone(), m3.clone(), n2.clone()]
    );
    assert_eq!(
        applied[3].1, v[&m3],
        "an unchanged resend keeps its version"
    );
    assert_ne!(first["previous_sync_token"], first["sync_token"]);

    for attempt in 2..=3 {
        let again = send();
        for key in [
            "synced",
            "conflicts",
            "errors",
            "applied",
            "conflict_details",
            "server_updates",
        ] {
            assert_eq!(
                again[key], first[key],
                "meals push #{attempt}: `{key}` differs from the first answer\nfirst: {first}\nagain: {again}"
            );
        }
        assert_eq!(
            again["sync_token"], first["sync_token"],
            "meals push #{attempt} wrote something: {again}"
        );
        assert_eq!(again["previous_sync_token"], first["sync_token"], "{again}");
    }
    let after_third = snapshot(&db, &user.id);
    assert_eq!(
        after_third, after_first,
        "the database changed between the first and the third push"
    );
    assert_eq!(
        after_third.0.len(),
        7,
        "M1-M4, N1, N2 and one kept copy, never a further one"
    );

    // --- The same through /sync/bulk, across entities, with merges.
    let user = register(&db, "retry-bulk@example.com");
    let token = user.token.as_str();
    let (h1, h2, md1, md2, e1, p1, ml1) = (
        rng.uuid(),
        rng.uuid(),
        rng.uuid(),
        rng.uuid(),
        rng.uuid(),
        rng.uuid(),
        rng.uuid(),
    );
    let mut setup = Map::new();
    setup.insert(
        "health_metrics".into(),
        json!([
            record(&h1, json!({"type": "weight", "value": 70}), t0, None),
            record(
                &h2,
                json!({"type": "bp", "value": 120, "notes": "morning"}),
                t0,
                None
            ),
        ]),
    );
    setup.insert(
        "medications".into(),
        json!([
            record(
                &md1,
                json!({"name": "ibuprofen", "sideEffects": ["nausea"]}),
                t0,
                None
            ),
            record(
                &md2,
                json!({"name": "aspirin", "sideEffects": []}),
                t0,
                None
            ),
        ]),
    );
    setup.insert(
        "meal_plans".into(),
        json!([record(&p1, json!({"title": "week 1", "days": 7}), t0, None)]),
    );
    setup.insert(
        "meals".into(),
        json!([record(&ml1, meal("stew", "2024-05-01", 450), t0, None)]),
    );
    let setup = ok_data(
        &db.post("/api/sync/bulk", &Value::Object(setup))
            .token(token)
            .send(),
        "bulk setup",
    );
    let mut v: HashMap<String, u64> = HashMap::new();
    for (_, _, key) in ENTITIES {
        v.extend(applied_versions(&setup[key]));
    }
    // Another device edits H2, MD2 and ML1 meanwhile.
    let other = ok_data(
        &db.post(
            "/api/sync/bulk",
            &json!({
                "health_metrics": [with_base(record(&h2, json!({"type": "bp", "value": 125, "notes": "evening", "pulse": 60}), t0 + 1_000, None), v[&h2])],
                "medications": [with_base(record(&md2, json!({"name": "aspirin", "sideEffects": ["headache"]}), t0 + 1_000, None), v[&md2])],
                "meals": [with_base(record(&ml1, meal("stew", "2024-05-01", 470), t0 + 1_000, None), v[&ml1])],
            }),
        )
        .token(token)
        .send(),
        "other device",
    );
    let cursor = other["sync_token"].clone();

    let e2 = rng.uuid();
    let body = json!({
        "sync_token": cursor,
        "health_metrics": [
            with_base(record(&h1, json!({"type": "weight", "value": 71}), t0 + 2_000, None), v[&h1]),
            // Concurrent with the other device's edit: merged.
            with_base(record(&h2, json!({"type": "bp", "value": 118, "notes": "after coffee"}), t0 + 2_000, None), v[&h2]),
        ],
        "medications": [
            with_base(record(&md1, json!({"name": "ibuprofen", "sideEffects": ["nausea"]}), t0 + 2_000, Some(t0 + 2_000)), v[&md1]),
            with_base(record(&md2, json!({"name": "aspirin", "sideEffects": ["dizziness"]}), t0 + 2_000, None), v[&md2]),
        ],
        "meals": [
            with_base(record(&ml1, meal("stew", "2024-05-04", 450), t0 + 2_000, None), v[&ml1]),
        ],
        "exercises": [
            record(&e1, json!({"kind": "run", "minutes": 30}), t0 + 2_000, None),
            record(&e2, json!({"kind": "swim", "minutes": 45}), t0 + 2_000, None),
        ],
        "meal_plans": [
            with_base(record(&p1, json!({"title": "week 1", "days": 5}), t0 + 2_000, None), v[&p1]),
        ],
    });
    let send = || {
        ok_data(
            &db.post("/api/sync/bulk", &body).token(token).send(),
            "bulk push",
        )
    };
    let first = send();
    let after_first = snapshot(&db, &user.id);
    assert_eq!(first["health_metrics"]["conflicts"], json!(1), "{first}");
    assert_eq!(
        first["health_metrics"]["conflict_details"][0]["resolution"],
        json!("merged"),
        "{first}"
    );
    assert_eq!(
        first["medications"]["conflict_details"][0]["resolution"],
        json!("merged"),
        "{first}"
    );
    assert_eq!(
        first["meals"]["conflict_details"][0]["resolution"],
        json!("kept_both"),
        "{first}"
    );
    for attempt in 2..=3 {
        let again = send();
        for (_, _, key) in ENTITIES {
            for field in ["synced", "applied", "errors"] {
                assert_eq!(
                    again[key][field], first[key][field],
                    "bulk push #{attempt}: {key}.{field} differs\nfirst: {first}\nagain: {again}"
                );
            }
        }
        // The kept-both answer is the same: the server's meal and the same
        // derived copy, not a further one.
        let kept = |data: &Value| {
            data["meals"]["server_updates"]
                .as_array()
                .cloned()
                .unwrap_or_default()[..2]
                .to_vec()
        };
        assert_eq!(kept(&again), kept(&first), "bulk push #{attempt}: {again}");
        assert_eq!(
            again["meals"]["conflict_details"], first["meals"]["conflict_details"],
            "bulk push #{attempt}"
        );
        assert_eq!(
            again["sync_token"], first["sync_token"],
            "bulk push #{attempt} wrote something: {again}"
        );
        assert_eq!(again["previous_sync_token"], first["sync_token"], "{again}");
    }
    let after_third = snapshot(&db, &user.id);
    assert_eq!(
        after_third, after_first,
        "the database changed between the first and the third bulk push"
    );
    assert_eq!(
        after_third
            .0
            .keys()
            .filter(|(entity, _)| *entity == MEALS)
            .count(),
        2,
        "ML1 and one kept copy"
    );
}

// ---------------------------------------------------------------------------
// 4. Different users at once.

/// One user's thread: the `(entity, id)` of every record it pushed, and
/// what went wrong.
type UserOutcome = (Vec<(usize, String)>, Vec<String>);

#[test]
fn different_users_pushing_at_once_do_not_deadlock_or_fail() {
    const USERS: usize = 6;
    const PUSHES: usize = 10;
    const PER_PUSH: usize = 20;
    let started = Instant::now();
    let db = TestDb::new();
    let users: Vec<User> = (0..USERS)
        .map(|n| register(&db, &format!("parallel{n}@example.com")))
        .collect();
    let barrier = std::sync::Barrier::new(USERS);
    let results: Vec<UserOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = users
            .iter()
            .enumerate()
            .map(|(n, user)| {
                let (db, barrier) = (&db, &barrier);
                scope.spawn(move || {
                    let mut rng = Rng(0xABCD + n as u64);
                    let mut mine = Vec::new();
                    let mut failures = Vec::new();
                    barrier.wait();
                    for round in 0..PUSHES {
                        let via_bulk = rng.chance(30);
                        let entity = rng.below(ENTITIES.len());
                        let now = now_ms();
                        let records: Vec<(usize, Value)> = (0..PER_PUSH)
                            .map(|k| {
                                let entity = if via_bulk {
                                    rng.below(ENTITIES.len())
                                } else {
                                    entity
                                };
                                let id = rng.uuid();
                                (
                                    entity,
                                    record(
                                        &id,
                                        json!({"user": n, "round": round, "k": k}),
                                        now,
                                        None,
                                    ),
                                )
                            })
                            .collect();
                        let response = if via_bulk {
                            let mut body = Map::new();
                            for (entity, r) in &records {
                                body.entry(ENTITIES[*entity].2)
                                    .or_insert_with(|| json!([]))
                                    .as_array_mut()
                                    .unwrap_or_else(|| panic!("list"))
                                    .push(r.clone());
                            }
                            body.insert("limit".into(), json!(1));
                            db.post("/api/sync/bulk", &Value::Object(body))
                                .token(&user.token)
                                .send()
                        } else {
                            let (slug, list_key, _) = ENTITIES[entity];
                            let list: Vec<Value> = records.iter().map(|(_, r)| r.clone()).collect();
                            db.post(&format!("/api/{slug}/sync"), &json!({ list_key: list }))
                                .token(&user.token)
                                .send()
                        };
                        if response.status != 200 {
                            failures.push(format!(
                                "user {n} push {round}: {} {}",
                                response.status, response.body
                            ));
                            continue;
                        }
                        let data = &response.body["data"];
                        let applied: usize = if via_bulk {
                            ENTITIES
                                .iter()
                                .map(|(_, _, key)| {
                                    data[*key]["applied"].as_array().map_or(0, Vec::len)
                                })
                                .sum()
                        } else {
                            data["applied"].as_array().map_or(0, Vec::len)
                        };
                        if applied != PER_PUSH {
                            failures
                                .push(format!("user {n} push {round}: applied {applied}: {data}"));
                        }
                        for (entity, r) in records {
                            mine.push((entity, r["id"].as_str().unwrap_or_default().to_owned()));
                        }
                    }
                    (mine, failures)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("a pusher thread panicked"))
            })
            .collect()
    });
    let failures: Vec<&String> = results.iter().flat_map(|(_, f)| f).collect();
    assert!(failures.is_empty(), "pushes failed:\n{failures:#?}");
    for (user, (mine, _)) in users.iter().zip(&results) {
        let state = db_state(&db, &user.id);
        let mut want: Vec<(usize, String)> = mine.clone();
        want.sort();
        let got: Vec<(usize, String)> = state.keys().cloned().collect();
        assert_eq!(got.len(), PUSHES * PER_PUSH, "{}", user.email);
        assert_eq!(got, want, "{} holds other records than its own", user.email);
        // One version per write, none skipped, none shared.
        let mut versions: Vec<u64> = state.values().map(|row| row.held.version).collect();
        versions.sort_unstable();
        let expected: Vec<u64> = (1..=(PUSHES * PER_PUSH) as u64).collect();
        assert_eq!(versions, expected, "{}: versions", user.email);
        assert_eq!(change_counter(&db, &user.id), (PUSHES * PER_PUSH) as u64);
    }
    eprintln!(
        "{USERS} users x {PUSHES} pushes x {PER_PUSH} records in {:.1?}",
        started.elapsed()
    );
}
