//! The sync engine (contract sections 4 to 6): one path for push, bulk and
//! pull. `sync` owns the writing transaction of a push (a bulk with one
//! entity and no page) and of a bulk; `pull` reads a page. Both open with
//! the session checks in the same packet as their first reads, call the
//! pure merge of `sync/` per record, and answer in the wire types of
//! `wire`. No HTTP here beyond `ApiError`; no SQL (that is `store/`).
//!
//! Round trips, on a warm connection: a pull is one (page, count, user);
//! a push is three (begin, count, user, the batch's rows `FOR UPDATE`; the
//! rows written by one prepared statement; the user's new position and
//! `COMMIT`); a bulk writes one statement per entity and reads its page's
//! rows between.
//!
//! Contract section 9 rides in the same packets: a keyed request reads its
//! `Idempotency-Key` right after the user row's lock and, the first time,
//! stores its rendered answer with the commit; the entities' digests move
//! by XOR per write and are written with the user's new position; the
//! conflict log is written with the commit.

pub mod validate;
pub mod wire;

use std::collections::{HashMap, HashSet};

use serde_json::value::RawValue;

use crate::auth::session;
use crate::auth::tokens::AccessClaims;
use crate::ctx::{Ctx, Env, Seen, SyncFacts};
use crate::error::ApiError;
use crate::store::db::{self, Db, Packet, Slot};
use crate::store::records::{self, Cursor, Pulled, Span, Upto, Write};
use crate::store::users::{Bounds, Lock, Position, User};
use crate::store::{clock, conflicts, idempotency};
use crate::sync::{self, digest, Entity, Outcome, Record, Resolution, Stored};

pub use validate::Batch;
use wire::{Applied, ConflictDetail, EntityResult, Held, PullAnswer, Rendered, Token};

pub const DEFAULT_PULL_LIMIT: usize = 100;
pub const MAX_PULL_LIMIT: usize = 1000;
/// A conflict log and stored answer up to this size ride in the packet
/// that commits; larger ones are written by prepared statements first.
/// The server lexes and unescapes every literal byte of a packet, which
/// costs more than the round trip a prepared statement adds from a few
/// KiB on: 25 logged conflicts (about 10 KiB of JSON) answered 12 % sooner
/// by prepared statement.
const INLINE_BYTES: usize = 2 * 1024;
/// `last_sync_at` and a device's last sync are rewritten at most this
/// often by reads, so a pull stays a read (no commit to wait for).
const LAST_SYNC_RESOLUTION_MS: i64 = 60_000;

/// A page of changes a bulk asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageAsk {
    pub cursor: Option<Cursor>,
    pub limit: usize,
}

/// A push or a bulk, parsed and validated before any lock is taken.
pub struct SyncAsk {
    /// In the contract's entity order.
    pub batches: Vec<Batch>,
    /// `None` for a push.
    pub page: Option<PageAsk>,
}

/// What a sync did, as its answer is rendered from it (inside the
/// transaction, so a keyed request can store the answer with its writes).
pub struct Synced {
    pub results: Vec<(Entity, EntityResult)>,
    pub page: Vec<Pulled>,
    pub has_more: bool,
    /// The user's position before this request's writes.
    pub previous: u64,
    /// Where the device stands now: after everything sent or written, or
    /// after the page's last record when more remain.
    pub position: u64,
    pub sync_timestamp: i64,
    /// Every entity's digest at `position` (contract section 9.2), in
    /// `Entity::ALL` order: only for a bulk's last page.
    pub digests: Option<[u64; 5]>,
    /// The oldest cursor the server still accepts (section 9.5).
    pub oldest_sync_token: Option<u64>,
}

impl Synced {
    /// The counts of this sync for the log line: records stored, pulled,
    /// conflicts by entity and resolution, refused records by code.
    pub fn facts(&self) -> SyncFacts {
        let mut facts = SyncFacts {
            pulled: self.page.len() as u64,
            ..SyncFacts::default()
        };
        for (_, result) in &self.results {
            result.count_into(&mut facts);
        }
        facts
    }
}

