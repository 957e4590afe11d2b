//! The steps of `smoke`, in order, each checked against the contract: the
//! answer's status and envelope, its shape (typed with serde), and what it
//! says against a model of what the server must now hold. A step that does
//! not match stops the run; the account is erased whatever happened
//! (`erase`), as the last step.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::args::{Options, BODY_PROBE_MAX_LIMIT};
use super::client::{Answer, Call, Client};
use super::plan::{self, Planned, Resolution, Times};
use super::probe;
use super::{Facts, Report, Status};
use crate::sync::Entity;

/// A record as a pull, an export or `server_updates` gives it.
#[derive(Clone, Debug, Deserialize)]
struct Pulled {
    id: String,
    data: Value,
    updated_at: String,
    deleted_at: Option<String>,
    version: u64,
}

#[derive(Debug, Deserialize)]
struct Applied {
    id: String,
    version: u64,
}

#[derive(Debug, Deserialize)]
struct ConflictDetail {
    entity_id: String,
    entity_type: String,
    client_version: Value,
    server_version: Pulled,
    resolution: String,
}

/// One entity's result of a push or a bulk (section 4).
#[derive(Debug, Deserialize)]
struct EntityResult {
    synced: u64,
    conflicts: u64,
    errors: Vec<Value>,
    conflict_details: Vec<ConflictDetail>,
    server_updates: Vec<Pulled>,
    applied: Vec<Applied>,
}

#[derive(Debug, Deserialize)]
struct PushAnswer {
    #[serde(flatten)]
    result: EntityResult,
    previous_sync_token: String,
    sync_token: String,
}

#[derive(Debug, Deserialize)]
struct Health {
    status: String,
    database: String,
    version: String,
    limits: Limits,
}

#[derive(Debug, Deserialize)]
struct Limits {
    max_body_bytes: u64,
    max_batch: u64,
    max_record_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct Registered {
    user: User,
    token: String,
    refresh_token: String,
    expires_in: u64,
}

#[derive(Debug, Deserialize)]
struct User {
    id: String,
    email: String,
}

#[derive(Debug, Deserialize)]
struct Tokens {
    token: String,
    refresh_token: String,
    expires_in: u64,
}

/// The contract's access-token lifetime (section 2).
const EXPIRES_IN: u64 = 3600;

/// A record the server must hold, and its version.
#[derive(Clone, Debug)]
struct Held {
    data: Value,
    updated_at: i64,
    deleted_at: Option<i64>,
    version: u64,
}

impl Held {
    fn of(planned: &Planned, version: u64) -> Held {
        Held {
            data: planned.data.clone(),
            updated_at: planned.updated_at,
            deleted_at: planned.deleted_at,
            version,
        }
    }
}

/// Whether the throwaway account exists, as far as the run knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Existence {
    Never,
    /// The register request went out and its answer was lost.
    Unknown,
    Created,
}

struct Account {
    email: String,
    password: String,
    existence: Existence,
    access: Option<String>,
    refresh: Option<String>,
}

struct Run<'r, 'e> {
    client: &'r Client,
    report: &'r mut Report<'e>,
    account: Account,
    times: Times,
    /// What the server must hold: (bulk key, id) -> record.
    model: BTreeMap<(&'static str, String), Held>,
    /// Per bulk key: the first record pushed and its first version, as
    /// the device that makes the conflicts last saw it.
    first: BTreeMap<&'static str, (Planned, u64)>,
    /// Per bulk key: the other device's edit of that record (the bulk).
    edited: BTreeMap<&'static str, Planned>,
}

/// Runs every step, then erases the account.
pub fn run(client: &Client, options: &Options, report: &mut Report, facts: &mut Facts) {
    let now = OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let mut run = Run {
        client,
        report,
        account: Account {
            email: format!("smoke-{}@example.invalid", Uuid::new_v4().hyphenated()),
            password: format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()),
            existence: Existence::Never,
            access: None,
            refresh: None,
        },
        times: Times::before(now),
        model: BTreeMap::new(),
        first: BTreeMap::new(),
        edited: BTreeMap::new(),
    };
    let _stopped_at_first_failure = run.steps(options, facts);
    run.erase();
}

