//! The five entity tables: locking a batch's rows, writing a batch in few
//! statements, and reading pages of changes by version. Every statement is
//! keyed by `user_id` first; table names come only from `Entity::table()`,
//! never from input.

use std::collections::HashMap;

use mysql::{Row, Value};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::Map;

use crate::store::clock;
use crate::store::db::{Db, Packet, Sets, Slot, StoreError};
use crate::store::users;
use crate::sync::{Entity, Record, Stored};

/// Largest sum of record data sent in one INSERT: well under a host's
/// `max_allowed_packet` (often 16 MiB, sometimes 4).
const MAX_STATEMENT_DATA_BYTES: usize = 2 * 1024 * 1024;

/// A record as pulled. `data` is the stored JSON text, sent on as it is:
/// it was checked when written (and the column is checked JSON), and
/// parsing it into a tree only to print it again was most of a pull's CPU.
#[derive(Debug)]
pub struct Pulled {
    pub entity: Entity,
    pub id: String,
    pub data: Box<RawValue>,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    pub version: u64,
}

impl Serialize for Pulled {
    /// The record exactly as a pull returns it.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("data", &self.data)?;
        map.serialize_entry("updated_at", &clock::Rfc3339(self.updated_at))?;
        map.serialize_entry("deleted_at", &self.deleted_at.map(clock::Rfc3339))?;
        map.serialize_entry("version", &self.version)?;
        map.end()
    }
}

impl Pulled {
    /// The record's length as compact JSON, exactly as `Serialize` writes
    /// it, counted without writing it: a page of 1,000 records is measured
    /// against `MAX_PAGE_BYTES` record by record, and its `data` is sent as
    /// stored, so only the id can need escaping.
    pub fn compact_len(&self) -> usize {
        self.len_but_id() + crate::sync::compact_len(self.id.as_str())
    }

    /// `compact_len` with the id counted as it is, quoted but not
    /// escaped: the same for every stored id (a canonical UUID has nothing
    /// to escape), and cheap enough to size a page's body with.
    pub fn unescaped_len(&self) -> usize {
        self.len_but_id() + self.id.len() + 2
    }

    fn len_but_id(&self) -> usize {
        const KEYS: usize = r#"{"id":,"data":,"updated_at":,"deleted_at":,"version":}"#.len();
        // A quoted `YYYY-MM-DDTHH:MM:SS.mmmZ`.
        const TIME: usize = 26;
        let version_digits = self
            .version
            .checked_ilog10()
            .map_or(1, |log| log as usize + 1);
        KEYS + self.data.get().len()
            + TIME
            + self.deleted_at.map_or("null".len(), |_| TIME)
            + version_digits
    }
}

/// The columns every reader takes, with their conversions.
struct Columns {
    id: String,
    data: Vec<u8>,
    updated_at: i64,
    deleted_at: Option<i64>,
    version: u64,
}

/// The five columns, starting at `first` (a union puts its entity before).
fn columns_from(entity: Entity, mut row: Row, first: usize) -> Result<Columns, StoreError> {
    let unreadable =
        |column: &str| StoreError::broken(format!("{}.{column} unreadable", entity.table()));
    let id: String = row
        .take_opt(first)
        .and_then(Result::ok)
        .ok_or_else(|| unreadable("id"))?;
    let data: Vec<u8> = row
        .take_opt(first + 1)
        .and_then(Result::ok)
        .ok_or_else(|| unreadable("data"))?;
    let updated_at = row
        .take_opt::<Value, _>(first + 2)
        .and_then(Result::ok)
        .and_then(|v| clock::from_sql(&v))
        .ok_or_else(|| unreadable("updated_at"))?;
    let deleted_at = row
        .take_opt::<Value, _>(first + 3)
        .and_then(Result::ok)
        .and_then(|v| clock::from_sql(&v));
    let version: u64 = row
        .take_opt(first + 4)
        .and_then(Result::ok)
        .ok_or_else(|| unreadable("version"))?;
    Ok(Columns {
        id,
        data,
        updated_at,
        deleted_at,
        version,
    })
}

