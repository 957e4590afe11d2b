//! The five entity tables: locking a batch's rows, writing a batch in few
//! statements, and reading pages of changes by version. Every statement is
//! keyed by `user_id` first; table names come only from `Entity::table()`,
//! never from input.

use std::collections::HashMap;

use mysql::prelude::Queryable;
use mysql::{Row, Value};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{json, Map};

use crate::error::ApiError;
use crate::store::clock;
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
        map.serialize_entry("updated_at", &clock::to_rfc3339(self.updated_at))?;
        map.serialize_entry("deleted_at", &self.deleted_at.map(clock::to_rfc3339))?;
        map.serialize_entry("version", &self.version)?;
        map.end()
    }
}

/// A record the server holds, as a pull returns it (for records already
/// parsed: conflict results).
pub fn wire(record: &Record, version: u64) -> serde_json::Value {
    json!({
        "id": record.id,
        "data": record.data,
        "updated_at": clock::to_rfc3339(record.updated_at),
        "deleted_at": record.deleted_at.map(clock::to_rfc3339),
        "version": version,
    })
}

/// The columns every reader takes, with their conversions.
struct Columns {
    id: String,
    data: Vec<u8>,
    updated_at: i64,
    deleted_at: Option<i64>,
    version: u64,
}

fn columns(entity: Entity, mut row: Row) -> Result<Columns, ApiError> {
    let unreadable =
        |column: &str| ApiError::Internal(format!("{}.{column} unreadable", entity.table()));
    let id: String = row
        .take_opt(0)
        .and_then(Result::ok)
        .ok_or_else(|| unreadable("id"))?;
    let data: Vec<u8> = row
        .take_opt(1)
        .and_then(Result::ok)
        .ok_or_else(|| unreadable("data"))?;
    let updated_at = row
        .take_opt::<Value, _>(2)
        .and_then(Result::ok)
        .and_then(|v| clock::from_sql(&v))
        .ok_or_else(|| unreadable("updated_at"))?;
    let deleted_at = row
        .take_opt::<Value, _>(3)
        .and_then(Result::ok)
        .and_then(|v| clock::from_sql(&v));
    let version: u64 = row
        .take_opt(4)
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
fn read_stored(entity: Entity, row: Row) -> Result<Stored, ApiError> {
    let c = columns(entity, row)?;
    let data: Map<String, serde_json::Value> = serde_json::from_slice(&c.data)
        .map_err(|_| ApiError::Internal(format!("{}.data is not a JSON object", entity.table())))?;
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
fn read_pulled(entity: Entity, row: Row) -> Result<Pulled, ApiError> {
    let c = columns(entity, row)?;
    let text = String::from_utf8(c.data)
        .map_err(|_| ApiError::Internal(format!("{}.data is not UTF-8", entity.table())))?;
    let data = RawValue::from_string(text)
        .map_err(|_| ApiError::Internal(format!("{}.data is not JSON", entity.table())))?;
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

/// Reads and locks the stored rows of `ids` (one statement, ids sorted so
/// every transaction locks in the same order).
pub fn lock_existing(
    conn: &mut impl Queryable,
    user_id: &str,
    entity: Entity,
    ids: &[&str],
) -> Result<HashMap<String, Stored>, ApiError> {
    let mut found = HashMap::new();
    if ids.is_empty() {
        return Ok(found);
    }
    let mut sorted: Vec<&str> = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let placeholders = vec!["?"; sorted.len()].join(",");
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE user_id = ? AND id IN ({placeholders}) ORDER BY id FOR UPDATE",
        entity.table()
    );
    let mut params: Vec<Value> = Vec::with_capacity(sorted.len() + 1);
    params.push(Value::from(user_id));
    params.extend(sorted.iter().map(|id| Value::from(*id)));
    let rows: Vec<Row> = conn.exec(sql, params)?;
    for row in rows {
        let stored = read_stored(entity, row)?;
        found.insert(stored.record.id.clone(), stored);
    }
    Ok(found)
}

/// One row to write: the record and the version it takes.
pub struct Write<'a> {
    pub record: &'a Record,
    pub data_json: String,
    pub version: u64,
}

/// Inserts or replaces rows, a few statements per batch (chunked by data
/// size). `server_updated_at` is the request's receive time.
pub fn write_batch(
    conn: &mut impl Queryable,
    user_id: &str,
    entity: Entity,
    writes: &[Write],
    received_at: i64,
) -> Result<(), ApiError> {
    let mut start = 0;
    while start < writes.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < writes.len()
            && (end == start || bytes + writes[end].data_json.len() <= MAX_STATEMENT_DATA_BYTES)
        {
            bytes += writes[end].data_json.len();
            end += 1;
        }
        write_chunk(conn, user_id, entity, &writes[start..end], received_at)?;
        start = end;
    }
    Ok(())
}