impl Run<'_, '_> {
    /// One step: runs `body`, prints its line, and gives its value unless
    /// it failed.
    fn step<T>(
        &mut self,
        name: &str,
        body: impl FnOnce(&mut Self) -> Result<(T, String), String>,
    ) -> Option<T> {
        let started = Instant::now();
        let outcome = body(self);
        let elapsed = started.elapsed();
        match outcome {
            Ok((value, detail)) => {
                self.report.step(Status::Ok, name, elapsed, &detail);
                Some(value)
            }
            Err(reason) => {
                self.report.step(Status::Fail, name, elapsed, &reason);
                None
            }
        }
    }

    fn steps(&mut self, options: &Options, facts: &mut Facts) -> Option<()> {
        let limits = self.step("health", Run::health)?;
        facts.version = Some(limits.0);
        let max_body_bytes = limits.1;
        facts.max_body_bytes = Some(max_body_bytes);
        self.step("register", Run::register)?;
        let mut cursor = String::new();
        for entity in Entity::ALL {
            cursor = self.step(&format!("push {}", entity.slug()), |run| {
                run.push_first(entity)
            })?;
        }
        for entity in Entity::ALL {
            self.step(&format!("pull {}", entity.slug()), |run| run.pull(entity))?;
        }
        self.step("bulk", |run| run.bulk(&cursor))?;
        for resolution in Resolution::ALL {
            self.step(&format!("conflict {}", resolution.as_str()), |run| {
                run.conflict(resolution)
            })?;
        }
        self.step("refresh token", Run::refresh)?;
        self.step("export", Run::export)?;
        let ceiling = options
            .body_probe_max
            .unwrap_or(max_body_bytes)
            .clamp(2 * probe::STEP, BODY_PROBE_MAX_LIMIT);
        facts.body_cap = Some(self.step("body cap", |run| run.body_cap(ceiling, max_body_bytes))?);
        Some(())
    }

    // ------------------------------------------------------------ requests

    fn send(&self, call: &Call) -> Result<Answer, String> {
        self.client.send(call)
    }