/// A row for the merge: `data` parsed.
fn stored_from(entity: Entity, c: Columns) -> Result<Stored, StoreError> {
    let data: Map<String, serde_json::Value> = serde_json::from_slice(&c.data)
        .map_err(|_| StoreError::broken(format!("{}.data is not a JSON object", entity.table())))?;
    Ok(Stored {
        record: Record {
            id: c.id,
            data,
            updated_at: c.updated_at,
            deleted_at: c.deleted_at,
        },
        version: c.version,
    })
}

/// A row to send on: `data` kept as text.
fn read_pulled(entity: Entity, row: Row) -> Result<Pulled, StoreError> {
    read_pulled_from(entity, row, 0)
}

/// The same, with the columns starting at `first`.
pub fn read_pulled_from(entity: Entity, row: Row, first: usize) -> Result<Pulled, StoreError> {
    let c = columns_from(entity, row, first)?;
    let text = String::from_utf8(c.data)
        .map_err(|_| StoreError::broken(format!("{}.data is not UTF-8", entity.table())))?;
    let data = stored_json(text)
        .map_err(|_| StoreError::broken(format!("{}.data is not JSON", entity.table())))?;
    Ok(Pulled {
        entity,
        id: c.id,
        data,
        updated_at: c.updated_at,
        deleted_at: c.deleted_at,
        version: c.version,
    })
}

const COLUMNS: &str = "id, data, updated_at, deleted_at, version";

/// A stored `data` as raw JSON, taken as it is. Every `data` was written
/// by this binary as compact JSON of a validated object, and the column
/// takes nothing else: a `JSON` column is `CHECK (json_valid(data))` on
/// MariaDB and holds only valid documents on MySQL. Checking it again was
/// a fifth of a pull's instructions. Text that does not start with `{` and
/// end with `}` (whitespace around it, say, from a hand edit) is checked
/// as before.
#[allow(unsafe_code)]
fn stored_json(text: String) -> Result<Box<RawValue>, serde_json::Error> {
    if text.starts_with('{') && text.ends_with('}') {
        // SAFETY: `from_string_unchecked` needs one well-formed JSON value
        // with no whitespace around it. The column's constraint holds the
        // first; the braces at both ends hold the second.
        return Ok(unsafe { RawValue::from_string_unchecked(text) });
    }
    RawValue::from_string(text)
}

fn sorted_unique<'a>(ids: &[&'a str]) -> Vec<&'a str> {
    let mut sorted: Vec<&str> = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

/// Reads and locks the stored rows of `ids` of one entity (the same
/// statement a batch's opening uses, in a packet of its own).
pub fn lock_existing(
    db: &mut Db,
    user_id: &str,
    entity: Entity,
    ids: &[&str],
) -> Result<HashMap<String, Stored>, StoreError> {
    let mut packet = Packet::new();
    let slot = push_lock_batches(&mut packet, user_id, &[(entity, ids.to_vec())])?;
    if slot.is_none() {
        return Ok(HashMap::new());
    }
    let mut found = read_locked_batches(&mut db.run(packet)?, slot)?;
    Ok(found.remove(&entity).unwrap_or_default())
}

/// The stored rows of several batches, read and locked by one statement
/// of a packet: a `UNION ALL` of one locking read per entity, in the
/// order given (every writer passes the contract's entity order), each
/// walking its ids in key order. `None` when there are no ids at all.
/// The primary key is named: left to choose, the optimizer weighs every
/// index that starts with `user_id` too, which took the server longer
/// than reading the rows (measured with `ANALYZE`, 50 ids).
pub fn push_lock_batches(
    packet: &mut Packet,
    user_id: &str,
    batches: &[(Entity, Vec<&str>)],
) -> Result<Option<Slot>, StoreError> {
    let mut parts = Vec::new();
    let mut values = Vec::new();
    for (entity, ids) in batches.iter().filter(|(_, ids)| !ids.is_empty()) {
        let index = Entity::ALL.iter().position(|e| e == entity).unwrap_or(0);
        let sorted = sorted_unique(ids);
        let placeholders = vec!["?"; sorted.len()].join(",");
        parts.push(format!(
            "(SELECT {index} AS entity, {COLUMNS} FROM {} FORCE INDEX (PRIMARY) \
             WHERE user_id = ? AND id IN ({placeholders}) \
             ORDER BY id FOR UPDATE)",
            entity.table()
        ));
        values.push(Value::from(user_id));
        values.extend(sorted.iter().map(|id| Value::from(*id)));
    }
    if parts.is_empty() {
        return Ok(None);
    }
    packet.push(&parts.join(" UNION ALL "), &values).map(Some)
}

