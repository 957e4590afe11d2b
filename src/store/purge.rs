//! Tombstone purge (`healthsync purge`): deletes tombstones received more
//! than `TOMBSTONE_DAYS` ago and records, per user, the newest version and
//! receive time purged, so a cursor older than that gets 410
//! `RESET_REQUIRED` instead of silently missing a deletion. A purged
//! tombstone leaves its entity's state digest (contract section 9.2: the
//! digest is over the records the user holds): its hash is XORed out in
//! the same transaction, so a device that pulls from scratch matches, and
//! one that still holds the tombstone finds it through the repair walk.
//! `sweep` removes conflict-log entries past the same age and expired
//! idempotency keys.

use mysql::Value;

use crate::store::clock;
use crate::store::db::{self, Db, StoreError};
use crate::store::{conflicts, idempotency};
use crate::sync::{digest, Entity};

/// Users handled per listing query.
const USERS_PER_PAGE: usize = 500;
/// Rows deleted per statement, so no transaction grows large.
const ROWS_PER_DELETE: usize = 5000;

#[derive(Default, Debug)]
pub struct Totals {
    pub users_seen: u64,
    pub users_purged: u64,
    pub tombstones: u64,
}

/// What `sweep` removed.
#[derive(Default, Debug)]
pub struct Swept {
    pub conflicts: u64,
    pub idempotency_keys: u64,
}

/// Deletes conflict-log entries logged before `conflicts_before` and
/// idempotency keys stored before `keys_before`, every user's, in
/// statements of bounded size.
pub fn sweep(db: &mut Db, conflicts_before: i64, keys_before: i64) -> Result<Swept, StoreError> {
    Ok(Swept {
        conflicts: conflicts::sweep(db, conflicts_before)?,
        idempotency_keys: idempotency::sweep(db, keys_before)?,
    })
}

/// Purges every user's old tombstones, calling `progress` after each page
/// of users.
pub fn purge(
    db: &mut Db,
    cutoff: i64,
    progress: &mut dyn FnMut(&Totals),
) -> Result<Totals, StoreError> {
    let mut totals = Totals::default();
    let mut after = String::new();
    loop {
        let ids: Vec<String> = db.exec(
            "SELECT id FROM users WHERE id > ? ORDER BY id LIMIT ?",
            (&after, USERS_PER_PAGE as u64),
        )?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        for user_id in &ids {
            let purged = purge_user(db, user_id, cutoff)?;
            totals.users_seen += 1;
            if purged > 0 {
                totals.users_purged += 1;
                totals.tombstones += purged;
            }
        }
        progress(&totals);
        after = last;
    }
    Ok(totals)
}

/// One user, in transactions that lock the user row first like every
/// writer, so a purge never races a push of the same user.
fn purge_user(db: &mut Db, user_id: &str, cutoff: i64) -> Result<u64, StoreError> {
    let mut purged = 0u64;
    for entity in Entity::ALL {
        loop {
            let deleted = db::transaction(db, |tx, _attempt| {
                let _: Option<u8> =
                    tx.exec_first("SELECT 1 FROM users WHERE id = ? FOR UPDATE", (user_id,))?;
                // The oldest tombstones, with their data: the user's quota
                // counts (rows, bytes of compact JSON) go down by theirs,
                // and the entity's digest loses their hashes.
                let oldest: Vec<(String, u64, Value, Vec<u8>)> = tx.exec(
                    &format!(
                        "SELECT id, version, server_updated_at, data \
                         FROM {} WHERE user_id = ? AND deleted_at IS NOT NULL AND server_updated_at < ? \
                         ORDER BY version LIMIT {ROWS_PER_DELETE}",
                        entity.table()
                    ),
                    (user_id, clock::to_sql(cutoff)),
                )?;
                let Some((_, max_version, max_received, _)) = oldest.last().cloned() else {
                    return Ok(0);
                };
                let max_received = oldest
                    .iter()
                    .map(|(_, _, received, _)| received.clone())
                    .max_by_key(clock::from_sql)
                    .unwrap_or(max_received);
                let leaving = oldest.iter().fold(0u64, |xor, (id, version, _, _)| {
                    xor ^ digest::record_hash(id, *version)
                });
                let freed_bytes: u64 = oldest
                    .iter()
                    .map(|(_, _, _, data)| {
                        serde_json::from_slice::<serde_json::Value>(data)
                            .map_or(data.len(), |value| crate::sync::compact_len(&value))
                            as u64
                    })
                    .sum();
                let result = tx.exec_write(
                    &format!(
                        "DELETE FROM {} WHERE user_id = ? AND deleted_at IS NOT NULL AND version <= ? \
                         AND server_updated_at < ?",
                        entity.table()
                    ),
                    (user_id, max_version, clock::to_sql(cutoff)),
                )?;
                let deleted = result.affected_rows;
                // Under the user's lock the delete meets exactly the rows
                // read (versions are unique, read in order): anything else
                // would leave the digest wrong, so it is not committed.
                if deleted != oldest.len() as u64 {
                    return Err(StoreError::broken(format!(
                        "purge of {}: read {} tombstones, deleted {deleted}",
                        entity.table(),
                        oldest.len()
                    )));
                }
                tx.exec_write(
                    &format!(
                        "UPDATE users SET purged_version = GREATEST(purged_version, ?), \
                         purged_before = GREATEST(COALESCE(purged_before, ?), ?), \
                         record_count = record_count - LEAST(record_count, ?), \
                         data_bytes = data_bytes - LEAST(data_bytes, ?), \
                         {table}_digest = {table}_digest ^ ? \
                         WHERE id = ?",
                        table = entity.table()
                    ),
                    (
                        max_version,
                        max_received.clone(),
                        max_received.clone(),
                        deleted,
                        freed_bytes,
                        leaving,
                        user_id,
                    ),
                )?;
                Ok::<u64, StoreError>(deleted)
            })?;
            purged += deleted;
            if deleted < ROWS_PER_DELETE as u64 {
                break;
            }
        }
    }
    Ok(purged)
}