    fn access(&self) -> Result<&str, String> {
        self.account
            .access
            .as_deref()
            .ok_or_else(|| "no access token".to_owned())
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let answer = self.send(&Call::get(path, Some(self.access()?)))?;
        typed(path, answer.success(200)?)
    }

    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        status: u16,
    ) -> Result<T, String> {
        let bytes = serde_json::to_vec(body).map_err(|e| format!("encoding {path}: {e}"))?;
        let answer = self.send(&Call::with_body(
            "POST",
            path,
            self.account.access.as_deref(),
            &bytes,
        ))?;
        typed(path, answer.success(status)?)
    }

    // ------------------------------------------------------------ steps

    /// `GET /health`: the version and `max_body_bytes`.
    fn health(&mut self) -> Result<((String, u64), String), String> {
        let answer = self.send(&Call::get("/health", None))?;
        let health: Health = typed("/health", answer.success(200)?)?;
        if health.status != "ok" || health.database != "ok" {
            return Err(format!(
                "status {:?}, database {:?}: expected both \"ok\"",
                health.status, health.database
            ));
        }
        let limits = &health.limits;
        let detail = format!(
            "version {}, max_body_bytes {}, max_batch {}, max_record_bytes {}",
            health.version, limits.max_body_bytes, limits.max_batch, limits.max_record_bytes
        );
        Ok(((health.version, limits.max_body_bytes), detail))
    }

    /// `POST /auth/register`: the throwaway account and its tokens.
    fn register(&mut self) -> Result<((), String), String> {
        let body = json!({
            "email": self.account.email,
            "password": self.account.password,
            "name": "healthsync smoke test",
        });
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        self.account.existence = Existence::Unknown;
        let answer = self.send(&Call::with_body("POST", "/auth/register", None, &bytes))?;
        let data = answer.success(201).inspect_err(|_| {
            if answer.status < 500 {
                self.account.existence = Existence::Never;
            }
        })?;
        let registered: Registered = typed("/auth/register", data)?;
        self.account.existence = Existence::Created;
        self.account.access = Some(registered.token);
        self.account.refresh = Some(registered.refresh_token);
        if registered.user.email != self.account.email {
            return Err(format!(
                "user.email is {:?}, expected {:?}",
                registered.user.email, self.account.email
            ));
        }
        if registered.expires_in != EXPIRES_IN {
            return Err(format!(
                "expires_in is {}, expected {EXPIRES_IN}",
                registered.expires_in
            ));
        }
        Ok((
            (),
            format!("{} (user {})", self.account.email, registered.user.id),
        ))
    }

    /// `POST /<slug>/sync` of three new records (one a tombstone): all
    /// stored as sent, in order. Gives the position after them.
    fn push_first(&mut self, entity: Entity) -> Result<(String, String), String> {
        let ids = [new_id(), new_id(), new_id()];
        let records = plan::first_records(entity, ids, self.times);
        let body = json!({
            entity.list_key(): records.iter().map(|r| wire(r, None)).collect::<Vec<_>>(),
        });
        let answer: PushAnswer = self.post(&format!("/{}/sync", entity.slug()), &body, 200)?;
        let result = &answer.result;
        check_clean(result, records.len())?;
        let sent: Vec<String> = records.iter().map(Planned::id).collect();
        let applied: Vec<String> = result.applied.iter().map(|a| a.id.clone()).collect();
        if applied != sent {
            return Err(format!(
                "applied lists {applied:?}, expected {sent:?} (ids lower-case, in the order sent)"
            ));
        }
        let versions: Vec<u64> = result.applied.iter().map(|a| a.version).collect();
        if versions.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(format!(
                "versions {versions:?} are not increasing in the order sent"
            ));
        }
        if answer.previous_sync_token == answer.sync_token {
            return Err("sync_token equals previous_sync_token after 3 writes".into());
        }
        for (planned, version) in records.iter().zip(&versions) {
            self.model.insert(
                (entity.bulk_key(), planned.id()),
                Held::of(planned, *version),
            );
        }
        if let (Some(first), Some(version)) = (records.first(), versions.first()) {
            self.first
                .insert(entity.bulk_key(), (first.clone(), *version));
        }
        let detail = format!(
            "{} records stored, one a tombstone (versions {})",
            records.len(),
            join(&versions)
        );
        Ok((answer.sync_token, detail))
    }

    /// `GET /<slug>` in pages of 2 from no cursor: the records as pushed,
    /// in version order, the second page from the first's token.
    fn pull(&mut self, entity: Entity) -> Result<((), String), String> {
        let expected = self.held_of(entity);
        let (mut records, has_more, next) = self.page(entity, None)?;
        if records.len() != 2 || !has_more {
            return Err(format!(
                "the first page (limit=2) has {} records and has_more {has_more}, expected 2 and true",
                records.len()
            ));
        }
        let (rest, has_more, _) = self.page(entity, Some(&next))?;
        if has_more {
            return Err("the second page says has_more, expected the end".into());
        }
        records.extend(rest);
        if records.len() != expected.len() {
            return Err(format!(
                "expected {} records, got {}",
                expected.len(),
                records.len()
            ));
        }
        for ((id, held), got) in expected.iter().zip(&records) {
            same(id, held, got)?;
        }
        Ok((
            (),
            format!("{} records in 2 pages, as pushed", records.len()),
        ))
    }

    /// One page of a pull: its records, `has_more`, `next_sync_token`.
    fn page(
        &self,
        entity: Entity,
        cursor: Option<&str>,
    ) -> Result<(Vec<Pulled>, bool, String), String> {
        let mut path = format!("/{}?limit=2", entity.slug());
        if let Some(token) = cursor {
            path.push_str("&sync_token=");
            path.extend(percent_encoding::utf8_percent_encode(
                token,
                percent_encoding::NON_ALPHANUMERIC,
            ));
        }
        let mut data: Map<String, Value> = self.get(&path)?;
        let records: Vec<Pulled> =
            typed(&path, data.remove(entity.list_key()).unwrap_or(Value::Null))?;
        let has_more = data.get("has_more").and_then(Value::as_bool);
        let next = data.get("next_sync_token").and_then(Value::as_str);
        match (has_more, next) {
            (Some(has_more), Some(next)) => Ok((records, has_more, next.to_owned())),
            _ => Err(format!(
                "{path}: has_more or next_sync_token missing or mistyped"
            )),
        }
    }

    /// The model's records of one entity, in version order.
    fn held_of(&self, entity: Entity) -> Vec<(String, Held)> {
        let mut held: Vec<(String, Held)> = self
            .model
            .iter()
            .filter(|((key, _), _)| *key == entity.bulk_key())
            .map(|((_, id), held)| (id.clone(), held.clone()))
            .collect();
        held.sort_by_key(|(_, held)| held.version);
        held
    }

    /// `POST /sync/bulk` from the position after the pushes: device A
    /// edits the first record of four entities and adds a medication, in
    /// one transaction; the page of changes since the cursor is empty
    /// (nothing else was written, and its own writes are left out).
    fn bulk(&mut self, cursor: &str) -> Result<((), String), String> {
        let mut body = Map::new();
        let mut sent: Vec<(Entity, Planned)> = Vec::new();
        for entity in Entity::ALL {
            let (first, version) = self
                .first
                .get(entity.bulk_key())
                .cloned()
                .ok_or("no first record")?;
            let edit = plan::device_a_edit(entity, &first.id(), &new_id(), self.times);
            let base_version = (edit.id() == first.id()).then_some(version);
            body.insert(entity.bulk_key().into(), json!([wire(&edit, base_version)]));
            sent.push((entity, edit));
        }
        body.insert("sync_token".into(), json!(cursor));
        let mut data: Map<String, Value> = self.post("/sync/bulk", &Value::Object(body), 200)?;
        let previous = data.get("previous_sync_token").and_then(Value::as_str);
        if previous != Some(cursor) {
            return Err(format!(
                "previous_sync_token is {previous:?}, expected {cursor:?} (the position after the pushes)"
            ));
        }
        if data.get("sync_token").and_then(Value::as_str) == Some(cursor) {
            return Err("sync_token did not move after 5 writes".into());
        }
        if data.get("has_more") != Some(&Value::Bool(false)) {
            return Err("has_more is not false".into());
        }
        let timestamp = data.get("sync_timestamp").and_then(Value::as_str);
        if timestamp.and_then(millis_of).is_none() {
            return Err(format!("sync_timestamp {timestamp:?} is not RFC 3339"));
        }
        let mut versions = Vec::new();
        for (entity, edit) in sent {
            let section: EntityResult = typed(
                entity.bulk_key(),
                data.remove(entity.bulk_key()).unwrap_or(Value::Null),
            )?;
            check_clean(&section, 1).map_err(|why| format!("{}: {why}", entity.bulk_key()))?;
            let version = match section.applied.as_slice() {
                [applied] if applied.id == edit.id() => applied.version,
                other => {
                    return Err(format!(
                        "{}: applied is {other:?}, expected only {}",
                        entity.bulk_key(),
                        edit.id()
                    ))
                }
            };
            versions.push(version);
            self.model
                .insert((entity.bulk_key(), edit.id()), Held::of(&edit, version));
            self.edited.insert(entity.bulk_key(), edit);
        }
        Ok((
            (),
            format!(
                "4 edits and 1 new record, one transaction (versions {}); no changes from others",
                join(&versions)
            ),
        ))
    }

    /// Device B edits the first record of `resolution`'s entity from its
    /// first version, which device A has edited since: a conflict, resolved
    /// as section 4 says.
    fn conflict(&mut self, resolution: Resolution) -> Result<((), String), String> {
        let entity = plan::entity_of(resolution);
        let key = entity.bulk_key();
        let (first, first_version) = self.first.get(key).cloned().ok_or("no first record")?;
        let stored = self.edited.get(key).cloned().ok_or("no edited record")?;
        let id = first.id();
        let met = self
            .model
            .get(&(key, id.clone()))
            .cloned()
            .ok_or("the record is not in the model")?;
        let case = plan::conflict(resolution, &id, &stored, self.times);
        let body = json!({ entity.list_key(): [wire(&case.client, Some(first_version))] });
        let answer: PushAnswer = self.post(&format!("/{}/sync", entity.slug()), &body, 200)?;
        let result = &answer.result;
        if result.conflicts != 1 || result.synced != 0 || !result.errors.is_empty() {
            return Err(format!(
                "conflicts {}, synced {}, {} errors: expected 1, 0, none",
                result.conflicts,
                result.synced,
                result.errors.len()
            ));
        }
        let detail = match result.conflict_details.as_slice() {
            [detail] => detail,
            other => return Err(format!("{} conflict_details, expected 1", other.len())),
        };
        if detail.entity_id != id || detail.entity_type != key {
            return Err(format!(
                "conflict_details names {} {}, expected {key} {id}",
                detail.entity_type, detail.entity_id
            ));
        }
        if detail.resolution != resolution.as_str() {
            return Err(format!(
                "resolution {}, expected {}",
                detail.resolution,
                resolution.as_str()
            ));
        }
        same(&id, &met, &detail.server_version).map_err(|why| format!("server_version: {why}"))?;
        if detail.client_version.get("data") != Some(&case.client.data) {
            return Err("client_version is not the record as sent".into());
        }
        let held_now = result
            .server_updates
            .iter()
            .find(|record| record.id == id)
            .ok_or_else(|| format!("server_updates lacks {id}"))?;
        let held = Held {
            data: case.held_data.clone(),
            updated_at: case.held_updated_at,
            deleted_at: None,
            version: held_now.version,
        };
        same(&id, &held, held_now).map_err(|why| format!("server_updates: {why}"))?;
        let wrote = answer.previous_sync_token != answer.sync_token;
        let applied: Vec<&str> = result.applied.iter().map(|a| a.id.as_str()).collect();
        let expected_applied: &[&str] = match resolution {
            Resolution::ClientWins => &[id.as_str()],
            _ => &[],
        };
        if resolution != Resolution::KeptBoth && applied != expected_applied {
            return Err(format!(
                "applied is {applied:?}, expected {expected_applied:?}"
            ));
        }
        if applied.contains(&id.as_str()) && resolution == Resolution::KeptBoth {
            return Err("applied lists the original id of a kept-both meal".into());
        }
        let summary = match resolution {
            Resolution::ServerWins | Resolution::KeptBoth if held_now.version != met.version => {
                return Err(format!(
                    "the stored record took version {}, expected it unchanged at {}",
                    held_now.version, met.version
                ))
            }
            Resolution::ServerWins if wrote => {
                return Err("sync_token moved, yet nothing was to be written".into())
            }
            Resolution::ClientWins | Resolution::Merged if held_now.version <= met.version => {
                return Err(format!(
                    "the resolved record has version {}, expected one above {}",
                    held_now.version, met.version
                ))
            }
            Resolution::ServerWins => "the other device's later edit stands".to_owned(),
            Resolution::ClientWins => "this later edit replaced the other device's".to_owned(),
            Resolution::Merged => {
                "fields merged, bodyMeasurements united, notes combined".to_owned()
            }
            Resolution::KeptBoth => {
                let copy = self.kept_copy(&id, &case.client, &result.server_updates)?;
                format!("both kept, this one under {copy}")
            }
        };
        self.model.insert((key, id), held);
        Ok(((), format!("{}: {summary}", entity.slug())))
    }

    /// The kept-both copy in `server_updates`: a new UUID v5 holding the
    /// client's record, added to the model. Gives its id.
    fn kept_copy(
        &mut self,
        id: &str,
        client: &Planned,
        server_updates: &[Pulled],
    ) -> Result<String, String> {
        let copy = match server_updates
            .iter()
            .filter(|r| r.id != id)
            .collect::<Vec<_>>()[..]
        {
            [copy] if server_updates.len() == 2 => copy.clone(),
            _ => {
                return Err(format!(
                    "server_updates has {} records, expected the original and the kept copy",
                    server_updates.len()
                ))
            }
        };
        match Uuid::parse_str(&copy.id) {
            Ok(uuid) if uuid.get_version_num() == 5 && copy.id == copy.id.to_lowercase() => {}
            _ => {
                return Err(format!(
                    "the kept copy's id {} is not a lower-case UUID v5",
                    copy.id
                ))
            }
        }
        let held = Held::of(client, copy.version);
        same(&copy.id, &held, &copy).map_err(|why| format!("the kept copy: {why}"))?;
        self.model
            .insert((Entity::Meals.bulk_key(), copy.id.clone()), held);
        Ok(copy.id)
    }

    /// `POST /auth/refresh`: a new pair; the new access token is used from
    /// here on.
    fn refresh(&mut self) -> Result<((), String), String> {
        let refresh = self.account.refresh.clone().ok_or("no refresh token")?;
        let answer = self.send(&Call {
            method: "POST",
            path: "/auth/refresh",
            bearer: Some(&refresh),
            body: None,
            expect_continue: false,
        })?;
        let tokens: Tokens = typed("/auth/refresh", answer.success(200)?)?;
        if tokens.expires_in != EXPIRES_IN {
            return Err(format!(
                "expires_in is {}, expected {EXPIRES_IN}",
                tokens.expires_in
            ));
        }
        if tokens.refresh_token == refresh || tokens.token.is_empty() {
            return Err("the refresh token did not rotate".into());
        }
        self.account.access = Some(tokens.token);
        self.account.refresh = Some(tokens.refresh_token);
        Ok((
            (),
            "rotated; the new access token is used from here on".into(),
        ))
    }

    /// `GET /account/export`: every record the model holds, tombstones
    /// included, and nothing else.
    fn export(&mut self) -> Result<((), String), String> {
        let mut data: Map<String, Value> = self.get("/account/export")?;
        let email = data
            .get("user")
            .and_then(|user| user.get("email"))
            .and_then(Value::as_str);
        if email != Some(self.account.email.as_str()) {
            return Err(format!("user.email is {email:?}"));
        }
        let (mut total, mut tombstones) = (0, 0);
        for entity in Entity::ALL {
            let key = entity.bulk_key();
            let records: Vec<Pulled> = typed(key, data.remove(key).unwrap_or(Value::Null))?;
            let expected = self.held_of(entity);
            if records.len() != expected.len() {
                return Err(format!(
                    "{key}: expected {} records, got {}",
                    expected.len(),
                    records.len()
                ));
            }
            for (id, held) in &expected {
                let got = records
                    .iter()
                    .find(|record| record.id == *id)
                    .ok_or_else(|| format!("{key}: {id} is missing"))?;
                same(id, held, got).map_err(|why| format!("{key}: {why}"))?;
                tombstones += usize::from(held.deleted_at.is_some());
            }
            total += records.len();
        }
        Ok((
            (),
            format!("{total} records ({tombstones} tombstones), each as expected"),
        ))
    }

    /// The body-size probe (`probe`), judged against `max_body_bytes`.
    fn body_cap(&mut self, ceiling: u64, max_body_bytes: u64) -> Result<(u64, String), String> {
        let token = self.access()?.to_owned();
        let mut bodies = probe::Bodies::up_to(ceiling)?;
        let found = probe::search(ceiling, &mut |size| {
            probe::send(self.client, &token, &mut bodies, size)
        })?;
        let cap = found.cap;
        let probes = found.probes;
        match found.refused {
            Some((refused, how)) if cap < max_body_bytes => Err(format!(
                "{cap} bytes reach the binary whole, {refused} do not ({how}); /health advertises \
                 max_body_bytes={max_body_bytes}: set MAX_BODY_BYTES={cap} (or raise the host's \
                 limit: FcgidMaxRequestLen, LimitRequestBody)"
            )),
            Some((refused, _)) => Ok((
                cap,
                format!(
                    "{cap} bytes reach the binary, {refused} do not ({probes} probes); \
                     /health advertises {max_body_bytes}: fine"
                ),
            )),
            None if cap < max_body_bytes => Ok((
                cap,
                format!(
                    "{cap} bytes reach the binary ({probes} probes; not probed beyond \
                     {ceiling}); /health advertises {max_body_bytes}"
                ),
            )),
            None => Ok((
                cap,
                format!(
                    "{cap} bytes reach the binary ({probes} probes, up to the ceiling); \
                     /health advertises {max_body_bytes}: fine"
                ),
            )),
        }
    }

    // ------------------------------------------------------------ erase

    /// The last step, whatever happened before: `DELETE /account`, then
    /// the token must be refused. Logs in first when the register answer
    /// was lost or the token no longer works.
    fn erase(&mut self) {
        if self.account.existence == Existence::Never {
            return;
        }
        let email = self.account.email.clone();
        self.step("erase account", |run| {
            run.erase_account()
                .map(|detail| ((), detail))
                .map_err(|why| format!("{email} is left behind: {why}"))
        });
    }

    fn erase_account(&mut self) -> Result<String, String> {
        let token_unknown =
            self.account.access.is_none() || self.account.existence == Existence::Unknown;
        if token_unknown && !self.log_in()? {
            return Ok("nothing to erase: the account was never created".into());
        }
        let body = serde_json::to_vec(&json!({"password": self.account.password}))
            .map_err(|e| e.to_string())?;
        let mut answer = self.delete_account(&body)?;
        if answer.status == 401 && self.log_in()? {
            answer = self.delete_account(&body)?;
        }
        let data = answer.success(200)?;
        if data.get("erased") != Some(&Value::Bool(true)) {
            return Err(format!("the answer is {data}, expected erased: true"));
        }
        self.account.existence = Existence::Never;
        let after = self.send(&Call::get("/account", Some(self.access()?)))?;
        after
            .failure(401)
            .map_err(|why| format!("erased, but GET /account with its token: {why}"))?;
        Ok(format!(
            "{} and its records erased; its token is refused",
            self.account.email
        ))
    }

    fn delete_account(&self, body: &[u8]) -> Result<Answer, String> {
        self.send(&Call::with_body(
            "DELETE",
            "/account",
            Some(self.access()?),
            body,
        ))
    }

    /// `POST /auth/login` for a fresh access token: false when the account
    /// does not exist.
    fn log_in(&mut self) -> Result<bool, String> {
        let body = serde_json::to_vec(&json!({
            "email": self.account.email,
            "password": self.account.password,
        }))
        .map_err(|e| e.to_string())?;
        let answer = self.send(&Call::with_body("POST", "/auth/login", None, &body))?;
        if answer.status == 401 && answer.failure(401).as_deref() == Ok("INVALID_CREDENTIALS") {
            return Ok(false);
        }
        let tokens: Tokens = typed("/auth/login", answer.success(200)?)?;
        self.account.access = Some(tokens.token);
        self.account.refresh = Some(tokens.refresh_token);
        Ok(true)
    }
}