/// What `push_lock_batches` read, by entity and id.
pub fn read_locked_batches(
    sets: &mut Sets,
    slot: Option<Slot>,
) -> Result<HashMap<Entity, HashMap<String, Stored>>, StoreError> {
    let mut found: HashMap<Entity, HashMap<String, Stored>> = HashMap::new();
    let Some(slot) = slot else {
        return Ok(found);
    };
    for mut row in sets.rows(slot)? {
        let index: Option<usize> = row.take_opt(0).and_then(Result::ok);
        let Some(entity) = index.and_then(|index| Entity::ALL.get(index).copied()) else {
            return Err(StoreError::broken("a locked row names no entity"));
        };
        let stored = stored_from(entity, columns_from(entity, row, 1)?)?;
        found
            .entry(entity)
            .or_default()
            .insert(stored.record.id.clone(), stored);
    }
    Ok(found)
}

/// One row to write: what of the record the row holds besides its data,
/// the data as compact JSON, and the version it takes.
#[derive(Debug)]
pub struct Write {
    pub id: String,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    pub data_json: String,
    pub version: u64,
}

impl Write {
    /// The row of `record`, whose data is `data_json`: the data's tree is
    /// not copied, only its text is written.
    pub fn of(record: &Record, data_json: String, version: u64) -> Write {
        Write {
            id: record.id.clone(),
            updated_at: record.updated_at,
            deleted_at: record.deleted_at,
            data_json,
            version,
        }
    }
}

fn write_statement(
    user_id: &str,
    entity: Entity,
    writes: &[Write],
    received_at: i64,
) -> (String, Vec<Value>) {
    let rows = vec!["(?,?,?,?,?,?,?,?)"; writes.len()].join(",");
    let sql = format!(
        "INSERT INTO {} (user_id, id, data, updated_at, deleted_at, server_updated_at, version, created_at) \
         VALUES {rows} ON DUPLICATE KEY UPDATE data = VALUES(data), updated_at = VALUES(updated_at), \
         deleted_at = VALUES(deleted_at), server_updated_at = VALUES(server_updated_at), \
         version = VALUES(version)",
        entity.table()
    );
    let received = clock::to_sql(received_at);
    let mut params: Vec<Value> = Vec::with_capacity(writes.len() * 8);
    for write in writes {
        params.push(Value::from(user_id));
        params.push(Value::from(write.id.as_str()));
        params.push(Value::from(write.data_json.as_str()));
        params.push(clock::to_sql(write.updated_at));
        params.push(write.deleted_at.map_or(Value::NULL, clock::to_sql));
        params.push(received.clone());
        params.push(Value::from(write.version));
        params.push(received.clone());
    }
    (sql, params)
}

/// Inserts or replaces rows by prepared statements, chunked by data size.
pub fn write_batch(
    db: &mut Db,
    user_id: &str,
    entity: Entity,
    writes: &[Write],
    received_at: i64,
) -> Result<(), StoreError> {
    let mut start = 0;
    // Nothing to write sends nothing.
    while start < writes.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < writes.len()
            && (end == start || bytes + writes[end].data_json.len() <= MAX_STATEMENT_DATA_BYTES)
        {
            bytes += writes[end].data_json.len();
            end += 1;
        }
        let (sql, params) = write_statement(user_id, entity, &writes[start..end], received_at);
        db.exec_write(&sql, params)?;
        start = end;
    }
    Ok(())
}

/// Where a page of changes starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// Versions strictly after this one (a sync token; 0 for everything).
    AfterVersion(u64),
    /// Writes received strictly after this server time (`since`).
    ReceivedAfter(i64),
}

/// The highest version a page may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upto {
    /// No bound: whatever has committed.
    Any,
    Version(u64),
    /// The user's position as this statement reads it: exact for a
    /// transaction that holds the user's row lock, which no writer passes.
    UserPosition,
}

