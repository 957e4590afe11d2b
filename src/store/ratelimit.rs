//! Fixed-window rate-limit counters in the `rate_limits` MEMORY table: one
//! upsert per check, whose new count comes back in the OK packet (through
//! `LAST_INSERT_ID(expr)`), so a check is one round trip and no commit.

use mysql::prelude::Queryable;

use crate::error::ApiError;

/// Counts one hit in `bucket` for the window starting at `window_start`
/// (unix seconds) and returns the hits in that window, this one included.
pub fn hit(conn: &mut impl Queryable, bucket: &[u8], window_start: i64) -> Result<u32, ApiError> {
    // Assignments apply left to right: `hits` reads the old window_start.
    let result = conn.exec_iter(
        r"INSERT INTO rate_limits (bucket, window_start, hits) VALUES (?, ?, 1)
          ON DUPLICATE KEY UPDATE
            hits = LAST_INSERT_ID(IF(window_start = VALUES(window_start), hits + 1, 1)),
            window_start = VALUES(window_start)",
        (bucket, window_start),
    )?;
    // A fresh row reports one affected row and no insert id.
    let count = match result.affected_rows() {
        1 => 1,
        _ => result.last_insert_id().unwrap_or(1),
    };
    drop(result);
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

/// Deletes counters of windows that have ended. Called now and then by
/// requests, so no cron job is needed.
pub fn delete_expired(conn: &mut impl Queryable, current_window: i64) -> Result<(), ApiError> {
    conn.exec_drop(
        "DELETE FROM rate_limits WHERE window_start < ?",
        (current_window,),
    )?;
    Ok(())
}