/// A push result with `count` records stored as sent and nothing else.
fn check_clean(result: &EntityResult, count: usize) -> Result<(), String> {
    if let Some(error) = result.errors.first() {
        return Err(format!("a record was refused: {error}"));
    }
    if result.synced != count as u64 || result.conflicts != 0 {
        return Err(format!(
            "synced {}, conflicts {}: expected {count} and 0",
            result.synced, result.conflicts
        ));
    }
    if !result.conflict_details.is_empty() || !result.server_updates.is_empty() {
        return Err(format!(
            "{} conflict_details and {} server_updates, expected none",
            result.conflict_details.len(),
            result.server_updates.len()
        ));
    }
    if result.applied.len() != count {
        return Err(format!(
            "applied lists {} records, expected {count}",
            result.applied.len()
        ));
    }
    Ok(())
}

/// `got` is the record `held` under `id`: same id, version, data (as JSON
/// values), and the same instants.
fn same(id: &str, held: &Held, got: &Pulled) -> Result<(), String> {
    if got.id != id {
        return Err(format!("id {}, expected {id}", got.id));
    }
    if got.version != held.version {
        return Err(format!(
            "{id}: version {}, expected {}",
            got.version, held.version
        ));
    }
    if got.data != held.data {
        return Err(format!(
            "{id}: data {}, expected {}",
            short(&got.data),
            short(&held.data)
        ));
    }
    if millis_of(&got.updated_at) != Some(held.updated_at) {
        return Err(format!(
            "{id}: updated_at {}, expected {}",
            got.updated_at,
            rfc3339(held.updated_at)
        ));
    }
    let deleted_at = got.deleted_at.as_deref().map(millis_of);
    if deleted_at != held.deleted_at.map(Some) {
        return Err(format!(
            "{id}: deleted_at {:?}, expected {:?}",
            got.deleted_at,
            held.deleted_at.map(rfc3339)
        ));
    }
    Ok(())
}

