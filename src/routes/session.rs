//! The checks every authenticated route makes, in the contract's order:
//! the access token (401), the user's row and token version (401), then
//! the rate limits (429).

use mysql::prelude::Queryable;

use mysql::Conn;

use crate::app::{Ctx, Env};
use crate::auth::{ratelimit, tokens};
use crate::error::{ApiError, RateLimitState};
use crate::http::Request;
use crate::store::users::{self, Lock, User};

/// Verifies the request's access token; no database work yet.
pub fn access_claims(env: &Env, request: &Request) -> Result<tokens::AccessClaims, ApiError> {
    let token = tokens::bearer(request)?;
    let claims = tokens::verify_access(&env.config.jwt_secret, token)?;
    *env.user_id.borrow_mut() = Some(claims.user_id.clone());
    Ok(claims)
}

/// Reads (and optionally locks) the token's user, refusing a token issued
/// before a logout-everywhere, a password change or an erasure.
pub fn load_user(
    conn: &mut impl Queryable,
    claims: &tokens::AccessClaims,
    lock: Lock,
) -> Result<User, ApiError> {
    let user = users::find_by_id(conn, &claims.user_id, lock)?
        .ok_or(ApiError::Unauthorized("The account no longer exists"))?;
    if user.token_version != claims.token_version {
        return Err(ApiError::Unauthorized("The token has been revoked"));
    }
    Ok(user)
}

/// The opening of every read-only authenticated route: the token (401),
/// the user's row and token version (401), the user's limit (429).
pub fn open<'c, 'a>(
    ctx: &'c mut Ctx<'a>,
    request: &Request,
) -> Result<(&'c mut Conn, &'c Env<'a>, tokens::AccessClaims, User), ApiError> {
    let claims = access_claims(&ctx.env, request)?;
    let (conn, env) = ctx.conn()?;
    let user = load_user(conn, &claims, Lock::None)?;
    limit_user(env, conn, &user.id)?;
    Ok((conn, env, claims, user))
}

/// Counts the request against the user's per-minute limit.
pub fn limit_user(env: &Env, conn: &mut impl Queryable, user_id: &str) -> Result<(), ApiError> {
    let bucket = ratelimit::user_bucket(user_id);
    let state = ratelimit::check(
        conn,
        &bucket,
        env.config.rate_limit_per_minute,
        env.now_secs(),
    );
    record(env, state)
}

/// Counts an `/auth/*` request against its client address.
pub fn limit_address(env: &Env, conn: &mut impl Queryable, address: &str) -> Result<(), ApiError> {
    let bucket = ratelimit::address_bucket(address);
    let state = ratelimit::check(
        conn,
        &bucket,
        env.config.auth_rate_limit_per_minute,
        env.now_secs(),
    );
    record(env, state)
}

/// Counts an `/auth/*` request against the (normalized) email it names.
pub fn limit_email(env: &Env, conn: &mut impl Queryable, email: &str) -> Result<(), ApiError> {
    let bucket = ratelimit::email_bucket(email);
    let state = ratelimit::check(
        conn,
        &bucket,
        env.config.auth_rate_limit_per_minute,
        env.now_secs(),
    );
    // The headers report the tighter of the address and email limits.
    let tighter_already = match (&state, env.rate_limit.get()) {
        (Ok(email_state), Some(address_state)) => address_state.remaining <= email_state.remaining,
        _ => false,
    };
    if tighter_already {
        return Ok(());
    }
    record(env, state)
}

fn record(env: &Env, state: Result<RateLimitState, ApiError>) -> Result<(), ApiError> {
    match state {
        Ok(state) => {
            env.rate_limit.set(Some(state));
            Ok(())
        }
        Err(ApiError::RateLimited(state)) => {
            env.rate_limit.set(Some(state));
            Err(ApiError::RateLimited(state))
        }
        Err(other) => Err(other),
    }
}