fn write_chunk(
    conn: &mut impl Queryable,
    user_id: &str,
    entity: Entity,
    writes: &[Write],
    received_at: i64,
) -> Result<(), ApiError> {
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
        params.push(Value::from(write.record.id.as_str()));
        params.push(Value::from(write.data_json.as_str()));
        params.push(clock::to_sql(write.record.updated_at));
        params.push(write.record.deleted_at.map_or(Value::NULL, clock::to_sql));
        params.push(received.clone());
        params.push(Value::from(write.version));
        params.push(received.clone());
    }
    conn.exec_drop(sql, params)?;
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

/// Which rows a page of changes holds.
struct PageEntry {
    version: u64,
    entity: Entity,
}

/// The first `limit` changes after the cursor and at or below version
/// `upto` across `entities`, in ascending version, and whether more
/// remain. A bulk passes its position before its own writes as `upto`:
/// every version above it is one this request wrote, which the device
/// has (as given, or in the conflict results).
///
/// One entity: one statement. Several: first one statement over the five
/// `(user_id, version)` indexes alone (no `data`, so MariaDB keeps the
/// union in memory and reads only what the page needs), then each table's
/// rows up to the page's last version. Under READ COMMITTED one statement
/// sees one snapshot, and versions commit in order (allocated under the
/// user's lock), so the first statement sees a prefix of the sequence; no
/// version at or below the page's last can appear afterwards, and a row
/// rewritten in between has moved above it and is left for the next page.
pub fn changes(
    conn: &mut impl Queryable,
    user_id: &str,
    entities: &[Entity],
    cursor: Cursor,
    upto: u64,
    limit: usize,
) -> Result<(Vec<Pulled>, bool), ApiError> {
    let (condition, cursor_value) = cursor_condition(cursor);
    if let [entity] = entities {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE user_id = ? AND {condition} AND version <= ? \
             ORDER BY version LIMIT ?",
            entity.table()
        );
        let fetched: Vec<Row> =
            conn.exec(sql, (user_id, cursor_value, upto, fetch_limit(limit)))?;
        let mut rows = fetched
            .into_iter()
            .map(|row| read_pulled(*entity, row))
            .collect::<Result<Vec<_>, _>>()?;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        return Ok((rows, has_more));
    }

    let (entries, has_more) = page_entries(conn, user_id, entities, cursor, upto, limit)?;
    let Some(last) = entries.last().map(|entry| entry.version) else {
        return Ok((Vec::new(), has_more));
    };
    let mut rows = Vec::with_capacity(entries.len());
    for entity in entities {
        if !entries.iter().any(|entry| entry.entity == *entity) {
            continue;
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE user_id = ? AND {condition} AND version <= ? ORDER BY version",
            entity.table()
        );
        let fetched: Vec<Row> = conn.exec(sql, (user_id, cursor_value.clone(), last))?;
        for row in fetched {
            rows.push(read_pulled(*entity, row)?);
        }
    }
    rows.sort_by_key(|row| row.version);
    Ok((rows, has_more))
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