/// An `Idempotency-Key` (contract section 9.1), checked, with what the
/// request must match to replay: its route and the SHA-256 of its body.
pub struct Keyed {
    pub key: Vec<u8>,
    pub route: String,
    pub body_hash: [u8; 32],
}

/// A sync's answer: the `data` of the envelope, and whether it is the
/// stored answer of an earlier request with the same key.
pub struct Answered {
    pub data: Box<RawValue>,
    pub replayed: bool,
}

/// What the transaction ended with: a replay, or a fresh answer (with
/// the user of a pure pull, who records the sync after commit).
enum Done {
    Replayed(Vec<u8>),
    Fresh(Box<RawValue>, Option<Box<User>>, u64),
}

/// Runs a push or a bulk in one transaction and renders its answer with
/// `render`. The checks answer in the contract's order: the token was
/// verified by the caller; here the user (401), the limit (429), the
/// body's own refusal (`ask`), the device header and the key, then
/// `SYNC_DISABLED`, a key used for something else (422), a replay, and
/// the cursor (410).
pub fn sync(
    ctx: &mut Ctx,
    claims: &AccessClaims,
    ask: &Result<SyncAsk, ApiError>,
    device: &Result<Option<&str>, ApiError>,
    key: &Result<Option<Keyed>, ApiError>,
    render: &dyn Fn(&Synced) -> Result<Box<RawValue>, ApiError>,
    seen: &mut Seen,
) -> Result<Answered, ApiError> {
    let writes = matches!(ask, Ok(ask) if ask.batches.iter().any(|b| !b.is_empty()));
    let keyed = matches!(key, Ok(Some(_)));
    // Writers lock the user row; so does a keyed request, which stores its
    // key and must serialize with another request holding the same key. A
    // pure pull shares it, which still waits for the user's writers so
    // `sync_timestamp` is exact.
    let lock = if writes || keyed {
        Lock::Update
    } else {
        Lock::Share
    };
    let (db, env) = ctx.db()?;
    let keys_fresh_since = env.now_millis() - i64::from(env.config.idempotency_hours) * 3_600_000;
    let done = db::transaction(db, |db, attempt| {
        let mut packet = Packet::new();
        let opening = session::push_open(&mut packet, env, claims, lock, attempt == 1)?;
        // After the user row's lock: what the key's last holder committed.
        let key_slot = match key {
            Ok(Some(keyed)) => Some(idempotency::push_find(
                &mut packet,
                &claims.user_id,
                &keyed.key,
                keys_fresh_since,
            )?),
            _ => None,
        };
        let mut locks: Option<Slot> = None;
        let mut page_slot = None;
        if let Ok(ask) = ask {
            let ids: Vec<(Entity, Vec<&str>)> = ask
                .batches
                .iter()
                .map(|batch| (batch.entity, batch.ids()))
                .collect();
            locks = records::push_lock_batches(&mut packet, &claims.user_id, &ids)?;
            if let Some(page) = ask.page {
                // Up to the user's position before this request's writes:
                // every version above it is one this request writes.
                let span = Span {
                    cursor: page.cursor.unwrap_or(Cursor::AfterVersion(0)),
                    upto: Upto::UserPosition,
                    limit: page.limit,
                };
                page_slot = Some(records::push_page_entries(
                    &mut packet,
                    &claims.user_id,
                    &Entity::ALL,
                    span,
                )?);
            }
        }
        let mut sets = session::run_opening(db, env, packet)?;
        let user = session::finish_open(db, &mut sets, opening, claims, seen)?;
        let ask = ask.as_ref().map_err(Clone::clone)?;
        let device = device.clone()?;
        let key = key.as_ref().map_err(Clone::clone)?;
        if !user.sync_enabled {
            return Err(ApiError::SyncDisabled);
        }
        if let (Some(keyed), Some(slot)) = (key, key_slot) {
            if let Some(stored) = idempotency::read_found(&mut sets, slot)? {
                if stored.route != keyed.route || stored.body_hash != keyed.body_hash {
                    return Err(ApiError::IdempotencyKeyReused);
                }
                return Ok(Done::Replayed(stored.answer));
            }
        }
        if let Some(page) = ask.page {
            check_cursor(user.bounds(), page.cursor)?;
        }

        let received_at = receive_time(&user);
        let mut counter = user.change_counter;
        let mut quota = Quota {
            records: user.record_count,
            bytes: user.data_bytes,
            max_records: env.config.max_records_per_user,
            max_bytes: env.config.max_user_data_bytes,
        };
        let mut locked = records::read_locked_batches(&mut sets, locks)?;
        let mut merged = Vec::with_capacity(ask.batches.len());
        for batch in &ask.batches {
            let stored = locked.remove(&batch.entity).unwrap_or_default();
            merged.push(merge_batch(
                db,
                &user.id,
                batch,
                stored,
                &mut counter,
                &mut quota,
                env.config.max_record_bytes,
            )?);
        }
        let (page, has_more, page_end) = match (ask.page, page_slot) {
            (Some(page), Some(slot)) => {
                let (entries, has_more) =
                    records::read_page_entries(&mut sets, slot, &Entity::ALL, page.limit)?;
                let cursor = page.cursor.unwrap_or(Cursor::AfterVersion(0));
                let rows = records::page_rows(db, &user.id, cursor, &entries)?;
                let rows = without_written(rows, &merged);
                let (rows, cut) = records::within_page_bytes(rows, env.config.max_page_bytes);
                let end = match cut {
                    true => rows.last().map(|row| row.version),
                    false => entries.last().map(|entry| entry.version),
                };
                (rows, has_more || cut, end)
            }
            _ => (Vec::new(), false, None),
        };
        let wrote = counter != user.change_counter;
        // Complete: everything up to the user's position has been sent or
        // was written by this request. Otherwise: up to the page's end.
        let position = match (has_more, page_end) {
            (true, Some(end)) => end,
            _ => counter,
        };
        // Later writes get a receive time strictly after this one.
        let sync_timestamp = if wrote {
            received_at
        } else {
            let just_before_now = clock::to_millis(time::OffsetDateTime::now_utc()) - 1;
            user.last_write_at
                .map_or(just_before_now, |last| last.max(just_before_now))
        };
        // The digests move by this request's writes alone (section 9.2):
        // under the user's lock they are exact at `counter`.
        let mut digests = user.digests;
        let mut entity_versions = user.entity_versions;
        for one in &merged {
            digests[one.entity.index()] ^= one.digest_delta;
            if let Some(highest) = one.pending.iter().map(|write| write.version).max() {
                let written = &mut entity_versions[one.entity.index()];
                *written = (*written).max(highest);
            }
        }
        let conflicts = conflict_entries(&merged, user.conflict_seq, received_at, device);
        let conflict_seq = conflicts
            .last()
            .map_or(user.conflict_seq, |entry| entry.seq);
        let synced = Synced {
            results: merged
                .iter_mut()
                .map(|one| (one.entity, std::mem::take(&mut one.result)))
                .collect(),
            page,
            has_more,
            previous: user.change_counter,
            position,
            sync_timestamp,
            digests: (!has_more && ask.page.is_some()).then_some(digests),
            oldest_sync_token: user.bounds().oldest_sync_token(),
        };
        let data = render(&synced)?;
        seen.sync = Some(synced.facts());

        // The rows go by prepared statements (binary values: nothing to
        // escape here or to parse there, measured faster than literals in
        // the packet); the user's new position, the conflict log, the key
        // and COMMIT follow in one.
        for one in &merged {
            records::write_batch(db, &user.id, one.entity, &one.pending, received_at)?;
        }
        let mut packet = Packet::new();
        if wrote {
            let advance = records::Advance {
                change_counter: counter,
                last_write_at: received_at,
                last_sync_at: env.now_millis(),
                record_count: quota.records,
                data_bytes: quota.bytes,
                digests,
                entity_versions,
                conflict_seq,
            };
            records::push_advance_user(&mut packet, &user.id, &advance)?;
        } else if conflict_seq != user.conflict_seq {
            // Conflicts the server's side won wrote no record.
            records::push_conflict_seq(&mut packet, &user.id, conflict_seq)?;
        }
        let new_key = key.as_ref().map(|keyed| idempotency::NewKey {
            key: &keyed.key,
            route: &keyed.route,
            body_hash: &keyed.body_hash,
            answer: data.get().as_bytes(),
            now: env.now_millis(),
            expired_before: keys_fresh_since,
        });
        // The log and the answer ride with the commit when small; large
        // ones go first by prepared statements (binary values, and the
        // packet stays far below a server's `max_allowed_packet`).
        let extra_bytes = conflicts
            .iter()
            .map(conflicts::Entry::record_bytes)
            .sum::<usize>()
            + new_key.as_ref().map_or(0, |new| new.answer.len());
        if extra_bytes <= INLINE_BYTES {
            conflicts::push_log(&mut packet, &user.id, &conflicts)?;
            if let Some(new) = &new_key {
                idempotency::push_store(&mut packet, &user.id, new)?;
            }
        } else {
            conflicts::write_log(db, &user.id, &conflicts)?;
            if let Some(new) = &new_key {
                idempotency::store(db, &user.id, new)?;
            }
        }
        // A writer records the sync in its own transaction; a reader does
        // it after commit, so its shared lock is never upgraded (two
        // readers upgrading at once would deadlock).
        if lock == Lock::Update {
            let synced = (user.id.as_str(), user.last_sync_at);
            push_record_sync(&mut packet, env, synced, device, position, wrote)?;
        }
        packet.commit();
        db.run(packet)?;
        Ok(Done::Fresh(
            data,
            (lock == Lock::Share).then(|| Box::new(user)),
            position,
        ))
    })?;
    match done {
        Done::Replayed(answer) => {
            let text = String::from_utf8(answer)
                .map_err(|_| ApiError::Internal("a stored answer is not UTF-8".into()))?;
            let data = RawValue::from_string(text)
                .map_err(|_| ApiError::Internal("a stored answer is not JSON".into()))?;
            Ok(Answered {
                data,
                replayed: true,
            })
        }
        Done::Fresh(data, pull_only, position) => {
            if let (Some(user), Ok(device)) = (pull_only, device) {
                let mut packet = Packet::new();
                let synced = (user.id.as_str(), user.last_sync_at);
                push_record_sync(&mut packet, env, synced, *device, position, false)?;
                db.run(packet)?;
            }
            Ok(Answered {
                data,
                replayed: false,
            })
        }
    }
}

