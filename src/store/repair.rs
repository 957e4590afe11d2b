//! The reads behind repair (contract section 9.3): the digest of the
//! records whose id starts with a hex prefix, with its sixteen children
//! or its records, and the current rows of a list of ids. Each is one
//! statement, which reads the user's position in the same snapshot (a
//! statement is one snapshot under READ COMMITTED), so the answer is
//! exact at the `sync_token` it reports.

use mysql::Value;

use crate::store::db::{Packet, Sets, Slot, StoreError};
use crate::store::records::{self, Pulled};
use crate::sync::digest;
use crate::sync::Entity;

/// A prefix's answer lists its records when it has at most this many.
pub const LEAF_RECORDS: usize = 64;

/// The hash of a stored row, in SQL: the first 16 hex digits of
/// SHA-256("<id>:<version>") as an unsigned integer (`sync::digest`).
const ROW_HASH: &str =
    "CAST(CONV(LEFT(SHA2(CONCAT(id, ':', version), 256), 16), 16, 10) AS UNSIGNED)";

/// What `GET /<slug>/digest?prefix=` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixDigest {
    pub sync_token: u64,
    pub count: u64,
    pub digest: u64,
    /// `(id, version)` in ascending id, when `count <= LEAF_RECORDS`.
    pub records: Option<Vec<(String, u64)>>,
    /// `(count, digest)` of the prefix followed by each hex digit,
    /// otherwise.
    pub children: Option<[(u64, u64); 16]>,
}

/// One statement: the prefix's first `LEAF_RECORDS + 1` ids (enough to
/// know whether it is a leaf), the count and digest of each child grouped
/// by the id's next hex digit (hyphens skipped), and the user's position.
/// `prefix` is 0 to 8 lower-case hex digits, checked by the caller: an id's
/// first 8 characters are hex, so it is a plain `LIKE` range of the key.
pub fn push_prefix_digest(
    packet: &mut Packet,
    user_id: &str,
    entity: Entity,
    prefix: &str,
) -> Result<Slot, StoreError> {
    let table = entity.table();
    let pattern = format!("{prefix}%");
    let sql = format!(
        "(SELECT 0 AS part, id AS name, version AS number, CAST(0 AS UNSIGNED) AS hash \
           FROM {table} WHERE user_id = ? AND id LIKE ? ORDER BY id LIMIT ?) \
         UNION ALL \
         (SELECT 1, SUBSTRING(REPLACE(id, '-', ''), ?, 1), COUNT(*), BIT_XOR({ROW_HASH}) \
           FROM {table} WHERE user_id = ? AND id LIKE ? GROUP BY 2) \
         UNION ALL \
         (SELECT 2, '', change_counter, CAST(0 AS UNSIGNED) FROM users WHERE id = ?)"
    );
    packet.push(
        &sql,
        &[
            Value::from(user_id),
            Value::from(pattern.as_str()),
            Value::from(LEAF_RECORDS as u64 + 1),
            Value::from(prefix.len() as u64 + 1),
            Value::from(user_id),
            Value::from(pattern.as_str()),
            Value::from(user_id),
        ],
    )
}

/// What `push_prefix_digest` read. `None` when the user row was gone.
pub fn read_prefix_digest(sets: &mut Sets, slot: Slot) -> Result<Option<PrefixDigest>, StoreError> {
    let unreadable = || StoreError::broken("a prefix digest row is unreadable");
    let mut records = Vec::new();
    let mut children = [(0u64, 0u64); 16];
    let mut sync_token = None;
    for mut row in sets.rows(slot)? {
        let part: u64 = row
            .take_opt(0)
            .and_then(Result::ok)
            .ok_or_else(unreadable)?;
        let name: String = row
            .take_opt(1)
            .and_then(Result::ok)
            .ok_or_else(unreadable)?;
        let number: u64 = row
            .take_opt(2)
            .and_then(Result::ok)
            .ok_or_else(unreadable)?;
        match part {
            0 => records.push((name, number)),
            1 => {
                let hash: u64 = row
                    .take_opt(3)
                    .and_then(Result::ok)
                    .ok_or_else(unreadable)?;
                let digit = u8::from_str_radix(&name, 16)
                    .ok()
                    .and_then(|digit| children.get_mut(usize::from(digit)))
                    .ok_or_else(|| StoreError::broken(format!("a stored id has {name:?} in it")))?;
                *digit = (number, hash);
            }
            _ => sync_token = Some(number),
        }
    }
    let Some(sync_token) = sync_token else {
        return Ok(None);
    };
    if records.len() <= LEAF_RECORDS {
        let digest = digest::of(records.iter().map(|(id, version)| (id.as_str(), *version)));
        return Ok(Some(PrefixDigest {
            sync_token,
            count: records.len() as u64,
            digest: digest.0,
            records: Some(records),
            children: None,
        }));
    }
    Ok(Some(PrefixDigest {
        sync_token,
        count: children.iter().map(|(count, _)| count).sum(),
        digest: children.iter().fold(0, |acc, (_, digest)| acc ^ digest),
        records: None,
        children: Some(children),
    }))
}

/// One statement: the rows of `ids` (each at most once) and the user's
/// position.
pub fn push_fetch(
    packet: &mut Packet,
    user_id: &str,
    entity: Entity,
    ids: &[&str],
) -> Result<Slot, StoreError> {
    let mut values = vec![Value::from(user_id)];
    values.extend(ids.iter().map(|id| Value::from(*id)));
    values.push(Value::from(user_id));
    let placeholders = vec!["?"; ids.len()].join(",");
    let sql = format!(
        "(SELECT 1 AS part, id, data, updated_at, deleted_at, version \
           FROM {} FORCE INDEX (PRIMARY) WHERE user_id = ? AND id IN ({placeholders})) \
         UNION ALL \
         (SELECT 0, NULL, NULL, NULL, NULL, change_counter FROM users WHERE id = ?)",
        entity.table()
    );
    packet.push(&sql, &values)
}

/// What `push_fetch` read: the rows in no particular order, and the
/// user's position (`None` when the user row was gone).
pub fn read_fetch(
    sets: &mut Sets,
    slot: Slot,
    entity: Entity,
) -> Result<(Vec<Pulled>, Option<u64>), StoreError> {
    let mut rows = Vec::new();
    let mut position = None;
    for mut row in sets.rows(slot)? {
        let part: u64 = row
            .take_opt(0)
            .and_then(Result::ok)
            .ok_or_else(|| StoreError::broken("a fetched row is unreadable"))?;
        if part == 0 {
            position = row.take_opt(5).and_then(Result::ok);
            continue;
        }
        rows.push(records::read_pulled_from(entity, row, 1)?);
    }
    Ok((rows, position))
}
