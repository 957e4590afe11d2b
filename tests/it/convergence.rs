//! Convergence: simulated devices syncing through the real binary.
//!
//! A property test: for each seed, one user and three devices, each with a
//! local store, an offline queue and cursors, take ~40 random steps
//! (create, edit, delete, sync by per-entity push or bulk, with responses
//! lost at random so the device retries). Then every device syncs twice and
//! must hold exactly what the server holds, and no write the server
//! acknowledged in `applied` may have vanished without a later version.
//!
//! Every push carries an `Idempotency-Key`; half the lost answers are
//! asked for again at once with the same key and must come back byte for
//! byte, marked as a replay (the other half are re-sent later, recognised
//! by content). After every complete pull the device's digest of what it
//! holds must equal the server's (contract section 9.2), and at the end a
//! device's copy with one record dropped and one kept at an old version is
//! found and repaired through the prefix digests and fetch (9.3),
//! fetching exactly those two.
//! The devices run the sync algorithm that `docs/CLIENT.md` teaches the
//! app (its section 5: the outbox, `base_version`, taking records unless a
//! local edit waits, the cursor jump, paging, kept-both re-keying): when
//! one changes, change the other.
//!
//! `HEALTHSYNC_CONVERGENCE_SEEDS=N` runs seeds 1..=N (default 5, the fewest
//! that keep both copies of a meal and merge a conflict; about a second
//! each), `deploy/test` runs 12 unless told otherwise and CI 40;
//! `HEALTHSYNC_CONVERGENCE_SEED=S` runs seed S alone.
//!
//! With `HEALTHSYNC_TEST_MYSQL_SECOND` (a URL like `HEALTHSYNC_TEST_MYSQL`:
//! another node of the same Galera cluster, as `deploy/cluster test` sets
//! it), the odd-numbered devices sync through that node and the others
//! through the first: devices spread over two front ends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::support::{now_ms, parse_ms, register, rfc3339, Rng, TestDb, ENTITIES};

const METRICS: usize = 0;
const MEDICATIONS: usize = 1;
const MEALS: usize = 2;
const EXERCISES: usize = 3;
const MEAL_PLANS: usize = 4;

const DEVICES: usize = 3;
const STEPS: usize = 45;
/// Records device 0 creates and every device syncs before the random
/// steps: meals and metrics first, where conflicts keep both or merge.
const BASELINE: [usize; 8] = [
    MEALS,
    METRICS,
    MEDICATIONS,
    MEALS,
    METRICS,
    EXERCISES,
    MEAL_PLANS,
    MEALS,
];
const DEFAULT_SEEDS: u64 = 5;
/// Chance (percent) that a push's answer is lost on the way back.
const LOST_PERCENT: u64 = 15;

const MEAL_DATES: [&str; 3] = ["2024-05-01", "2024-05-02", "2024-05-03"];
const SIDE_EFFECTS: [&str; 4] = ["nausea", "headache", "dizziness", "fatigue"];

/// A record's content: what devices and the server must agree on.
#[derive(Clone, Debug, PartialEq)]
struct Content {
    data: Value,
    updated_at: i64,
    deleted_at: Option<i64>,
}

/// `(entity index, id)`.
type Key = (usize, String);

#[derive(Clone, Debug)]
struct Local {
    content: Content,
    /// The server version this device last took the record at: sent as
    /// `base_version`. None for a record the server never confirmed to it.
    version: Option<u64>,
}

struct Device {
    name: String,
    store: BTreeMap<Key, Local>,
    /// Records changed locally and not yet confirmed, oldest first.
    queue: Vec<Key>,
    /// One cursor per entity for `GET /<slug>`, one for `/sync/bulk`: each
    /// advances only from its own route's answers (tokens are opaque).
    entity_cursors: [Option<String>; 5],
    bulk_cursor: Option<String>,
    skew: i64,
    clock: i64,
    /// Highest version of each record any answer showed this device.
    seen: HashMap<Key, u64>,
}

/// A write the server listed in `applied`: it held `content` at `version`.
struct Ack {
    key: Key,
    version: u64,
    content: Content,
    what: String,
}

#[derive(Default, Debug, Clone)]
struct Stats {
    requests: usize,
    lost: usize,
    retried_records: usize,
    pushes: usize,
    bulk_pushes: usize,
    jumps: usize,
    replays: usize,
    digests_checked: usize,
    repairs: usize,
    resolutions: BTreeMap<String, usize>,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.requests += other.requests;
        self.lost += other.lost;
        self.retried_records += other.retried_records;
        self.pushes += other.pushes;
        self.bulk_pushes += other.bulk_pushes;
        self.jumps += other.jumps;
        self.replays += other.replays;
        self.digests_checked += other.digests_checked;
        self.repairs += other.repairs;
        for (resolution, count) in &other.resolutions {
            *self.resolutions.entry(resolution.clone()).or_default() += count;
        }
    }
}

struct Sim<'a> {
    db: &'a TestDb,
    token: String,
    rng: Rng,
    devices: Vec<Device>,
    acks: Vec<Ack>,
    sim_now: i64,
    step: usize,
    log: Vec<String>,
    stats: Stats,
    /// Records whose push answer was lost at least once.
    lost_keys: HashSet<Key>,
    /// Idempotency keys and the choice to ask again for a lost answer
    /// come from their own stream, so the edits a seed makes stay the same.
    keys: Rng,
}