/// The conflict log's entries for this request's conflicts (section 9.4),
/// numbered on from the user's last `seq`: the versions as the answer
/// gives them, rendered once.
fn conflict_entries(
    merged: &[Merged],
    last_seq: u64,
    at: i64,
    device: Option<&str>,
) -> Vec<conflicts::Entry> {
    let details = merged
        .iter()
        .flat_map(|one| one.result.conflict_details.iter());
    (1u64..)
        .zip(details)
        .map(|(offset, detail)| conflicts::Entry {
            seq: last_seq + offset,
            at,
            device_id: device.map(str::to_owned),
            entity_type: detail.entity_type.to_owned(),
            entity_id: detail.entity_id.clone(),
            resolution: detail.resolution.to_owned(),
            client_version: detail.client_version.0.clone(),
            server_version: detail.server_version.0.clone(),
        })
        .collect()
}

fn unrenderable(error: serde_json::Error) -> ApiError {
    ApiError::Internal(format!("rendering a conflict: {error}"))
}

/// A pull's query, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullAsk {
    pub cursor: Option<Cursor>,
    pub limit: usize,
}

/// One page of one entity's changes. With a sync token (or none) one
/// round trip and no transaction; with `since`, under the user's shared
/// lock, which waits for the user's writers to commit, so every write with
/// an earlier receive time is visible and none still to come can get one.
pub fn pull(
    ctx: &mut Ctx,
    claims: &AccessClaims,
    entity: Entity,
    ask: &Result<PullAsk, ApiError>,
    device: &Result<Option<&str>, ApiError>,
    seen: &mut Seen,
) -> Result<PullAnswer, ApiError> {
    let locked = matches!(
        ask,
        Ok(PullAsk {
            cursor: Some(Cursor::ReceivedAfter(_)),
            ..
        })
    );
    let (db, env) = ctx.db()?;
    let mut read = |db: &mut Db, attempt: u32| -> Result<(Position, Vec<Pulled>, bool), ApiError> {
        // Unlocked, the page goes first: the client decodes its rows while
        // the server runs the two small statements after it, and a user
        // row read after the page can only be newer, which the cursor
        // checks allow. Locked (`since`), the page must follow the lock.
        let lock = if locked { Lock::Share } else { Lock::None };
        let push_page = |packet: &mut Packet| -> Result<Option<Slot>, ApiError> {
            let Ok(ask) = ask else { return Ok(None) };
            let span = Span {
                cursor: ask.cursor.unwrap_or(Cursor::AfterVersion(0)),
                upto: Upto::Any,
                limit: ask.limit,
            };
            Ok(Some(records::push_changes_of(
                packet,
                &claims.user_id,
                entity,
                span,
            )?))
        };
        let count = attempt == 1;
        let mut packet = Packet::new();
        let push_open = |packet: &mut Packet| {
            session::push_open_position(packet, env, claims, entity, lock, count)
        };
        let (opening, page_slot) = if locked {
            let opening = push_open(&mut packet)?;
            (opening, push_page(&mut packet)?)
        } else {
            let page_slot = push_page(&mut packet)?;
            (push_open(&mut packet)?, page_slot)
        };
        let mut sets = session::run_opening(db, env, packet)?;
        let user = session::finish_open_position(db, &mut sets, opening, claims, seen)?;
        let ask = ask.as_ref().map_err(Clone::clone)?;
        device.clone()?;
        if !user.sync_enabled {
            return Err(ApiError::SyncDisabled);
        }
        check_cursor(user.bounds, ask.cursor)?;
        let (rows, has_more) = match page_slot {
            Some(slot) => records::read_changes_of(&mut sets, slot, entity, ask.limit)?,
            None => (Vec::new(), false),
        };
        let (rows, cut) = records::within_page_bytes(rows, env.config.max_page_bytes);
        let has_more = has_more || cut;
        Ok((user, rows, has_more))
    };
    let cursor = ask.as_ref().ok().and_then(|ask| ask.cursor);
    let (user, rows, has_more) = if locked {
        db::transaction(db, read)?
    } else {
        // A write to the entity that commits between the page and the user
        // row leaves a complete page behind the digest read after it: the
        // page is read again (rarely: the two statements travel together).
        let mut attempt = 1;
        loop {
            let (user, rows, has_more) = read(db, attempt)?;
            let next = next_position(&rows, has_more, cursor, None);
            if has_more || !raced(&user, next) || attempt == PULL_READS {
                break (user, rows, has_more);
            }
            attempt += 1;
        }
    };
    let position_if_complete = locked.then_some(user.bounds.change_counter);
    let next = next_position(&rows, has_more, cursor, position_if_complete);
    // A complete page may end below the purge watermark (the versions
    // after its last record were purged tombstones, or other entities'):
    // its token is raised to the watermark, which is safe (every later
    // write is above the user's position, itself at or above it), or the
    // next pull would be refused 410 for the token this page gave.
    let next = match has_more {
        true => next,
        false => next.max(user.bounds.purged_version),
    };
    // The user row was read after the page (or under its lock), so its
    // digest is the entity's state at the user's position. A complete
    // page holds every write up to `next`; when none of the entity's
    // writes is above `next`, its state at `next` is that one (section
    // 9.2). Still raced after `PULL_READS` reads: no digest this time.
    let digest = match has_more || raced(&user, next) {
        false => Some(digest::Digest(user.digest)),
        true => None,
    };
    let mut packet = Packet::new();
    let synced = (claims.user_id.as_str(), user.last_sync_at);
    push_record_sync(&mut packet, env, synced, device.clone()?, next, false)?;
    db.run(packet)?;
    Ok(PullAnswer {
        entity,
        records: rows,
        has_more,
        next_sync_token: Token(next),
        digest,
        oldest_sync_token: user.bounds.oldest_sync_token().map(Token),
    })
}