/// Which changes a page may hold: after `cursor`, at or below `upto`, at
/// most `limit` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub cursor: Cursor,
    pub upto: Upto,
    pub limit: usize,
}

/// Which rows a page of changes holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageEntry {
    pub version: u64,
    pub entity: Entity,
}

/// `LIMIT` takes at most 2^64 - 1; `usize::MAX` means "all".
fn fetch_limit(limit: usize) -> u64 {
    u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1)
}

fn cursor_condition(cursor: Cursor) -> (&'static str, Value) {
    match cursor {
        Cursor::AfterVersion(version) => ("version > ?", Value::from(version)),
        Cursor::ReceivedAfter(millis) => ("server_updated_at > ?", clock::to_sql(millis)),
    }
}

fn upto_condition(user_id: &str, upto: Upto) -> (&'static str, Vec<Value>) {
    match upto {
        Upto::Any => ("TRUE", Vec::new()),
        Upto::Version(version) => ("version <= ?", vec![Value::from(version)]),
        Upto::UserPosition => (
            "version <= (SELECT change_counter FROM users WHERE id = ?)",
            vec![Value::from(user_id)],
        ),
    }
}

/// The first `limit` changes of one entity after the cursor and at or
/// below `upto` (one more, to know whether more remain), as a statement
/// of a packet.
pub fn push_changes_of(
    packet: &mut Packet,
    user_id: &str,
    entity: Entity,
    span: Span,
) -> Result<Slot, StoreError> {
    let (condition, values) = span.condition(user_id);
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE {condition} ORDER BY version LIMIT ?",
        span.table(entity)
    );
    let mut values = values;
    values.push(Value::from(fetch_limit(span.limit)));
    packet.push(&sql, &values)
}

impl Span {
    /// The entity's table, naming its `(user_id, version)` index when the
    /// cursor is a version: the index the page walks, and left to choose
    /// among the three that start with `user_id` the optimizer spent a
    /// quarter of the statement's server time choosing it (`ANALYZE`, a
    /// page of 100).
    fn table(self, entity: Entity) -> String {
        match self.cursor {
            Cursor::AfterVersion(_) => {
                format!(
                    "{table} FORCE INDEX ({table}_version)",
                    table = entity.table()
                )
            }
            Cursor::ReceivedAfter(_) => entity.table().to_owned(),
        }
    }

    /// `user_id = ? AND <after the cursor> AND <at or below upto>`, with its
    /// values.
    fn condition(self, user_id: &str) -> (String, Vec<Value>) {
        let (after, cursor_value) = cursor_condition(self.cursor);
        let (upto, upto_values) = upto_condition(user_id, self.upto);
        let mut values = vec![Value::from(user_id), cursor_value];
        values.extend(upto_values);
        (format!("user_id = ? AND {after} AND {upto}"), values)
    }
}

/// The page `push_changes_of` asked for, and whether more remain.
pub fn read_changes_of(
    sets: &mut Sets,
    slot: Slot,
    entity: Entity,
    limit: usize,
) -> Result<(Vec<Pulled>, bool), StoreError> {
    let rows = sets
        .rows(slot)?
        .into_iter()
        .map(|row| read_pulled(entity, row))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(at_most(rows, limit))
}

/// A page's rows up to `max_bytes` of compact JSON (contract section 5,
/// v2): at least one record, then none that would carry the total past
/// the limit. True when records were left out.
pub fn within_page_bytes(mut rows: Vec<Pulled>, max_bytes: usize) -> (Vec<Pulled>, bool) {
    let mut total = 0usize;
    let fits = rows
        .iter()
        .position(|row| {
            total = total.saturating_add(row.compact_len());
            total > max_bytes
        })
        .map_or(rows.len(), |first_over| first_over.max(1));
    let cut = fits < rows.len();
    rows.truncate(fits);
    (rows, cut)
}

/// A page asked for with one row more than `limit`: that row only says
/// whether more remain.
fn at_most<T>(mut rows: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    (rows, has_more)
}