/// The first 8 bytes of SHA-256("<id>:<version>"), big-endian.
fn record_hash(id: &str, version: u64) -> u64 {
    use sha2::Digest as _;
    let full = sha2::Sha256::digest(format!("{id}:{version}").as_bytes());
    full[..8]
        .iter()
        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
}

fn digest_text<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let xor = pairs
        .into_iter()
        .fold(0u64, |acc, (id, version)| acc ^ record_hash(id, version));
    format!("{xor:016x}")
}

fn wire(key: &Key, local: &Local) -> Value {
    let mut record = json!({
        "id": key.1,
        "data": local.content.data,
        "updated_at": rfc3339(local.content.updated_at),
        "deleted_at": local.content.deleted_at.map(rfc3339),
    });
    if let Some(version) = local.version {
        record["base_version"] = json!(version);
    }
    record
}

fn parse_record(record: &Value) -> (String, Content, u64) {
    let id = record["id"]
        .as_str()
        .unwrap_or_else(|| panic!("record without id: {record}"))
        .to_owned();
    let content = Content {
        data: record["data"].clone(),
        updated_at: parse_ms(record["updated_at"].as_str().unwrap_or_default()),
        deleted_at: record["deleted_at"].as_str().map(parse_ms),
    };
    let version = record["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("record without version: {record}"));
    (id, content, version)
}

fn list<'v>(value: &'v Value, what: &str) -> &'v Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what} is not a list: {value}"))
}

fn new_data(rng: &mut Rng, entity: usize) -> Value {
    match entity {
        METRICS => {
            let mut data = json!({
                "type": rng.pick(&["weight", "blood_pressure", "steps", "glucose"]),
                "value": 50 + rng.below(100),
            });
            if rng.chance(50) {
                data["notes"] = json!(rng.pick(&["morning", "after run", "felt dizzy", "fasting"]));
            }
            if rng.chance(40) {
                data["bodyMeasurements"] = body_measurements(rng);
            }
            data
        }
        MEDICATIONS => json!({
            "name": rng.pick(&["ibuprofen", "metformin", "lisinopril"]),
            "dose": rng.pick(&[5, 10, 20]),
            "sideEffects": side_effects(rng),
        }),
        MEALS => {
            let mut data = json!({
                "name": rng.pick(&["oats", "salad", "curry", "soup"]),
                "calories": 100 + 10 * rng.below(60),
            });
            if rng.chance(90) {
                data["date"] = json!(rng.pick(&MEAL_DATES));
            }
            data
        }
        EXERCISES => json!({
            "kind": rng.pick(&["run", "swim", "yoga"]),
            "minutes": 10 + rng.below(60),
        }),
        _ => json!({
            "title": rng.pick(&["week A", "week B", "lean"]),
            "days": 1 + rng.below(7),
        }),
    }
}

fn body_measurements(rng: &mut Rng) -> Value {
    let keys = ["waist", "hip", "chest"];
    if rng.chance(60) {
        let mut object = Map::new();
        for _ in 0..1 + rng.below(2) {
            object.insert((*rng.pick(&keys)).to_owned(), json!(60 + rng.below(50)));
        }
        Value::Object(object)
    } else {
        let items: Vec<Value> = (0..1 + rng.below(2))
            .map(|_| json!(format!("{}:{}", rng.pick(&keys), 60 + rng.below(50))))
            .collect();
        Value::Array(items)
    }
}

fn side_effects(rng: &mut Rng) -> Value {
    let mut effects: Vec<Value> = Vec::new();
    for _ in 0..rng.below(3) {
        let effect = json!(rng.pick(&SIDE_EFFECTS));
        if !effects.contains(&effect) {
            effects.push(effect);
        }
    }
    Value::Array(effects)
}

/// A local edit of a record's data.
fn edited_data(rng: &mut Rng, entity: usize, data: &Value) -> Value {
    let mut data = data.clone();
    match entity {
        METRICS => match rng.below(5) {
            0 => data["value"] = json!(50 + rng.below(100)),
            1 => {
                let text = match data.get("notes").and_then(Value::as_str) {
                    Some(old) if rng.chance(50) => format!("{old}; {}", rng.below(100)),
                    _ => format!("note {}", rng.below(1000)),
                };
                data["notes"] = json!(text);
            }
            2 => {
                if let Some(object) = data.as_object_mut() {
                    object.remove("notes");
                }
            }
            3 => data["bodyMeasurements"] = body_measurements(rng),
            _ => {
                data["value"] = json!(50 + rng.below(100));
                data["notes"] = json!(format!("note {}", rng.below(1000)));
            }
        },
        MEDICATIONS => match rng.below(3) {
            0 => data["dose"] = json!(rng.pick(&[5, 10, 20, 40])),
            1 => {
                let effect = json!(rng.pick(&SIDE_EFFECTS));
                if let Some(effects) = data["sideEffects"].as_array_mut() {
                    if !effects.contains(&effect) {
                        effects.push(effect);
                    }
                }
            }
            _ => {
                if let Some(effects) = data["sideEffects"].as_array_mut() {
                    if !effects.is_empty() {
                        let index = rng.below(effects.len());
                        effects.remove(index);
                    }
                }
            }
        },
        MEALS => {
            if rng.chance(50) {
                data["date"] = json!(rng.pick(&MEAL_DATES));
            } else {
                data["calories"] = json!(100 + 10 * rng.below(60));
            }
        }
        EXERCISES => data["minutes"] = json!(10 + rng.below(60)),
        _ => data["days"] = json!(1 + rng.below(7)),
    }
    data
}