/// Reads of an unlocked pull page that a concurrent write keeps racing.
const PULL_READS: u32 = 3;

/// True when the entity took a write above a complete page's end `next`
/// after the page was read: its digest is then ahead of the page. (The
/// highest version written may be a purged tombstone's, at or below the
/// purge watermark, which no cursor accepted is below.)
fn raced(user: &Position, next: u64) -> bool {
    let written = user.entity_version;
    written > next && written > user.bounds.purged_version
}

/// Refuses a cursor older than purged tombstones (the device must pull
/// from scratch), or one from beyond the user's sequence (a token that is
/// not this user's, or a database restored from a backup).
pub fn check_cursor(user: Bounds, cursor: Option<Cursor>) -> Result<(), ApiError> {
    let too_old = match cursor {
        Some(Cursor::AfterVersion(version)) => {
            version < user.purged_version || version > user.change_counter
        }
        Some(Cursor::ReceivedAfter(millis)) => {
            matches!(user.purged_before, Some(purged) if millis < purged)
        }
        None => false,
    };
    if too_old {
        return Err(ApiError::ResetRequired);
    }
    Ok(())
}

/// A bulk's page, read before its writes, less the records those writes
/// replace: each has moved above the page (to a version this request
/// took), and the device holds it as sent or as its conflict result.
fn without_written(rows: Vec<Pulled>, merged: &[Merged]) -> Vec<Pulled> {
    let written: HashSet<(Entity, &str)> = merged
        .iter()
        .flat_map(|one| {
            one.pending
                .iter()
                .map(move |write| (one.entity, write.id.as_str()))
        })
        .collect();
    if written.is_empty() {
        return rows;
    }
    rows.into_iter()
        .filter(|row| !written.contains(&(row.entity, row.id.as_str())))
        .collect()
}