/// The page's rows, by index alone: one more than `limit`, to know
/// whether more remain.
fn page_entries(
    conn: &mut impl Queryable,
    user_id: &str,
    entities: &[Entity],
    cursor: Cursor,
    upto: u64,
    limit: usize,
) -> Result<(Vec<PageEntry>, bool), ApiError> {
    let (condition, cursor_value) = cursor_condition(cursor);
    let asked = fetch_limit(limit);
    let selects: Vec<String> = entities
        .iter()
        .enumerate()
        .map(|(index, entity)| {
            format!(
                "(SELECT version, {index} AS entity FROM {} WHERE user_id = ? AND {condition} \
                 AND version <= ? ORDER BY version LIMIT ?)",
                entity.table()
            )
        })
        .collect();
    let sql = format!("{} ORDER BY version LIMIT ?", selects.join(" UNION ALL "));
    let mut params = Vec::with_capacity(entities.len() * 4 + 1);
    for _ in entities {
        params.push(Value::from(user_id));
        params.push(cursor_value.clone());
        params.push(Value::from(upto));
        params.push(Value::from(asked));
    }
    params.push(Value::from(asked));
    let fetched: Vec<(u64, usize)> = conn.exec(sql, params)?;
    let mut entries: Vec<PageEntry> = fetched
        .into_iter()
        .map(|(version, index)| PageEntry {
            version,
            entity: entities
                .get(index)
                .copied()
                .unwrap_or(Entity::HealthMetrics),
        })
        .collect();
    let has_more = entries.len() > limit;
    entries.truncate(limit);
    Ok((entries, has_more))
}

/// Per entity: `(records including tombstones, live records, highest
/// version)`, in one statement.
pub fn counts(
    conn: &mut impl Queryable,
    user_id: &str,
) -> Result<Vec<(Entity, u64, u64, u64)>, ApiError> {
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
    let rows: Vec<(usize, u64, u64, u64)> = conn.exec(sql, params)?;
    Ok(rows
        .into_iter()
        .filter_map(|(index, total, live, max)| {
            Entity::ALL
                .get(index)
                .map(|entity| (*entity, total, live, max))
        })
        .collect())
}

/// Advances the user's change counter and receive clock after a write.
pub fn advance_user(
    conn: &mut impl Queryable,
    user_id: &str,
    change_counter: u64,
    last_write_at: i64,
    last_sync_at: i64,
) -> Result<(), ApiError> {
    conn.exec_drop(
        "UPDATE users SET change_counter = ?, last_write_at = ?, last_sync_at = ? WHERE id = ?",
        (
            change_counter,
            clock::to_sql(last_write_at),
            clock::to_sql(last_sync_at),
            user_id,
        ),
    )?;
    Ok(())
}

pub fn touch_last_sync(conn: &mut impl Queryable, user_id: &str, now: i64) -> Result<(), ApiError> {
    conn.exec_drop(
        "UPDATE users SET last_sync_at = ? WHERE id = ?",
        (clock::to_sql(now), user_id),
    )?;
    Ok(())
}

/// Records a device's last sync (`X-Device-Id`). Unchanged position and a
/// recent time leave the row as it is, so a repeated pull writes nothing.
pub fn record_device(
    conn: &mut impl Queryable,
    user_id: &str,
    device_id: &str,
    now: i64,
    sync_token: u64,
) -> Result<(), ApiError> {
    conn.exec_drop(
        r"INSERT INTO sync_status (user_id, device_id, last_sync_at, last_sync_token) VALUES (?, ?, ?, ?)
          ON DUPLICATE KEY UPDATE
            last_sync_at = IF(last_sync_token <> VALUES(last_sync_token)
                              OR last_sync_at < VALUES(last_sync_at) - INTERVAL 60 SECOND,
                              VALUES(last_sync_at), last_sync_at),
            last_sync_token = VALUES(last_sync_token)",
        (user_id, device_id, clock::to_sql(now), sync_token),
    )?;
    Ok(())
}

/// A device's last sync, as the account shows it.
pub fn devices(conn: &mut impl Queryable, user_id: &str) -> Result<Vec<(String, i64)>, ApiError> {
    let rows: Vec<(String, Value)> = conn.exec(
        "SELECT device_id, last_sync_at FROM sync_status WHERE user_id = ? ORDER BY last_sync_at DESC",
        (user_id,),
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|(device, at)| clock::from_sql(&at).map(|at| (device, at)))
        .collect())
}