impl Sim<'_> {
    fn fail(&self, message: String) -> ! {
        let tail = self.log.len().saturating_sub(60);
        eprintln!("--- last steps ---\n{}", self.log[tail..].join("\n"));
        panic!("step {}: {message}", self.step)
    }

    fn note(&mut self, line: String) {
        self.log.push(format!("[{}] {line}", self.step));
    }

    fn request(&mut self, d: usize, path: &str, body: Option<&Value>) -> Value {
        self.stats.requests += 1;
        let name = self.devices[d].name.clone();
        let request = match body {
            Some(body) => self.db.post(path, body),
            None => self.db.get(path),
        };
        let mut request = request.token(&self.token).var("HTTP_X_DEVICE_ID", &name);
        // On a cluster, every other device syncs through the second node.
        if let Some((host, port)) = second_node().filter(|_| d % 2 == 1) {
            request = request
                .var("DB_HOST", host)
                .var("DB_PORT", port.to_string());
        }
        let response = request.send();
        if response.status != 200 || response.body["success"] != json!(true) {
            self.fail(format!(
                "{name}: {} {path} {}\n-> {} {}\nstderr: {}",
                if body.is_some() { "POST" } else { "GET" },
                body.map(Value::to_string).unwrap_or_default(),
                response.status,
                response.body,
                response.stderr
            ));
        }
        response.body["data"].clone()
    }

    /// A push or bulk with an `Idempotency-Key`: the answer's `data`, the
    /// raw body, and whether it came back as a replay.
    fn keyed(&mut self, d: usize, path: &str, body: &Value, key: &str) -> (Value, Vec<u8>, bool) {
        self.stats.requests += 1;
        let name = self.devices[d].name.clone();
        let response = self
            .db
            .post(path, body)
            .token(&self.token)
            .var("HTTP_X_DEVICE_ID", &name)
            .var("HTTP_IDEMPOTENCY_KEY", key)
            .send();
        if response.status != 200 || response.body["success"] != json!(true) {
            self.fail(format!(
                "{name}: POST {path} (key {key}) {body}\n-> {} {}\nstderr: {}",
                response.status, response.body, response.stderr
            ));
        }
        let replayed = response.header("Idempotent-Replayed") == Some("true");
        (response.body["data"].clone(), response.raw_body, replayed)
    }

    /// After a lost answer: half the time the device asks again at once
    /// with the same key and body, and must get the same bytes back as a
    /// replay; then it has heard the answer. Otherwise it re-sends later.
    fn ask_again(&mut self, d: usize, path: &str, body: &Value, key: &str, first: &[u8]) -> bool {
        if !self.keys.chance(50) {
            return false;
        }
        let (_, again, replayed) = self.keyed(d, path, body, key);
        if !replayed || again != first {
            self.fail(format!(
                "{path} asked again with key {key}: replayed {replayed}, \n first {}\n again {}",
                String::from_utf8_lossy(first),
                String::from_utf8_lossy(&again)
            ));
        }
        self.stats.replays += 1;
        let line = format!("{} asked again with {key}: replayed", self.devices[d].name);
        self.note(line);
        true
    }

    fn new_key(&mut self) -> String {
        self.keys.uuid()
    }

    /// The digest of what the device holds of an entity: every record an
    /// answer showed it, at the highest version shown.
    fn held_digest(&self, d: usize, entity: usize) -> String {
        digest_text(
            self.devices[d]
                .seen
                .iter()
                .filter(|(key, _)| key.0 == entity)
                .map(|(key, version)| (key.1.as_str(), *version)),
        )
    }

    /// A complete page's digest against what the device holds.
    fn check_digest(&mut self, d: usize, entity: usize, digest: &Value, at: &Value) {
        let held = self.held_digest(d, entity);
        if digest.as_str() != Some(held.as_str()) {
            let name = self.devices[d].name.clone();
            self.fail(format!(
                "{name}: {} digest at {at} is {digest}, the device holds {held}",
                ENTITIES[entity].2
            ));
        }
        self.stats.digests_checked += 1;
    }

    /// The device's clock: the simulated time plus its skew and a little
    /// jitter, moving forward, never past the server's clock plus a minute.
    fn tick(&mut self, d: usize) -> i64 {
        let jitter = self.rng.below(1_000) as i64 - 500;
        let device = &mut self.devices[d];
        let at = (self.sim_now + device.skew + jitter)
            .max(device.clock + 1)
            .min(now_ms() + 60_000);
        device.clock = at;
        at
    }

    fn enqueue(&mut self, d: usize, key: Key) {
        let queue = &mut self.devices[d].queue;
        if !queue.contains(&key) {
            queue.push(key);
        }
    }

    fn create(&mut self, d: usize) {
        let entity = self.rng.below(ENTITIES.len());
        self.create_entity(d, entity);
    }

    fn create_entity(&mut self, d: usize, entity: usize) {
        let id = self.rng.uuid();
        let data = new_data(&mut self.rng, entity);
        let at = self.tick(d);
        let key = (entity, id);
        self.note(format!(
            "{} creates {} {} {data}",
            self.devices[d].name, ENTITIES[entity].2, key.1
        ));
        self.devices[d].store.insert(
            key.clone(),
            Local {
                content: Content {
                    data,
                    updated_at: at,
                    deleted_at: None,
                },
                version: None,
            },
        );
        self.enqueue(d, key);
    }

    fn live_keys(&self, d: usize) -> Vec<Key> {
        self.devices[d]
            .store
            .iter()
            .filter(|(_, local)| local.content.deleted_at.is_none())
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn edit(&mut self, d: usize, delete: bool) {
        let live = self.live_keys(d);
        if live.is_empty() {
            return self.create(d);
        }
        // Mostly records the server has confirmed (so other devices may
        // hold them too: that is where concurrent edits come from).
        let shared: Vec<Key> = live
            .iter()
            .filter(|key| self.devices[d].store[*key].version.is_some())
            .cloned()
            .collect();
        let pool = if !shared.is_empty() && self.rng.chance(75) {
            &shared
        } else {
            &live
        };
        let key = pool[self.rng.below(pool.len())].clone();
        let at = self.tick(d);
        let old = self.devices[d].store[&key].content.data.clone();
        let data = if delete {
            old
        } else {
            edited_data(&mut self.rng, key.0, &old)
        };
        self.note(format!(
            "{} {} {} {} {data} (base {:?})",
            self.devices[d].name,
            if delete { "deletes" } else { "edits" },
            ENTITIES[key.0].2,
            key.1,
            self.devices[d].store[&key].version
        ));
        if let Some(local) = self.devices[d].store.get_mut(&key) {
            local.content = Content {
                data,
                updated_at: at,
                deleted_at: delete.then_some(at),
            };
        }
        self.enqueue(d, key);
    }

    /// Applies a record an answer carried: the device takes it, unless it
    /// holds a queued edit of that record (kept, pushed later against the
    /// base it was made on). Versions of one record never go back.
    fn take(&mut self, d: usize, entity: usize, record: &Value) {
        let (id, content, version) = parse_record(record);
        let key = (entity, id);
        let device = &self.devices[d];
        if let Some(seen) = device.seen.get(&key) {
            if version < *seen {
                let name = device.name.clone();
                self.fail(format!(
                    "{name} received {key:?} at version {version} after an answer showed version {seen}: {record}"
                ));
            }
        }
        let device = &mut self.devices[d];
        device.seen.insert(key.clone(), version);
        if device.queue.contains(&key) {
            return;
        }
        device.store.insert(
            key,
            Local {
                content,
                version: Some(version),
            },
        );
    }

    /// Checks one entity's push result and records what it acknowledged,
    /// whether or not the device will hear the answer.
    fn check_section(&mut self, d: usize, entity: usize, sent: &[(Key, Local)], section: &Value) {
        let name = self.devices[d].name.clone();
        let key_name = ENTITIES[entity].2;
        if section["errors"] != json!([]) {
            self.fail(format!("{name}: {key_name} refused records: {section}"));
        }
        let synced = section["synced"].as_u64().unwrap_or(u64::MAX);
        let conflicts = section["conflicts"].as_u64().unwrap_or(u64::MAX);
        if synced.saturating_add(conflicts) != sent.len() as u64 {
            self.fail(format!(
                "{name}: {key_name}: synced {synced} + conflicts {conflicts} != {} sent: {section}",
                sent.len()
            ));
        }
        let details = list(&section["conflict_details"], "conflict_details").clone();
        if details.len() as u64 != conflicts {
            self.fail(format!(
                "{name}: {key_name}: {conflicts} conflicts, {} details: {section}",
                details.len()
            ));
        }
        // `applied` lists exactly the records held as sent: every record
        // without a conflict, and the conflicts the client won.
        let mut expected_applied: Vec<&str> = sent.iter().map(|(k, _)| k.1.as_str()).collect();
        for detail in &details {
            let resolution = detail["resolution"].as_str().unwrap_or("?").to_owned();
            let id = detail["entity_id"].as_str().unwrap_or_default();
            if resolution != "client_wins" {
                expected_applied.retain(|sent_id| *sent_id != id);
            }
            *self.stats.resolutions.entry(resolution).or_default() += 1;
        }
        let mut applied_ids: Vec<&str> = list(&section["applied"], "applied")
            .iter()
            .map(|entry| entry["id"].as_str().unwrap_or_default())
            .collect();
        applied_ids.sort_unstable();
        expected_applied.sort_unstable();
        if applied_ids != expected_applied {
            self.fail(format!(
                "{name}: {key_name}: applied {applied_ids:?}, expected {expected_applied:?}: {section}"
            ));
        }
        let by_id: HashMap<&str, &Local> = sent.iter().map(|(k, l)| (k.1.as_str(), l)).collect();
        for entry in list(&section["applied"], "applied").clone() {
            let id = entry["id"].as_str().unwrap_or_default().to_owned();
            let version = entry["version"].as_u64().unwrap_or(0);
            let Some(local) = by_id.get(id.as_str()) else {
                self.fail(format!(
                    "{name}: {key_name}: applied lists {id}, which was not sent: {section}"
                ));
            };
            self.acks.push(Ack {
                key: (entity, id),
                version,
                content: local.content.clone(),
                what: format!("step {} {name}", self.step),
            });
        }
    }

    /// The device hears a push's answer: its queued records are settled;
    /// `applied` confirms them as sent; `server_updates` replace them (and
    /// bring a kept-both copy under its new id, and, in a bulk, the page
    /// of changes).
    fn apply_section(&mut self, d: usize, entity: usize, sent: &[(Key, Local)], section: &Value) {
        let device = &mut self.devices[d];
        device
            .queue
            .retain(|key| !sent.iter().any(|(k, _)| k == key));
        for entry in list(&section["applied"], "applied").clone() {
            let key = (entity, entry["id"].as_str().unwrap_or_default().to_owned());
            let version = entry["version"].as_u64().unwrap_or(0);
            let seen = self.devices[d].seen.get(&key).copied().unwrap_or(0);
            if version < seen {
                let name = self.devices[d].name.clone();
                self.fail(format!(
                    "{name}: applied {key:?} at version {version}, below version {seen} already shown"
                ));
            }
            let device = &mut self.devices[d];
            device.seen.insert(key.clone(), version);
            if let Some(local) = device.store.get_mut(&key) {
                local.version = Some(version);
            }
        }
        for record in list(&section["server_updates"], "server_updates").clone() {
            self.take(d, entity, &record);
        }
    }

    fn sent_of(&self, d: usize, entity: usize) -> Vec<(Key, Local)> {
        let device = &self.devices[d];
        device
            .queue
            .iter()
            .filter(|key| key.0 == entity)
            .map(|key| (key.clone(), device.store[key].clone()))
            .collect()
    }

    fn count_retries(&mut self, sent: &[(Key, Local)]) {
        // A record sent before whose answer was lost: sent again now.
        let resent = sent
            .iter()
            .filter(|(key, _)| self.lost_keys.contains(key))
            .count();
        self.stats.retried_records += resent;
    }

    fn lose(&mut self, lossy: bool, d: usize, what: &str, sent: &[(Key, Local)]) -> bool {
        if lossy && self.rng.chance(LOST_PERCENT) {
            self.stats.lost += 1;
            self.lost_keys.extend(sent.iter().map(|(k, _)| k.clone()));
            let ids: Vec<&str> = sent.iter().map(|(k, _)| k.1.as_str()).collect();
            let line = format!("{} LOST the answer to {what} {ids:?}", self.devices[d].name);
            self.note(line);
            return true;
        }
        false
    }

    /// Pushes the queue, one `POST /<slug>/sync` per entity that has
    /// queued records. False when an answer was lost (the sync stops).
    fn push_per_entity(&mut self, d: usize, lossy: bool) -> bool {
        for (entity, &(slug, list_key, bulk_key)) in ENTITIES.iter().enumerate() {
            let sent = self.sent_of(d, entity);
            if sent.is_empty() {
                continue;
            }
            self.count_retries(&sent);
            self.stats.pushes += 1;
            let records: Vec<Value> = sent.iter().map(|(k, l)| wire(k, l)).collect();
            let body = json!({ list_key: records });
            let path = format!("/api/{slug}/sync");
            let key = self.new_key();
            let (data, raw, _) = self.keyed(d, &path, &body, &key);
            self.check_section(d, entity, &sent, &data);
            if self.lose(lossy, d, &format!("{slug} push"), &sent)
                && !self.ask_again(d, &path, &body, &key, &raw)
            {
                return false;
            }
            let line = format!(
                "{} pushed {bulk_key}: applied {} conflicts {}",
                self.devices[d].name, data["applied"], data["conflict_details"]
            );
            self.note(line);
            self.apply_section(d, entity, &sent, &data);
            // Contract section 4: a cursor equal to previous_sync_token may
            // jump to sync_token (what lies between is this push's own
            // writes, which the device now holds). Sometimes it does.
            if self.rng.chance(50) {
                self.jump(d, &data);
            }
        }
        true
    }

    fn jump(&mut self, d: usize, data: &Value) {
        let (Some(previous), Some(next)) = (
            data["previous_sync_token"].as_str(),
            data["sync_token"].as_str(),
        ) else {
            self.fail(format!("push answer without sync tokens: {data}"));
        };
        let device = &mut self.devices[d];
        let mut jumped = 0;
        for cursor in device
            .entity_cursors
            .iter_mut()
            .chain(std::iter::once(&mut device.bulk_cursor))
        {
            if cursor.as_deref() == Some(previous) && previous != next {
                *cursor = Some(next.to_owned());
                jumped += 1;
            }
        }
        if jumped > 0 {
            self.stats.jumps += 1;
            let line = format!(
                "{} jumped {jumped} cursors {previous} -> {next}",
                self.devices[d].name
            );
            self.note(line);
        }
    }

    /// Pushes the whole queue in one bulk that also pulls from the bulk
    /// cursor, then pages on with bulk pulls. False when the answer was
    /// lost.
    fn push_bulk(&mut self, d: usize, lossy: bool) -> bool {
        let mut body = Map::new();
        let mut sent_by_entity: Vec<Vec<(Key, Local)>> = Vec::new();
        let mut all_sent = Vec::new();
        for (entity, (_, _, bulk_key)) in ENTITIES.iter().enumerate() {
            let sent = self.sent_of(d, entity);
            if !sent.is_empty() {
                let records: Vec<Value> = sent.iter().map(|(k, l)| wire(k, l)).collect();
                body.insert((*bulk_key).into(), Value::Array(records));
            }
            all_sent.extend(sent.iter().cloned());
            sent_by_entity.push(sent);
        }
        self.count_retries(&all_sent);
        self.stats.bulk_pushes += 1;
        if let Some(cursor) = &self.devices[d].bulk_cursor {
            body.insert("sync_token".into(), json!(cursor));
        }
        let limit = *self.rng.pick(&[2, 5, 1000]);
        body.insert("limit".into(), json!(limit));
        let body = Value::Object(body);
        let key = self.new_key();
        let (data, raw, _) = self.keyed(d, "/api/sync/bulk", &body, &key);
        for (entity, sent) in sent_by_entity.iter().enumerate() {
            self.check_section(d, entity, sent, &data[ENTITIES[entity].2]);
        }
        if self.lose(lossy, d, "bulk", &all_sent)
            && !self.ask_again(d, "/api/sync/bulk", &body, &key, &raw)
        {
            return false;
        }
        let line = format!(
            "{} bulk pushed {} records, has_more {}",
            self.devices[d].name,
            all_sent.len(),
            data["has_more"]
        );
        self.note(line);
        for (entity, sent) in sent_by_entity.iter().enumerate() {
            self.apply_section(d, entity, sent, &data[ENTITIES[entity].2]);
        }
        self.devices[d].bulk_cursor = data["sync_token"].as_str().map(str::to_owned);
        if data["has_more"] == json!(true) {
            self.pull_bulk(d);
        } else {
            self.check_digests(d, &data);
        }
        true
    }

    /// A bulk's last page: every entity's digest against the device.
    fn check_digests(&mut self, d: usize, data: &Value) {
        for (entity, (_, _, key)) in ENTITIES.iter().enumerate() {
            self.check_digest(d, entity, &data["digests"][*key], &data["sync_token"]);
        }
    }

    /// Bulk pulls from the bulk cursor until `has_more` is false.
    fn pull_bulk(&mut self, d: usize) {
        let limit = *self.rng.pick(&[3, 7, 1000]);
        loop {
            let mut body = json!({ "limit": limit });
            if let Some(cursor) = &self.devices[d].bulk_cursor {
                body["sync_token"] = json!(cursor);
            }
            let data = self.request(d, "/api/sync/bulk", Some(&body));
            let mut count = 0;
            for (entity, (_, _, key)) in ENTITIES.iter().enumerate() {
                if data[*key]["applied"] != json!([]) {
                    self.fail(format!("a pure bulk pull applied something: {data}"));
                }
                for record in list(&data[*key]["server_updates"], "server_updates").clone() {
                    self.take(d, entity, &record);
                    count += 1;
                }
            }
            let line = format!(
                "{} bulk pulled {count} after {:?} -> {}",
                self.devices[d].name, self.devices[d].bulk_cursor, data["sync_token"]
            );
            self.note(line);
            self.devices[d].bulk_cursor = data["sync_token"].as_str().map(str::to_owned);
            if data["has_more"] != json!(true) {
                self.check_digests(d, &data);
                return;
            }
        }
    }

    /// `GET /<slug>` for every entity from its own cursor until `has_more`
    /// is false.
    fn pull_per_entity(&mut self, d: usize) {
        let limit = *self.rng.pick(&[2, 4, 100]);
        for (entity, (slug, list_key, _)) in ENTITIES.iter().enumerate() {
            loop {
                let path = match &self.devices[d].entity_cursors[entity] {
                    None => format!("/api/{slug}?limit={limit}"),
                    Some(token) => format!("/api/{slug}?sync_token={token}&limit={limit}"),
                };
                let data = self.request(d, &path, None);
                let records = list(&data[*list_key], list_key).clone();
                let versions: Vec<u64> = records
                    .iter()
                    .map(|r| r["version"].as_u64().unwrap_or(0))
                    .collect();
                if !versions.windows(2).all(|w| w[0] < w[1]) {
                    self.fail(format!("GET {path}: versions not ascending: {versions:?}"));
                }
                for record in &records {
                    self.take(d, entity, record);
                }
                if !records.is_empty() {
                    let line = format!(
                        "{} pulled {} {slug} versions {versions:?}",
                        self.devices[d].name,
                        records.len()
                    );
                    self.note(line);
                }
                self.devices[d].entity_cursors[entity] =
                    data["next_sync_token"].as_str().map(str::to_owned);
                if data["has_more"] != json!(true) {
                    self.check_digest(d, entity, &data["digest"], &data["next_sync_token"]);
                    break;
                }
            }
        }
    }

    fn sync(&mut self, d: usize, lossy: bool) {
        if self.rng.chance(50) {
            self.push_bulk(d, lossy);
            return;
        }
        if !self.push_per_entity(d, lossy) {
            return;
        }
        if self.rng.chance(50) {
            self.pull_bulk(d);
        } else {
            self.pull_per_entity(d);
        }
    }

    fn run(&mut self) {
        // A shared start: device 0 creates a few records and every device
        // syncs, so later edits on different devices meet on the server.
        for entity in BASELINE {
            self.create_entity(0, entity);
        }
        for d in 0..DEVICES {
            self.sync(d, false);
        }
        for step in 0..STEPS {
            self.step = step;
            self.sim_now += 1 + self.rng.below(2_000) as i64;
            let d = self.rng.below(DEVICES);
            match self.rng.below(100) {
                0..=21 => self.create(d),
                22..=55 => self.edit(d, false),
                56..=62 => self.edit(d, true),
                _ => self.sync(d, true),
            }
        }
        self.step = STEPS;
        self.note("final syncs".into());
        for _ in 0..2 {
            for d in 0..DEVICES {
                self.sync(d, false);
            }
        }
    }

    /// Every record of every entity, from a full pull with no cursor.
    fn server_state(&mut self) -> BTreeMap<Key, (Content, u64)> {
        let mut state = BTreeMap::new();
        for (entity, (slug, list_key, _)) in ENTITIES.iter().enumerate() {
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    None => format!("/api/{slug}?limit=1000"),
                    Some(token) => format!("/api/{slug}?sync_token={token}&limit=1000"),
                };
                let data = self.request(0, &path, None);
                for record in list(&data[*list_key], list_key) {
                    let (id, content, version) = parse_record(record);
                    if state
                        .insert((entity, id.clone()), (content, version))
                        .is_some()
                    {
                        self.fail(format!("a full pull of {slug} returned {id} twice"));
                    }
                }
                cursor = data["next_sync_token"].as_str().map(str::to_owned);
                if data["has_more"] != json!(true) {
                    break;
                }
            }
        }
        state
    }

    fn check(&mut self, user_id: &str) {
        let server = self.server_state();
        // The pull shows what the database holds.
        let mut rows = 0;
        for (entity, (_, _, table)) in ENTITIES.iter().enumerate() {
            let sql = format!("SELECT id, version FROM {table} WHERE user_id = '{user_id}'");
            for (id, version) in self.db.query::<(String, u64)>(&sql) {
                rows += 1;
                if server.get(&(entity, id.clone())).map(|(_, v)| *v) != Some(version) {
                    self.fail(format!(
                        "{table} row {id} at version {version} is not in the full pull as such"
                    ));
                }
            }
        }
        if rows != server.len() {
            self.fail(format!(
                "the database holds {rows} rows, a full pull returned {}",
                server.len()
            ));
        }

        for d in 0..DEVICES {
            let device = &self.devices[d];
            let mut problems = Vec::new();
            if !device.queue.is_empty() {
                problems.push(format!("queue not empty: {:?}", device.queue));
            }
            for (key, (content, version)) in &server {
                match device.store.get(key) {
                    None => {
                        problems.push(format!("missing {key:?} (server: v{version} {content:?})"))
                    }
                    Some(local) if local.content != *content || local.version != Some(*version) => {
                        problems.push(format!(
                            "{key:?}: device v{:?} {:?}\n      server v{version} {content:?}",
                            local.version, local.content
                        ));
                    }
                    Some(_) => {}
                }
            }
            for key in device.store.keys() {
                if !server.contains_key(key) {
                    problems.push(format!("{key:?} is on the device, not on the server"));
                }
            }
            if !problems.is_empty() {
                let name = device.name.clone();
                problems.truncate(12);
                self.fail(format!(
                    "{name} did not converge with the server:\n  {}",
                    problems.join("\n  ")
                ));
            }
        }

        let mut vanished = Vec::new();
        for ack in &self.acks {
            match server.get(&ack.key) {
                None => vanished.push(format!(
                    "{:?} v{} ({}): not on the server",
                    ack.key, ack.version, ack.what
                )),
                Some((_, version)) if *version < ack.version => vanished.push(format!(
                    "{:?} acknowledged at v{} ({}) but the server holds v{version}",
                    ack.key, ack.version, ack.what
                )),
                Some((content, version)) if *version == ack.version && *content != ack.content => {
                    vanished.push(format!(
                        "{:?} v{} ({}): acknowledged {:?}, server holds {content:?} at that version",
                        ack.key, ack.version, ack.what, ack.content
                    ));
                }
                Some(_) => {}
            }
        }
        if !vanished.is_empty() {
            vanished.truncate(12);
            self.fail(format!(
                "acknowledged writes vanished:\n  {}",
                vanished.join("\n  ")
            ));
        }
    }
}