/// Where the next page starts: after the last record sent; on a complete
/// page read under the user's lock, the user's position then; otherwise
/// the request's own cursor (never an earlier position).
fn next_position(
    rows: &[Pulled],
    has_more: bool,
    cursor: Option<Cursor>,
    position_if_complete: Option<u64>,
) -> u64 {
    let last = rows.last().map(|row| row.version);
    match (has_more, position_if_complete) {
        (false, Some(position)) => position.max(last.unwrap_or(0)),
        _ => match (last, cursor) {
            (Some(version), _) => version,
            (None, Some(Cursor::AfterVersion(version))) => version,
            (None, _) => 0,
        },
    }
}

/// Records the sync in `users.last_sync_at` and, with `X-Device-Id`, in
/// `sync_status`. A read skips the first write when it is recent, so a
/// repeated pull writes nothing and sends nothing.
fn push_record_sync(
    packet: &mut Packet,
    env: &Env,
    (user_id, last_sync_at): (&str, Option<i64>),
    device: Option<&str>,
    position: u64,
    wrote: bool,
) -> Result<(), ApiError> {
    let now = env.now_millis();
    let recent = matches!(last_sync_at, Some(at) if now - at < LAST_SYNC_RESOLUTION_MS);
    if !wrote && !recent {
        records::push_touch_last_sync(packet, user_id, now)?;
    }
    if let Some(device) = device {
        records::push_record_device(packet, user_id, device, now, position)?;
    }
    Ok(())
}

