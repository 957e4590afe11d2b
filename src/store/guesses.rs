//! Wrong passwords per account (`auth_failures`, contract section 2, v2):
//! one row per failure, counted over sliding windows.

use crate::store::db::{Db, StoreError};

/// A limit on failures: at most `count` within `window_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub count: u32,
    pub window_ms: i64,
}

/// Until when (unix ms) the account is refused, if it is: the moment the
/// oldest of the last `count` failures leaves its window, for whichever
/// limit is full. One statement, two index range reads.
pub fn blocked_until(
    db: &mut Db,
    account: &[u8],
    address: &[u8],
    per_address: Limit,
    per_account: Limit,
    now_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let row: Option<(Option<i64>, Option<i64>)> = db.exec_first(
        r"SELECT
            (SELECT failed_at FROM auth_failures
              WHERE account = ? AND address = ? AND failed_at > ?
              ORDER BY failed_at DESC LIMIT 1 OFFSET ?),
            (SELECT failed_at FROM auth_failures
              WHERE account = ? AND failed_at > ?
              ORDER BY failed_at DESC LIMIT 1 OFFSET ?)",
        (
            account,
            address,
            now_ms - per_address.window_ms,
            per_address.count.saturating_sub(1),
            account,
            now_ms - per_account.window_ms,
            per_account.count.saturating_sub(1),
        ),
    )?;
    let Some((address_full, account_full)) = row else {
        return Ok(None);
    };
    let until = [
        address_full.map(|at| at + per_address.window_ms),
        account_full.map(|at| at + per_account.window_ms),
    ]
    .into_iter()
    .flatten()
    .max();
    Ok(until.filter(|until| *until > now_ms))
}

/// Counts one failure, and sweeps a bounded number of rows that no window
/// reaches any more (`keep_ms`: the longest window), so the table stays as
/// small as the last hour's failures without a cron job.
pub fn record_failure(
    db: &mut Db,
    account: &[u8],
    address: &[u8],
    now_ms: i64,
    keep_ms: i64,
) -> Result<(), StoreError> {
    db.exec_write(
        "INSERT INTO auth_failures (account, address, failed_at) VALUES (?, ?, ?)",
        (account, address, now_ms),
    )?;
    db.exec_write(
        "DELETE FROM auth_failures WHERE failed_at < ? LIMIT 100",
        (now_ms - keep_ms,),
    )?;
    Ok(())
}
