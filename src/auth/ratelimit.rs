//! Rate limits with no daemon: fixed one-minute windows counted in MySQL
//! (`store::ratelimit`). Per user on data and account routes, per client
//! address and per email on `/auth/*`. A counter that cannot be written
//! fails the request closed (503), never open.

use mysql::prelude::Queryable;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, RateLimitState};
use crate::store::ratelimit;

const WINDOW_SECS: i64 = 60;

/// The bucket key of a user's data-route counter.
pub fn user_bucket(user_id: &str) -> Vec<u8> {
    format!("u:{user_id}").into_bytes()
}

/// The bucket key of a client address (the connection's, as the web server
/// reports it; `X-Forwarded-For` is client-controlled and never used).
pub fn address_bucket(address: &str) -> Vec<u8> {
    format!("a:{address}").into_bytes()
}

/// The bucket key of an email: hashed, so the table holds no address.
pub fn email_bucket(normalized_email: &str) -> Vec<u8> {
    let mut key = b"e:".to_vec();
    key.extend_from_slice(&Sha256::digest(normalized_email.as_bytes()));
    key
}

/// Counts a hit and fails with 429 over `limit`. Returns the state for the
/// `RateLimit-*` headers. The first hit of a bucket in a new window also
/// deletes every ended window's counter, so the table stays as small as
/// the set of recent clients without a cron job.
pub fn check(
    conn: &mut impl Queryable,
    bucket: &[u8],
    limit: u32,
    now_secs: i64,
) -> Result<RateLimitState, ApiError> {
    let window_start = now_secs - now_secs.rem_euclid(WINDOW_SECS);
    let hits = ratelimit::hit(conn, bucket, window_start).map_err(fail_closed)?;
    if hits == 1 {
        ratelimit::delete_expired(conn, window_start).map_err(fail_closed)?;
    }
    let reset_secs = u32::try_from(window_start + WINDOW_SECS - now_secs)
        .unwrap_or(1)
        .max(1);
    let state = RateLimitState {
        limit,
        remaining: limit.saturating_sub(hits),
        reset_secs,
    };
    if hits > limit {
        return Err(ApiError::RateLimited(state));
    }
    Ok(state)
}

/// Whatever went wrong writing a counter, the request is refused: a limit
/// that silently stops counting protects nothing.
fn fail_closed(error: ApiError) -> ApiError {
    match error {
        ApiError::Internal(cause) | ApiError::Unavailable(cause) | ApiError::Contention(cause) => {
            ApiError::Unavailable(format!("rate-limit counter: {cause}"))
        }
        other => other,
    }
}