/// The server receive time of a write: the clock read under the user's
/// lock, kept strictly after the user's previous write, so that
/// `server_updated_at > since` is exact.
fn receive_time(user: &User) -> i64 {
    let now = clock::to_millis(time::OffsetDateTime::now_utc());
    match user.last_write_at {
        Some(last) if last >= now => last + 1,
        _ => now,
    }
}

/// The user's quota as a transaction's writes go (contract section 7, v2):
/// rows and bytes of `data`, starting from the user row's counts, which
/// the transaction writes back.
struct Quota {
    records: u64,
    bytes: u64,
    max_records: u64,
    max_bytes: u64,
}

impl Quota {
    /// Whether a client's write of `new_len` bytes over a row of `old_len`
    /// (None: a new row) fits.
    fn admits(&self, old_len: Option<u64>, new_len: u64) -> bool {
        match old_len {
            None => {
                self.records < self.max_records
                    && self.bytes.saturating_add(new_len) <= self.max_bytes
            }
            Some(old_len) => {
                new_len <= old_len || self.bytes.saturating_add(new_len - old_len) <= self.max_bytes
            }
        }
    }

    fn apply(&mut self, old_len: Option<u64>, new_len: u64) {
        match old_len {
            None => self.records = self.records.saturating_add(1),
            Some(old_len) => self.bytes = self.bytes.saturating_sub(old_len),
        }
        self.bytes = self.bytes.saturating_add(new_len);
    }

