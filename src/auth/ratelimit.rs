//! Rate limits with no daemon: fixed one-minute windows counted in MySQL
//! (`store::ratelimit`). Per user on data and account routes, per client
//! address on `/auth/*`. A counter that cannot be written
//! fails the request closed (503), never open.

use crate::error::{ApiError, RateLimitState};
use crate::store::db::{Db, StoreError, StoreErrorKind};
use crate::store::ratelimit;

const WINDOW_SECS: i64 = 60;

/// The bucket key of a user's data-route counter.
pub fn user_bucket(user_id: &str) -> Vec<u8> {
    format!("u:{user_id}").into_bytes()
}

/// The bucket key of a client address (the connection's, as the web server
/// reports it; `X-Forwarded-For` is client-controlled and never used), an
/// IPv6 address by its /64 prefix.
pub fn address_bucket(address: &str) -> Vec<u8> {
    format!("a:{}", crate::auth::guessing::address_key(address)).into_bytes()
}

/// The window a moment falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Unix seconds of the window's start.
    pub start: i64,
    /// Seconds until the next window, at least 1.
    pub reset_secs: u32,
}

pub fn window(now_secs: i64) -> Window {
    let start = now_secs - now_secs.rem_euclid(WINDOW_SECS);
    Window {
        start,
        reset_secs: u32::try_from(start + WINDOW_SECS - now_secs)
            .unwrap_or(1)
            .max(1),
    }
}

/// The verdict on a count of hits: the `RateLimit-*` state, or 429. The
/// first hit of a bucket in a new window also deletes every ended
/// window's counter, so the table stays as small as the set of recent
/// clients without a cron job.
pub fn judge(
    db: &mut Db,
    hits: Result<u32, StoreError>,
    limit: u32,
    window: Window,
) -> Result<RateLimitState, ApiError> {
    let hits = hits.map_err(fail_closed)?;
    if hits == 1 {
        ratelimit::delete_expired(db, window.start).map_err(fail_closed)?;
    }
    let state = RateLimitState {
        limit,
        remaining: limit.saturating_sub(hits),
        reset_secs: window.reset_secs,
    };
    if hits > limit {
        return Err(ApiError::RateLimited(state));
    }
    Ok(state)
}

/// Counts a hit in its own statement and judges it.
pub fn check(
    db: &mut Db,
    bucket: &[u8],
    limit: u32,
    now_secs: i64,
) -> Result<RateLimitState, ApiError> {
    let window = window(now_secs);
    let hits = ratelimit::hit(db, bucket, window.start);
    if let Err(error) = &hits {
        relieve(db, error, now_secs);
    }
    judge(db, hits, limit, window)
}

/// After a failed count: when the counter table is full (a MEMORY table
/// has a fixed size), deletes the ended windows' counters. The request
/// that met the full table is still refused; the next one counts.
pub fn relieve(db: &mut Db, error: &StoreError, now_secs: i64) {
    if error.code == Some(ratelimit::ER_TABLE_FULL) {
        // Best effort: if this fails too, the next full table tries again.
        let _ = ratelimit::delete_expired(db, window(now_secs).start);
    }
}

/// Whatever went wrong writing a counter, the request is refused: a limit
/// that silently stops counting protects nothing. A deadlock (on a Galera
/// cluster: the request's transaction lost to another node's write while
/// it swept the ended windows) is contention, which runs the transaction
/// again; the hit was counted already and is not counted twice.
fn fail_closed(error: StoreError) -> ApiError {
    match error.kind {
        StoreErrorKind::Contention => {
            ApiError::Contention(format!("rate-limit counter: {}", error.cause))
        }
        _ => ApiError::Unavailable(format!("rate-limit counter: {}", error.cause)),
    }
}