impl Sim<'_> {
    /// A device's copy of one entity, corrupted (one record dropped, one
    /// kept at an older version), is found by the digests and repaired by
    /// walking the prefixes whose digests differ and fetching exactly the
    /// records that differ (contract section 9.3).
    fn repair(&mut self) {
        let d = self.keys.below(DEVICES);
        let held_of = |sim: &Sim, entity: usize| -> BTreeMap<String, u64> {
            sim.devices[d]
                .seen
                .iter()
                .filter(|(key, _)| key.0 == entity)
                .map(|(key, version)| (key.1.clone(), *version))
                .collect()
        };
        let Some(entity) = (0..ENTITIES.len()).find(|&e| held_of(self, e).len() >= 2) else {
            return;
        };
        let (slug, list_key, bulk_key) = ENTITIES[entity];
        let status = self.request(d, "/api/sync/status", None);
        let server_digest = status[bulk_key]["digest"].clone();
        let mut held = held_of(self, entity);
        let ids: Vec<String> = held.keys().cloned().collect();
        let dropped = ids[self.keys.below(ids.len())].clone();
        let aged = ids
            .iter()
            .find(|id| **id != dropped)
            .cloned()
            .unwrap_or_default();
        held.remove(&dropped);
        if let Some(version) = held.get_mut(&aged) {
            *version -= 1;
        }
        let digest_of = |held: &BTreeMap<String, u64>, prefix: &str| {
            digest_text(
                held.iter()
                    .filter(|(id, _)| id.replace('-', "").starts_with(prefix))
                    .map(|(id, v)| (id.as_str(), *v)),
            )
        };
        if Value::String(digest_of(&held, "")) == server_digest {
            self.fail(format!(
                "a corrupted copy of {bulk_key} has the server's digest"
            ));
        }
        let mut differ: Vec<String> = Vec::new();
        let mut prefixes = vec![String::new()];
        while let Some(prefix) = prefixes.pop() {
            let answer = self.request(d, &format!("/api/{slug}/digest?prefix={prefix}"), None);
            if let Some(children) = answer["children"].as_object() {
                for (child, value) in children {
                    if value["digest"].as_str() != Some(digest_of(&held, child).as_str()) {
                        prefixes.push(child.clone());
                    }
                }
                continue;
            }
            let listed: BTreeMap<String, u64> = list(&answer["records"], "records")
                .iter()
                .map(|r| {
                    let id = r["id"].as_str().unwrap_or_default().to_owned();
                    (id, r["version"].as_u64().unwrap_or(0))
                })
                .collect();
            for (id, version) in &listed {
                if held.get(id) != Some(version) {
                    differ.push(id.clone());
                }
            }
        }
        differ.sort_unstable();
        let mut expected = vec![dropped.clone(), aged.clone()];
        expected.sort_unstable();
        if differ != expected {
            self.fail(format!(
                "the repair walk of {bulk_key} found {differ:?}, the corrupted records are {expected:?}"
            ));
        }
        let fetched = self.request(
            d,
            &format!("/api/{slug}/fetch"),
            Some(&json!({ "ids": differ })),
        );
        for record in list(&fetched[list_key], list_key) {
            let (id, _, version) = parse_record(record);
            held.insert(id, version);
        }
        if Value::String(digest_of(&held, "")) != server_digest {
            self.fail(format!("{bulk_key} repaired to {held:?} still differs"));
        }
        self.stats.repairs += 1;
    }
}