/// A record as pushed, with `base_version` only when given.
fn wire(planned: &Planned, base_version: Option<u64>) -> Value {
    let mut record = json!({
        "id": planned.id_sent,
        "data": planned.data,
        "updated_at": rfc3339(planned.updated_at),
        "deleted_at": planned.deleted_at.map(rfc3339),
    });
    if let (Some(version), Some(map)) = (base_version, record.as_object_mut()) {
        map.insert("base_version".into(), json!(version));
    }
    record
}

fn typed<T: DeserializeOwned>(what: &str, data: Value) -> Result<T, String> {
    serde_json::from_value(data)
        .map_err(|error| format!("{what}: the answer does not have the contract's shape: {error}"))
}

fn new_id() -> String {
    Uuid::new_v4().hyphenated().to_string()
}

/// UTC milliseconds as the contract writes times: `2024-01-15T10:30:00.123Z`.
fn rfc3339(millis: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_default()
}

/// An RFC 3339 time as UTC milliseconds.
fn millis_of(text: &str) -> Option<i64> {
    let at = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// JSON on one line, cut to a readable length.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(160) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

fn join(versions: &[u64]) -> String {
    versions
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_go_out_with_milliseconds_and_come_back_equal() {
        assert_eq!(rfc3339(1_705_314_600_123), "2024-01-15T10:30:00.123Z");
        assert_eq!(rfc3339(1_705_314_600_000), "2024-01-15T10:30:00.000Z");
        assert_eq!(
            millis_of("2024-01-15T10:30:00.123Z"),
            Some(1_705_314_600_123)
        );
        assert_eq!(
            millis_of("2024-01-15T11:30:00.123+01:00"),
            Some(1_705_314_600_123)
        );
        assert_eq!(millis_of("yesterday"), None);
    }

    #[test]
    fn a_record_goes_out_with_base_version_only_when_given() {
        let planned = Planned {
            id_sent: "ABC".into(),
            data: json!({"a": 1}),
            updated_at: 1_705_314_600_123,
            deleted_at: None,
        };
        assert_eq!(
            wire(&planned, None),
            json!({"id": "ABC", "data": {"a": 1},
                   "updated_at": "2024-01-15T10:30:00.123Z", "deleted_at": null})
        );
        assert_eq!(wire(&planned, Some(4))["base_version"], json!(4));
    }
}
