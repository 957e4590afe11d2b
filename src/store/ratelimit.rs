//! Fixed-window rate-limit counters in the `rate_limits` MEMORY table: one
//! upsert per check, whose new count comes back in the OK packet (through
//! `LAST_INSERT_ID(expr)`), so a check is one statement and no commit, and
//! can ride in the packet that also reads the user.
//!
//! The count is about a tenth of what a pull costs: pulls with it made
//! 0.90 (one connection) and 0.87 (eight) of the throughput of pulls
//! without it, interleaved through Apache. Measured and worse or no
//! better, so left as it is:
//! - an InnoDB table: every pull waits for a redo-log flush (0.70 of the
//!   uncounted pulls' throughput at one connection);
//! - the MEMORY table partitioned by bucket: the statement locks every
//!   partition, so it waits more, not less;
//! - the counters spread over 16 MEMORY tables by a hash of the bucket:
//!   the table-lock waits (nearly a quarter of the counts at eight
//!   connections) are gone, the throughput is not higher. The
//!   statement's own work is the cost, not the lock.

use mysql::Value;

use crate::store::db::{Db, Packet, Sets, Slot, StoreError, Written};

/// "The table is full": a MEMORY table at its size limit.
pub const ER_TABLE_FULL: u16 = 1114;

/// Assignments apply left to right: `hits` reads the old window_start.
const HIT: &str = r"INSERT INTO rate_limits (bucket, window_start, hits) VALUES (?, ?, 1)
    ON DUPLICATE KEY UPDATE
      hits = LAST_INSERT_ID(IF(window_start = VALUES(window_start), hits + 1, 1)),
      window_start = VALUES(window_start)";

/// Counts one hit in `bucket` for the window starting at `window_start`
/// (unix seconds) and returns the hits in that window, this one included.
pub fn hit(db: &mut Db, bucket: &[u8], window_start: i64) -> Result<u32, StoreError> {
    let written = db.exec_write(HIT, (bucket, window_start))?;
    Ok(hits(written))
}

/// The same count, as a statement of a larger packet.
pub fn push_hit(packet: &mut Packet, bucket: &[u8], window_start: i64) -> Result<Slot, StoreError> {
    packet.push(HIT, &[Value::from(bucket), Value::from(window_start)])
}

pub fn read_hit(sets: &mut Sets, slot: Slot) -> Result<u32, StoreError> {
    Ok(hits(sets.written(slot)?))
}

fn hits(written: Written) -> u32 {
    // A fresh row reports one affected row and no insert id.
    let count = match written.affected_rows {
        1 => 1,
        _ => written.last_insert_id.unwrap_or(1),
    };
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Deletes counters of windows that have ended. Called now and then by
/// requests, so no cron job is needed.
pub fn delete_expired(db: &mut Db, current_window: i64) -> Result<(), StoreError> {
    db.exec_write(
        "DELETE FROM rate_limits WHERE window_start < ?",
        (current_window,),
    )?;
    Ok(())
}