fn run_seed(db: &TestDb, seed: u64) -> Stats {
    let user = register(db, &format!("converge-{seed}@example.com"));
    let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0x5EED);
    let start = now_ms() - 90_000;
    let devices = (0..DEVICES)
        .map(|n| {
            let skew = rng.below(40_001) as i64 - 20_000;
            Device {
                name: format!("device-{n}"),
                store: BTreeMap::new(),
                queue: Vec::new(),
                entity_cursors: Default::default(),
                bulk_cursor: None,
                skew,
                clock: 0,
                seen: HashMap::new(),
            }
        })
        .collect();
    let mut sim = Sim {
        db,
        token: user.token.clone(),
        rng,
        devices,
        acks: Vec::new(),
        sim_now: start,
        step: 0,
        log: Vec::new(),
        stats: Stats::default(),
        lost_keys: HashSet::new(),
        keys: Rng(seed ^ 0x1DE4_7E57),
    };
    sim.run();
    sim.check(&user.id);
    sim.repair();
    sim.stats
}

/// The second node's host and port, from `HEALTHSYNC_TEST_MYSQL_SECOND`.
fn second_node() -> Option<(String, u16)> {
    let url = std::env::var("HEALTHSYNC_TEST_MYSQL_SECOND").ok()?;
    let opts = mysql::Opts::from_url(&url)
        .unwrap_or_else(|e| panic!("HEALTHSYNC_TEST_MYSQL_SECOND={url}: {e}"));
    Some((opts.get_ip_or_hostname().to_string(), opts.get_tcp_port()))
}