/// Across several entities, the versions of the first `limit` changes (one
/// more, to know whether more remain), by the five `(user_id, version)`
/// indexes alone: no `data`, so MariaDB keeps the union in memory and reads
/// only what the page needs. The rows follow by `page_rows`.
pub fn push_page_entries(
    packet: &mut Packet,
    user_id: &str,
    entities: &[Entity],
    span: Span,
) -> Result<Slot, StoreError> {
    let (condition, span_values) = span.condition(user_id);
    let asked = fetch_limit(span.limit);
    let selects: Vec<String> = entities
        .iter()
        .enumerate()
        .map(|(index, entity)| {
            format!(
                "(SELECT version, {index} AS entity FROM {} WHERE {condition} \
                 ORDER BY version LIMIT ?)",
                span.table(*entity)
            )
        })
        .collect();
    let sql = format!("{} ORDER BY version LIMIT ?", selects.join(" UNION ALL "));
    let mut values = Vec::with_capacity(entities.len() * (span_values.len() + 1) + 1);
    for _ in entities {
        values.extend(span_values.iter().cloned());
        values.push(Value::from(asked));
    }
    values.push(Value::from(asked));
    packet.push(&sql, &values)
}

pub fn read_page_entries(
    sets: &mut Sets,
    slot: Slot,
    entities: &[Entity],
    limit: usize,
) -> Result<(Vec<PageEntry>, bool), StoreError> {
    let mut entries = Vec::new();
    for mut row in sets.rows(slot)? {
        let version: Option<u64> = row.take_opt(0).and_then(Result::ok);
        let index: Option<usize> = row.take_opt(1).and_then(Result::ok);
        let entity = index.and_then(|index| entities.get(index).copied());
        match (version, entity) {
            (Some(version), Some(entity)) => entries.push(PageEntry { version, entity }),
            _ => return Err(StoreError::broken("a page entry is unreadable")),
        }
    }
    Ok(at_most(entries, limit))
}

/// The rows of a page decided by `push_page_entries`, in version order, in
/// one round trip. Under READ COMMITTED one statement sees one snapshot,
/// and versions commit in order (allocated under the user's lock), so the
/// entries were a prefix of the sequence: no version at or below the
/// page's last can appear afterwards, and a row rewritten in between has
/// moved above it and is left for the next page.
pub fn page_rows(
    db: &mut Db,
    user_id: &str,
    cursor: Cursor,
    entries: &[PageEntry],
) -> Result<Vec<Pulled>, StoreError> {
    let Some(last) = entries.last().map(|entry| entry.version) else {
        return Ok(Vec::new());
    };
    let mut packet = Packet::new();
    let mut slots = Vec::new();
    for entity in Entity::ALL {
        if entries.iter().any(|entry| entry.entity == entity) {
            let span = Span {
                cursor,
                upto: Upto::Version(last),
                limit: usize::MAX - 1,
            };
            let slot = push_changes_of(&mut packet, user_id, entity, span)?;
            slots.push((entity, slot));
        }
    }
    let mut sets = db.run(packet)?;
    let mut rows = Vec::with_capacity(entries.len());
    for (entity, slot) in slots {
        for row in sets.rows(slot)? {
            rows.push(read_pulled(entity, row)?);
        }
    }
    rows.sort_by_key(|row| row.version);
    Ok(rows)
}

/// The first `limit` changes after the cursor and at or below `upto`
/// across `entities`, in ascending version, and whether more remain: one
/// round trip for one entity, two for several.
pub fn changes(
    db: &mut Db,
    user_id: &str,
    entities: &[Entity],
    cursor: Cursor,
    upto: u64,
    limit: usize,
) -> Result<(Vec<Pulled>, bool), StoreError> {
    let mut packet = Packet::new();
    let span = Span {
        cursor,
        upto: Upto::Version(upto),
        limit,
    };
    if let [entity] = entities {
        let slot = push_changes_of(&mut packet, user_id, *entity, span)?;
        return read_changes_of(&mut db.run(packet)?, slot, *entity, limit);
    }
    let slot = push_page_entries(&mut packet, user_id, entities, span)?;
    let (entries, has_more) = read_page_entries(&mut db.run(packet)?, slot, entities, limit)?;
    Ok((page_rows(db, user_id, cursor, &entries)?, has_more))
}

