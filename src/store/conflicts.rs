//! `conflict_log` (contract section 9.4): every conflict a push resolved,
//! written in the push's transaction, read back in pages by `seq` and in
//! the export, swept after `TOMBSTONE_DAYS`. `seq` comes from the user
//! row's `conflict_seq`, taken under its lock, so it only grows.

use mysql::{Row, Value};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::store::clock;
use crate::store::db::{Db, Packet, Slot, StoreError};

/// Rows deleted per statement by the sweep.
const ROWS_PER_DELETE: u64 = 5000;
/// Entries written per INSERT: a conflict carries two records of up to
/// `MAX_RECORD_BYTES` each, and a statement must stay well under a host's
/// `max_allowed_packet`.
const MAX_STATEMENT_BYTES: usize = 2 * 1024 * 1024;

/// One logged conflict: its `conflict_details` entry (the two records as
/// compact JSON) and where it happened.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub at: i64,
    pub device_id: Option<String>,
    pub entity_type: String,
    pub entity_id: String,
    pub resolution: String,
    pub client_version: Box<RawValue>,
    pub server_version: Box<RawValue>,
}

impl Serialize for Entry {
    /// `{seq, at, device_id, entity_id, entity_type, client_version,
    /// server_version, resolution}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(8))?;
        map.serialize_entry("seq", &self.seq)?;
        map.serialize_entry("at", &clock::Rfc3339(self.at))?;
        map.serialize_entry("device_id", &self.device_id)?;
        map.serialize_entry("entity_id", &self.entity_id)?;
        map.serialize_entry("entity_type", &self.entity_type)?;
        map.serialize_entry("client_version", &self.client_version)?;
        map.serialize_entry("server_version", &self.server_version)?;
        map.serialize_entry("resolution", &self.resolution)?;
        map.end()
    }
}

impl Entry {
    /// The bytes of the two records it carries.
    pub fn record_bytes(&self) -> usize {
        self.client_version.get().len() + self.server_version.get().len()
    }
}

/// The INSERTs of `entries`, one per ~2 MiB of records.
fn inserts(user_id: &str, entries: &[Entry]) -> Vec<(String, Vec<Value>)> {
    let mut statements = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < entries.len() && (end == start || bytes <= MAX_STATEMENT_BYTES) {
            bytes += entries[end].record_bytes();
            end += 1;
        }
        let chunk = &entries[start..end];
        let rows = vec!["(?,?,?,?,?,?,?,?,?)"; chunk.len()].join(",");
        let sql = format!(
            "INSERT INTO conflict_log (user_id, seq, at, device_id, entity_type, entity_id, \
             resolution, client_version, server_version) VALUES {rows}"
        );
        let mut values = Vec::with_capacity(chunk.len() * 9);
        for entry in chunk {
            values.push(Value::from(user_id));
            values.push(Value::from(entry.seq));
            values.push(clock::to_sql(entry.at));
            values.push(entry.device_id.as_deref().map_or(Value::NULL, Value::from));
            values.push(Value::from(entry.entity_type.as_str()));
            values.push(Value::from(entry.entity_id.as_str()));
            values.push(Value::from(entry.resolution.as_str()));
            values.push(Value::from(entry.client_version.get()));
            values.push(Value::from(entry.server_version.get()));
        }
        statements.push((sql, values));
        start = end;
    }
    statements
}

/// Adds the entries' INSERTs to a packet (a small log rides with the
/// commit).
pub fn push_log(packet: &mut Packet, user_id: &str, entries: &[Entry]) -> Result<(), StoreError> {
    for (sql, values) in inserts(user_id, entries) {
        packet.push(&sql, &values)?;
    }
    Ok(())
}

/// Writes the entries by prepared statements (a large log: binary values,
/// and no packet that grows past the server's `max_allowed_packet`).
pub fn write_log(db: &mut Db, user_id: &str, entries: &[Entry]) -> Result<(), StoreError> {
    for (sql, values) in inserts(user_id, entries) {
        db.exec_write(&sql, values)?;
    }
    Ok(())
}

const COLUMNS: &str = "seq, at, device_id, entity_type, entity_id, resolution, \
     client_version, server_version";

fn entry_from(mut row: Row) -> Result<Entry, StoreError> {
    let unreadable = |column: &str| StoreError::broken(format!("conflict_log.{column} unreadable"));
    let seq: u64 = row
        .take_opt(0)
        .and_then(Result::ok)
        .ok_or_else(|| unreadable("seq"))?;
    let at = row
        .take_opt::<Value, _>(1)
        .and_then(Result::ok)
        .and_then(|v| clock::from_sql(&v))
        .ok_or_else(|| unreadable("at"))?;
    let device_id: Option<String> = row
        .take_opt(2)
        .and_then(Result::ok)
        .ok_or_else(|| unreadable("device_id"))?;
    let mut text = |index: usize, column: &str| -> Result<String, StoreError> {
        row.take_opt(index)
            .and_then(Result::ok)
            .ok_or_else(|| unreadable(column))
    };
    let entity_type = text(3, "entity_type")?;
    let entity_id = text(4, "entity_id")?;
    let resolution = text(5, "resolution")?;
    let json =
        |text: String, column: &str| RawValue::from_string(text).map_err(|_| unreadable(column));
    let client_version = json(text(6, "client_version")?, "client_version")?;
    let server_version = json(text(7, "server_version")?, "server_version")?;
    Ok(Entry {
        seq,
        at,
        device_id,
        entity_type,
        entity_id,
        resolution,
        client_version,
        server_version,
    })
}

/// The user's entries after `after`, at most `limit` (one more, to know
/// whether more remain), as a statement of a packet.
pub fn push_page(
    packet: &mut Packet,
    user_id: &str,
    after: u64,
    limit: usize,
) -> Result<Slot, StoreError> {
    packet.push(
        &format!(
            "SELECT {COLUMNS} FROM conflict_log WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        ),
        &[
            Value::from(user_id),
            Value::from(after),
            Value::from(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1)),
        ],
    )
}

/// The page `push_page` asked for, and whether more remain.
pub fn read_page(
    sets: &mut crate::store::db::Sets,
    slot: Slot,
    limit: usize,
) -> Result<(Vec<Entry>, bool), StoreError> {
    let mut entries = sets
        .rows(slot)?
        .into_iter()
        .map(entry_from)
        .collect::<Result<Vec<_>, _>>()?;
    let has_more = entries.len() > limit;
    entries.truncate(limit);
    Ok((entries, has_more))
}

/// Every entry of the user, in `seq` order, handed to `visit` as it
/// arrives (the export).
pub fn each<E>(
    db: &mut Db,
    user_id: &str,
    mut visit: impl FnMut(Entry) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<StoreError>,
{
    db.exec_each(
        &format!("SELECT {COLUMNS} FROM conflict_log WHERE user_id = ? ORDER BY seq"),
        (user_id,),
        |row| visit(entry_from(row)?),
    )
}

/// Deletes every user's entries logged before `cutoff` (`healthsync purge`).
pub fn sweep(db: &mut Db, cutoff: i64) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let deleted = db
            .exec_write(
                "DELETE FROM conflict_log WHERE at < ? LIMIT ?",
                (clock::to_sql(cutoff), ROWS_PER_DELETE),
            )?
            .affected_rows;
        total += deleted;
        if deleted < ROWS_PER_DELETE {
            return Ok(total);
        }
    }
}
