//! The checks every authenticated route makes, in the contract's order:
//! the access token (401), the user's row and token version (401), then
//! the user's rate limit (429). The user read and the count travel in one
//! packet, with whatever else the route can ask for before it knows the
//! user (its page, the rows it will lock): one round trip for a pull.

use std::marker::PhantomData;

use crate::auth::{ratelimit, tokens};
use crate::ctx::{Ctx, Env, Seen};
use crate::error::ApiError;
use crate::http::Request;
use crate::store::db::{Db, Packet, Sets, Slot, StoreError};
use crate::store::ratelimit as counters;
use crate::store::users::{self, Lock, Position, RevokedLogins, User};
use crate::sync::Entity;

/// Verifies the request's access token; no database work yet.
pub fn access_claims(
    env: &Env,
    request: &Request,
    seen: &mut Seen,
) -> Result<tokens::AccessClaims, ApiError> {
    let token = tokens::bearer(request)?;
    let claims = tokens::verify_access(&env.config.jwt_secret, token)?;
    seen.user_id = Some(claims.user_id.clone());
    Ok(claims)
}

/// The user read (the whole row, `User`, or a pull's `Position`) and the
/// rate-limit count, added to a packet.
pub struct Opening<Read> {
    user: Slot,
    /// `None` when this attempt does not count (a transaction run again
    /// after a deadlock counts once).
    hit: Option<Slot>,
    window: ratelimit::Window,
    limit: u32,
    read: PhantomData<Read>,
}

pub fn push_open(
    packet: &mut Packet,
    env: &Env,
    claims: &tokens::AccessClaims,
    lock: Lock,
    count: bool,
) -> Result<Opening<User>, ApiError> {
    push_opening(packet, env, claims, count, |packet| {
        users::push_find_by_id(packet, &claims.user_id, lock)
    })
}

/// The opening of a pull: the count, and only what a page of `entity`
/// needs of the user.
pub fn push_open_position(
    packet: &mut Packet,
    env: &Env,
    claims: &tokens::AccessClaims,
    entity: Entity,
    lock: Lock,
    count: bool,
) -> Result<Opening<Position>, ApiError> {
    push_opening(packet, env, claims, count, |packet| {
        users::push_find_position(packet, &claims.user_id, entity, lock)
    })
}

fn push_opening<Read>(
    packet: &mut Packet,
    env: &Env,
    claims: &tokens::AccessClaims,
    count: bool,
    push_read: impl FnOnce(&mut Packet) -> Result<Slot, StoreError>,
) -> Result<Opening<Read>, ApiError> {
    let window = ratelimit::window(env.now_secs());
    let hit = match count {
        true => Some(counters::push_hit(
            packet,
            &ratelimit::user_bucket(&claims.user_id),
            window.start,
        )?),
        false => None,
    };
    let user = push_read(packet)?;
    Ok(Opening {
        user,
        hit,
        window,
        limit: env.config.rate_limit_per_minute,
        read: PhantomData,
    })
}

/// Runs a packet that carries an opening. A rate-limit table too full to
/// take a new counter fails the request closed, and sweeps the ended
/// windows, so the next request counts again: a full table refuses
/// requests for no longer than a window.
pub fn run_opening(db: &mut Db, env: &Env, packet: Packet) -> Result<Sets, StoreError> {
    db.run(packet)
        .inspect_err(|error| ratelimit::relieve(db, error, env.now_secs()))
}

/// Reads the opening's results: 401 for a missing user or a revoked
/// token, then 429 over the limit.
pub fn finish_open(
    db: &mut Db,
    sets: &mut Sets,
    opening: Opening<User>,
    claims: &tokens::AccessClaims,
    seen: &mut Seen,
) -> Result<User, ApiError> {
    let user = check_user(users::read_user(sets, opening.user)?, claims)?;
    finish_count(db, sets, &opening, seen)?;
    Ok(user)
}

/// The same for a pull's opening.
pub fn finish_open_position(
    db: &mut Db,
    sets: &mut Sets,
    opening: Opening<Position>,
    claims: &tokens::AccessClaims,
    seen: &mut Seen,
) -> Result<Position, ApiError> {
    let position =
        users::read_position(sets, opening.user)?.ok_or(ApiError::Unauthorized(NO_ACCOUNT))?;
    check_credentials(position.token_version, &position.revoked_logins, claims)?;
    finish_count(db, sets, &opening, seen)?;
    Ok(position)
}

fn finish_count<Read>(
    db: &mut Db,
    sets: &mut Sets,
    opening: &Opening<Read>,
    seen: &mut Seen,
) -> Result<(), ApiError> {
    if let Some(slot) = opening.hit {
        let hits = counters::read_hit(sets, slot);
        let state = ratelimit::judge(db, hits, opening.limit, opening.window);
        record(seen, state)?;
    }
    Ok(())
}