/// Every record the user holds of `entity`, tombstones included, in
/// version order, handed to `each` as it arrives from the server (the
/// export: an account of any size costs one row's memory).
pub fn each_record<E: From<StoreError>>(
    db: &mut Db,
    user_id: &str,
    entity: Entity,
    mut each: impl FnMut(Pulled) -> Result<(), E>,
) -> Result<(), E> {
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE user_id = ? ORDER BY version",
        entity.table()
    );
    db.exec_each(&sql, (user_id,), |row| each(read_pulled(entity, row)?))
}

/// Per entity: `(records including tombstones, live records, highest
/// version)`, in one statement.
pub fn counts(db: &mut Db, user_id: &str) -> Result<Vec<(Entity, u64, u64, u64)>, StoreError> {
    let selects: Vec<String> = Entity::ALL
        .iter()
        .enumerate()
        .map(|(index, entity)| {
            format!(
                "SELECT {index}, COUNT(*), COALESCE(SUM(deleted_at IS NULL), 0), COALESCE(MAX(version), 0) \
                 FROM {} WHERE user_id = ?",
                entity.table()
            )
        })
        .collect();
    let sql = selects.join(" UNION ALL ");
    let params: Vec<Value> = Entity::ALL.iter().map(|_| Value::from(user_id)).collect();
    let rows: Vec<(usize, u64, u64, u64)> = db.exec(&sql, params)?;
    Ok(rows
        .into_iter()
        .filter_map(|(index, total, live, max)| {
            Entity::ALL
                .get(index)
                .map(|entity| (*entity, total, live, max))
        })
        .collect())
}

/// The user's row after a write: position, times, the quota counts, the
/// entities' digests and highest versions written (in `Entity::ALL`
/// order), and the conflict log's last `seq`.
pub struct Advance {
    pub change_counter: u64,
    pub last_write_at: i64,
    pub last_sync_at: i64,
    pub record_count: u64,
    pub data_bytes: u64,
    pub digests: [u64; 5],
    pub entity_versions: [u64; 5],
    pub conflict_seq: u64,
}

/// Advances the user's row after a write, as a statement of a packet.
pub fn push_advance_user(
    packet: &mut Packet,
    user_id: &str,
    advance: &Advance,
) -> Result<Slot, StoreError> {
    let mut sql = String::from(
        "UPDATE users SET change_counter = ?, last_write_at = ?, last_sync_at = ?, \
         record_count = ?, data_bytes = ?, conflict_seq = ?",
    );
    let mut values = vec![
        Value::from(advance.change_counter),
        clock::to_sql(advance.last_write_at),
        clock::to_sql(advance.last_sync_at),
        Value::from(advance.record_count),
        Value::from(advance.data_bytes),
        Value::from(advance.conflict_seq),
    ];
    for entity in Entity::ALL {
        sql.push_str(&format!(
            ", {} = ?, {} = ?",
            users::digest_column(entity),
            users::version_column(entity)
        ));
        values.push(Value::from(advance.digests[entity.index()]));
        values.push(Value::from(advance.entity_versions[entity.index()]));
    }
    sql.push_str(" WHERE id = ?");
    values.push(Value::from(user_id));
    packet.push(&sql, &values)
}

/// The conflict log's last `seq`, after conflicts that wrote no record.
pub fn push_conflict_seq(
    packet: &mut Packet,
    user_id: &str,
    conflict_seq: u64,
) -> Result<Slot, StoreError> {
    packet.push(
        "UPDATE users SET conflict_seq = ? WHERE id = ?",
        &[Value::from(conflict_seq), Value::from(user_id)],
    )
}

pub fn push_touch_last_sync(
    packet: &mut Packet,
    user_id: &str,
    now: i64,
) -> Result<Slot, StoreError> {
    packet.push(
        "UPDATE users SET last_sync_at = ? WHERE id = ?",
        &[clock::to_sql(now), Value::from(user_id)],
    )
}