fn seeds() -> Vec<u64> {
    if let Ok(text) = std::env::var("HEALTHSYNC_CONVERGENCE_SEED") {
        let seed = text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("HEALTHSYNC_CONVERGENCE_SEED={text:?}: {e}"));
        return vec![seed];
    }
    let count = match std::env::var("HEALTHSYNC_CONVERGENCE_SEEDS") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("HEALTHSYNC_CONVERGENCE_SEEDS={text:?}: {e}")),
        Err(_) => DEFAULT_SEEDS,
    };
    (1..=count).collect()
}

#[test]
fn devices_converge_whatever_the_order_of_edits_syncs_and_lost_responses() {
    let db = TestDb::new();
    let seeds = seeds();
    let mut total = Stats::default();
    let started = Instant::now();
    for &seed in &seeds {
        let seed_started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| run_seed(&db, seed)));
        match outcome {
            Ok(stats) => {
                eprintln!(
                    "seed {seed}: {} requests, {} lost answers, {} resent records, {:?}, {:.1?}",
                    stats.requests,
                    stats.lost,
                    stats.retried_records,
                    stats.resolutions,
                    seed_started.elapsed()
                );
                total.add(&stats);
            }
            Err(cause) => {
                let message = cause
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| cause.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!(
                    "seed {seed}: {message}\n(re-run: HEALTHSYNC_CONVERGENCE_SEED={seed} cargo test --test it convergence -- --nocapture)"
                );
            }
        }
    }
    eprintln!(
        "{} seeds: {total:?} in {:.1?}",
        seeds.len(),
        started.elapsed()
    );
    // A run of the default size must have exercised what it claims to.
    if seeds.len() as u64 >= DEFAULT_SEEDS {
        assert!(total.lost > 0, "no answer was lost: {total:?}");
        assert!(total.retried_records > 0, "nothing was re-sent: {total:?}");
        assert!(total.bulk_pushes > 0 && total.pushes > 0, "{total:?}");
        assert!(
            total.replays > 0,
            "no lost answer was asked for again: {total:?}"
        );
        assert!(total.digests_checked > 0 && total.repairs > 0, "{total:?}");
        for resolution in ["kept_both", "merged"] {
            assert!(
                total.resolutions.contains_key(resolution),
                "no {resolution} conflict in {} seeds: {total:?}",
                seeds.len()
            );
        }
    }
}
