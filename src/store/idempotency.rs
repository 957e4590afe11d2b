//! `idempotency_keys` (contract section 9.1): the first successful answer
//! to a keyed push or bulk, stored in the transaction of its writes and
//! read back under the user's row lock, so two requests with one key
//! serialize and the second finds the first's answer. Keys are per user;
//! an expired one is ignored, replaced by the next use, and swept.

use mysql::Value;

use crate::store::clock;
use crate::store::db::{Db, Packet, Sets, Slot, StoreError};

/// Rows deleted per statement by the sweep, so no transaction grows large.
const ROWS_PER_DELETE: u64 = 5000;

/// What a key was first used for, and the answer it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub route: String,
    pub body_hash: Vec<u8>,
    /// The answer's `data`, as sent.
    pub answer: Vec<u8>,
}

/// Reads the user's key, if stored at or after `fresh_since` (an older
/// one has expired and counts as absent). Goes into the packet after the
/// user row's `FOR UPDATE`, so it reads what the key's previous holder of
/// that lock committed.
pub fn push_find(
    packet: &mut Packet,
    user_id: &str,
    key: &[u8],
    fresh_since: i64,
) -> Result<Slot, StoreError> {
    packet.push(
        "SELECT route, body_hash, answer FROM idempotency_keys \
         WHERE user_id = ? AND idem_key = ? AND created_at >= ?",
        &[
            Value::from(user_id),
            Value::from(key),
            clock::to_sql(fresh_since),
        ],
    )
}

pub fn read_found(sets: &mut Sets, slot: Slot) -> Result<Option<Stored>, StoreError> {
    let Some(mut row) = sets.rows(slot)?.into_iter().next() else {
        return Ok(None);
    };
    let unreadable = || StoreError::broken("an idempotency key row is unreadable");
    let route: String = row
        .take_opt(0)
        .and_then(Result::ok)
        .ok_or_else(unreadable)?;
    let body_hash: Vec<u8> = row
        .take_opt(1)
        .and_then(Result::ok)
        .ok_or_else(unreadable)?;
    let answer: Vec<u8> = row
        .take_opt(2)
        .and_then(Result::ok)
        .ok_or_else(unreadable)?;
    Ok(Some(Stored {
        route,
        body_hash,
        answer,
    }))
}

/// A key's first answer, to store with the request's writes.
pub struct NewKey<'a> {
    pub key: &'a [u8],
    pub route: &'a str,
    pub body_hash: &'a [u8],
    pub answer: &'a [u8],
    pub now: i64,
    /// The user's keys stored before this have expired: swept here.
    pub expired_before: i64,
}

/// The sweep of the user's expired keys, then the key's row (replacing
/// an expired row of the same key).
fn statements(user_id: &str, new: &NewKey) -> [(&'static str, Vec<Value>); 2] {
    [
        (
            "DELETE FROM idempotency_keys WHERE user_id = ? AND created_at < ?",
            vec![Value::from(user_id), clock::to_sql(new.expired_before)],
        ),
        (
            "INSERT INTO idempotency_keys (user_id, idem_key, route, body_hash, answer, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE route = VALUES(route), body_hash = VALUES(body_hash), \
             answer = VALUES(answer), created_at = VALUES(created_at)",
            vec![
                Value::from(user_id),
                Value::from(new.key),
                Value::from(new.route),
                Value::from(new.body_hash),
                Value::from(new.answer),
                clock::to_sql(new.now),
            ],
        ),
    ]
}

/// Stores the key as statements of a packet (a small answer rides with
/// the commit).
pub fn push_store(packet: &mut Packet, user_id: &str, new: &NewKey) -> Result<(), StoreError> {
    for (sql, values) in statements(user_id, new) {
        packet.push(sql, &values)?;
    }
    Ok(())
}

/// Stores the key by prepared statements (a large answer: binary, not
/// escaped into a packet's text).
pub fn store(db: &mut Db, user_id: &str, new: &NewKey) -> Result<(), StoreError> {
    for (sql, values) in statements(user_id, new) {
        db.exec_write(sql, values)?;
    }
    Ok(())
}

/// Deletes every user's keys stored before `cutoff` (`healthsync purge`).
pub fn sweep(db: &mut Db, cutoff: i64) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let deleted = db
            .exec_write(
                "DELETE FROM idempotency_keys WHERE created_at < ? LIMIT ?",
                (clock::to_sql(cutoff), ROWS_PER_DELETE),
            )?
            .affected_rows;
        total += deleted;
        if deleted < ROWS_PER_DELETE {
            return Ok(total);
        }
    }
}