/// Records a device's last sync (`X-Device-Id`). Unchanged position and a
/// recent time leave the row as it is, so a repeated pull writes nothing.
/// Inserted only while the user exists, read under a shared lock: a pull
/// that races `DELETE /account` waits for the erasure and then writes
/// nothing, instead of leaving a row of an erased user behind.
pub fn push_record_device(
    packet: &mut Packet,
    user_id: &str,
    device_id: &str,
    now: i64,
    sync_token: u64,
) -> Result<Slot, StoreError> {
    packet.push(
        r"INSERT INTO sync_status (user_id, device_id, last_sync_at, last_sync_token)
          SELECT id, ?, ?, ? FROM users WHERE id = ? LOCK IN SHARE MODE
          ON DUPLICATE KEY UPDATE
            last_sync_at = IF(sync_status.last_sync_token <> VALUES(last_sync_token)
                              OR sync_status.last_sync_at < VALUES(last_sync_at) - INTERVAL 60 SECOND,
                              VALUES(last_sync_at), sync_status.last_sync_at),
            last_sync_token = VALUES(last_sync_token)",
        &[
            Value::from(device_id),
            clock::to_sql(now),
            Value::from(sync_token),
            Value::from(user_id),
        ],
    )
}

/// A device's last sync, as the account shows it.
pub fn devices(db: &mut Db, user_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
    let rows: Vec<(String, Value)> = db.exec(
        "SELECT device_id, last_sync_at FROM sync_status WHERE user_id = ? ORDER BY last_sync_at DESC",
        (user_id,),
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|(device, at)| clock::from_sql(&at).map(|at| (device, at)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pulled(id: &str, data: &str, deleted_at: Option<i64>, version: u64) -> Pulled {
        Pulled {
            entity: Entity::Meals,
            id: id.to_owned(),
            data: RawValue::from_string(data.to_owned()).unwrap(),
            updated_at: 1_700_000_000_123,
            deleted_at,
            version,
        }
    }

    #[test]
    fn a_pulled_record_is_measured_as_long_as_it_is_written() {
        let id = "3f2b8c1e-1234-4abc-8def-0123456789ab";
        let cases = [
            pulled(id, r#"{"name":"Soup","kcal":120}"#, None, 0),
            pulled(id, "{}", Some(1_700_000_000_999), 9),
            pulled(id, r#"{"note":"caf\u00e9 \"x\""}"#, None, 10),
            pulled(id, r#"{"a":[1,2,{"b":null}]}"#, Some(0), 1_000_000),
            pulled(id, "{}", None, u64::MAX),
            // An id needing escapes (never stored, but measured exactly).
            pulled("a\"b\\c\u{1}", "{}", None, 42),
        ];
        for row in &cases[..5] {
            assert_eq!(row.unescaped_len(), row.compact_len());
        }
        for row in &cases {
            let written = serde_json::to_vec(row).unwrap();
            assert_eq!(
                row.compact_len(),
                written.len(),
                "{}",
                String::from_utf8_lossy(&written)
            );
        }
    }

    #[test]
    fn stored_data_is_taken_as_it_is_and_anything_else_is_checked() {
        let taken = |text: &str| stored_json(text.to_owned()).map(|raw| raw.get().to_owned());
        assert_eq!(taken(r#"{"a": [1, 2]}"#).unwrap(), r#"{"a": [1, 2]}"#);
        assert_eq!(taken(" {\"b\":2}\n").unwrap(), r#"{"b":2}"#);
        assert!(taken(" {\"b\":").is_err());
        assert!(taken("").is_err());
        assert!(taken("[1] ").is_ok());
    }

    #[test]
    fn a_page_keeps_records_up_to_the_byte_limit_and_at_least_one() {
        let id = "3f2b8c1e-1234-4abc-8def-0123456789ab";
        let rows = || {
            (1..=3)
                .map(|v| pulled(id, r#"{"k":1}"#, None, v))
                .collect::<Vec<_>>()
        };
        let one = rows()[0].compact_len();
        let (kept, cut) = within_page_bytes(rows(), 2 * one);
        assert_eq!((kept.len(), cut), (2, true));
        let (kept, cut) = within_page_bytes(rows(), 3 * one);
        assert_eq!((kept.len(), cut), (3, false));
        let (kept, cut) = within_page_bytes(rows(), 1);
        assert_eq!((kept.len(), cut), (1, true));
    }
}