const NO_ACCOUNT: &str = "The account no longer exists";

/// Refuses a missing user, a token issued before a logout-everywhere, a
/// password change or an erasure, and a token of a login that was logged
/// out or revoked for reuse.
pub fn check_user(user: Option<User>, claims: &tokens::AccessClaims) -> Result<User, ApiError> {
    let user = user.ok_or(ApiError::Unauthorized(NO_ACCOUNT))?;
    check_credentials(user.token_version, &user.revoked_logins, claims)?;
    Ok(user)
}

fn check_credentials(
    token_version: u32,
    revoked_logins: &RevokedLogins,
    claims: &tokens::AccessClaims,
) -> Result<(), ApiError> {
    let login_revoked = claims
        .sid
        .as_deref()
        .is_some_and(|login| revoked_logins.contains(login));
    if token_version != claims.token_version || login_revoked {
        return Err(ApiError::Unauthorized("The token has been revoked"));
    }
    Ok(())
}

/// Reads (and optionally locks) the token's user on its own.
pub fn load_user(db: &mut Db, claims: &tokens::AccessClaims, lock: Lock) -> Result<User, ApiError> {
    check_user(users::find_by_id(db, &claims.user_id, lock)?, claims)
}

/// The opening of a read-only authenticated route in one round trip: the
/// token (401), the user's row and token version (401), the user's limit
/// (429).
pub fn open<'c, 'a>(
    ctx: &'c mut Ctx<'a>,
    request: &Request,
    seen: &mut Seen,
) -> Result<Opened<'c, 'a>, ApiError> {
    let claims = access_claims(&ctx.env, request, seen)?;
    let mut packet = Packet::new();
    let opening = push_open(&mut packet, &ctx.env, &claims, Lock::None, true)?;
    let (db, env) = ctx.db()?;
    let mut sets = run_opening(db, env, packet)?;
    let user = finish_open(db, &mut sets, opening, &claims, seen)?;
    Ok(Opened {
        db,
        env,
        claims,
        user,
    })
}

/// The one round trip of a read-only sync route (digest, fetch, the
/// conflict log): the route's statement, when its input parsed, goes
/// first in the packet with the opening after it. Then the contract's
/// order: 401, 429, the input's own refusal, `SYNC_DISABLED`. Answers the
/// results and the route statement's slot.
pub fn read_for_sync<Input>(
    ctx: &mut Ctx,
    claims: &tokens::AccessClaims,
    seen: &mut Seen,
    input: &Result<Input, ApiError>,
    push: impl FnOnce(&mut Packet, &Input) -> Result<Slot, StoreError>,
) -> Result<(Sets, Slot), ApiError> {
    let (db, env) = ctx.db()?;
    let mut packet = Packet::new();
    let slot = match input {
        Ok(input) => Some(push(&mut packet, input)?),
        Err(_) => None,
    };
    let opening = push_open(&mut packet, env, claims, Lock::None, true)?;
    let mut sets = run_opening(db, env, packet)?;
    let user = finish_open(db, &mut sets, opening, claims, seen)?;
    input.as_ref().map_err(Clone::clone)?;
    if !user.sync_enabled {
        return Err(ApiError::SyncDisabled);
    }
    let slot = slot.ok_or_else(|| ApiError::Internal("route statement missing".into()))?;
    Ok((sets, slot))
}

/// An authenticated, counted request: its connection, facts, token and
/// user.
pub struct Opened<'c, 'a> {
    pub db: &'c mut Db,
    pub env: &'c Env<'a>,
    pub claims: tokens::AccessClaims,
    pub user: User,
}

/// Counts an `/auth/*` request against its client address.
pub fn limit_address(
    env: &Env,
    db: &mut Db,
    address: &str,
    seen: &mut Seen,
) -> Result<(), ApiError> {
    let bucket = ratelimit::address_bucket(address);
    let state = ratelimit::check(
        db,
        &bucket,
        env.config.auth_rate_limit_per_minute,
        env.now_secs(),
    );
    record(seen, state)
}

fn record(
    seen: &mut Seen,
    state: Result<crate::error::RateLimitState, ApiError>,
) -> Result<(), ApiError> {
    match state {
        Ok(state) => {
            seen.rate_limit = Some(state);
            Ok(())
        }
        Err(ApiError::RateLimited(state)) => {
            seen.rate_limit = Some(state);
            Err(ApiError::RateLimited(state))
        }
        Err(other) => Err(other),
    }
}