    fn refusal(&self, new_row: bool) -> String {
        if new_row && self.records >= self.max_records {
            format!(
                "the account holds its limit of {} records",
                self.max_records
            )
        } else {
            format!(
                "the account's stored data would pass its limit of {} bytes",
                self.max_bytes
            )
        }
    }
}

/// A stored record's `data` as compact JSON, in bytes (as it was written).
fn data_len(record: &Record) -> u64 {
    sync::compact_len(&record.data) as u64
}

/// One entity's batch after the merge: its answer and the rows to write.
struct Merged {
    entity: Entity,
    result: EntityResult,
    /// The rows to write.
    pending: Vec<Write>,
    /// What the writes change in the entity's digest (section 9.2).
    digest_delta: u64,
}

/// Decides every record of a batch against the stored rows (locked by the
/// caller), in body order. `counter` is the user's change counter,
/// advanced by one per row to write. A kept-both meal whose derived id was
/// not among the locked rows locks it here (one more round trip, only
/// then).
fn merge_batch(
    db: &mut Db,
    user_id: &str,
    batch: &Batch,
    mut stored: HashMap<String, Stored>,
    counter: &mut u64,
    quota: &mut Quota,
    max_record_bytes: usize,
) -> Result<Merged, ApiError> {
    let entity = batch.entity;
    let mut result = EntityResult {
        errors: batch.errors.clone(),
        ..EntityResult::default()
    };
    let mut pending: Vec<Write> = Vec::new();
    let mut digest_delta = 0u64;
    let mut next_version = || {
        *counter += 1;
        *counter
    };

    for valid in &batch.valid {
        let incoming = &valid.incoming;
        let id = incoming.record.id.clone();
        let current = stored.get(&id);
        match sync::decide(entity, incoming, current, max_record_bytes) {
            Outcome::Insert | Outcome::Update => {
                let old_len = current.map(|held| data_len(&held.record));
                let new_len = valid.data_json.len() as u64;
                // A delete always applies; a write that adds a row or
                // grows the data must fit the quota.
                if incoming.record.deleted_at.is_none() && !quota.admits(old_len, new_len) {
                    result.errors.push(validate::record_error(
                        valid.raw.get("id"),
                        valid.index,
                        "QUOTA_EXCEEDED",
                        quota.refusal(old_len.is_none()),
                    ));
                    continue;
                }
                quota.apply(old_len, new_len);
                let version = next_version();
                digest_delta ^= digest::write_delta(&id, current.map(|s| s.version), version);
                pending.push(Write::of(
                    &incoming.record,
                    valid.data_json.clone(),
                    version,
                ));
                result.synced += 1;
                result.applied.push(Applied {
                    id: id.clone(),
                    version,
                });
                stored.insert(
                    id,
                    Stored {
                        record: incoming.record.clone(),
                        version,
                    },
                );
            }
            Outcome::Retry => {
                let version = current.map_or(0, |s| s.version);
                result.synced += 1;
                result.applied.push(Applied { id, version });
            }
            Outcome::Conflict { resolution, store } => {
                let Some(met) = current else {
                    return Err(ApiError::Internal(
                        "conflict without a stored record".into(),
                    ));
                };
                result.conflicts += 1;
                let (met_version, met_len) = (met.version, data_len(&met.record));
                let server_version = render_held(met)?;
                let now_held = match store {
                    Some(record) => {
                        let version = next_version();
                        digest_delta ^= digest::write_delta(&id, Some(met_version), version);
                        let data_json = serde_json::to_string(&record.data)
                            .map_err(|e| ApiError::Internal(format!("merge result: {e}")))?;
                        // A conflict's resolution is never refused for quota.
                        quota.apply(Some(met_len), data_json.len() as u64);
                        pending.push(Write::of(&record, data_json, version));
                        if resolution == Resolution::ClientWins {
                            result.applied.push(Applied {
                                id: id.clone(),
                                version,
                            });
                        }
                        let now = Stored { record, version };
                        let rendered = render_held(&now)?;
                        stored.insert(id.clone(), now);
                        rendered
                    }
                    None => server_version.clone(),
                };
                result.server_updates.push(now_held);
                result.conflict_details.push(conflict_detail(
                    entity,
                    &id,
                    valid,
                    server_version,
                    resolution,
                )?);
            }
            Outcome::KeepBoth { derived_id } => {
                let Some(met) = current else {
                    return Err(ApiError::Internal(
                        "kept-both without a stored record".into(),
                    ));
                };
                result.conflicts += 1;
                let server_version = render_held(met)?;
                if !stored.contains_key(&derived_id) {
                    let found =
                        records::lock_existing(db, user_id, entity, &[derived_id.as_str()])?;
                    stored.extend(found);
                }
                let mut copy = incoming.record.clone();
                copy.id = derived_id.clone();
                let derived = match sync::decide_derived(&copy, stored.get(&derived_id)) {
                    Outcome::Insert | Outcome::Update => {
                        let old_len = stored.get(&derived_id).map(|held| data_len(&held.record));
                        quota.apply(old_len, valid.data_json.len() as u64);
                        let version = next_version();
                        let old_version = stored.get(&derived_id).map(|held| held.version);
                        digest_delta ^= digest::write_delta(&derived_id, old_version, version);
                        pending.push(Write::of(&copy, valid.data_json.clone(), version));
                        let now = Stored {
                            record: copy,
                            version,
                        };
                        let rendered = render_held(&now)?;
                        stored.insert(derived_id.clone(), now);
                        rendered
                    }
                    _ => match stored.get(&derived_id) {
                        Some(held) => render_held(held)?,
                        None => return Err(ApiError::Internal("derived meal vanished".into())),
                    },
                };
                result.server_updates.push(server_version.clone());
                result.server_updates.push(derived);
                result.conflict_details.push(conflict_detail(
                    entity,
                    &id,
                    valid,
                    server_version,
                    Resolution::KeptBoth,
                )?);
            }
        }
    }
    // Quota refusals joined the validation errors: body order again.
    result.errors.sort_by_key(|error| error.index);
    Ok(Merged {
        entity,
        result,
        pending,
        digest_delta,
    })
}

/// A stored record as a pull returns it, rendered once: a conflict's
/// `server_version` and `server_updates` entry, and the log's copy.
fn render_held(stored: &Stored) -> Result<Rendered, ApiError> {
    let held = Held {
        record: &stored.record,
        version: stored.version,
    };
    Rendered::of(&held).map_err(unrenderable)
}

fn conflict_detail(
    entity: Entity,
    id: &str,
    valid: &validate::Valid,
    server_version: Rendered,
    resolution: Resolution,
) -> Result<ConflictDetail, ApiError> {
    Ok(ConflictDetail {
        entity_id: id.to_owned(),
        entity_type: entity.bulk_key(),
        client_version: valid.render_client_version().map_err(unrenderable)?,
        server_version,
        resolution: resolution.as_str(),
    })
}
