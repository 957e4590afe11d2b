//! `GET /sync/conflicts?after=&limit=` (contract section 9.4): the
//! conflicts the server resolved for the user, in pages by `seq`, in one
//! round trip with the session's opening.

use serde_json::{json, Map};

use crate::auth::session;
use crate::ctx::{Ctx, Seen};
use crate::engine::{self, wire};
use crate::error::ApiError;
use crate::http::{Request, Response};
use crate::reply::ok;
use crate::routes::records::parse_limit;
use crate::store::conflicts;

/// `after` (a `seq`, 0 before the first) and `limit`.
pub fn parse_query(request: &Request) -> Result<(u64, usize), ApiError> {
    if let Some(defect) = &request.query_defect {
        return Err(defect.clone());
    }
    let mut errors = Map::new();
    let after = match request.query_param("after") {
        None => 0,
        Some(text) => match wire::Token::parse(text) {
            Some(after) => after,
            None => {
                errors.insert("after".into(), json!("must be a non-negative integer"));
                0
            }
        },
    };
    let limit = match request.query_param("limit").map(parse_limit) {
        None => engine::DEFAULT_PULL_LIMIT,
        Some(Ok(limit)) => limit,
        Some(Err(message)) => {
            errors.insert("limit".into(), json!(message));
            0
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    Ok((after, limit))
}

pub fn get_conflicts(
    ctx: &mut Ctx,
    request: &Request,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let claims = session::access_claims(&ctx.env, request, seen)?;
    let query = parse_query(request);
    let (mut sets, slot) =
        session::read_for_sync(ctx, &claims, seen, &query, |packet, (after, limit)| {
            conflicts::push_page(packet, &claims.user_id, *after, *limit)
        })?;
    let (after, limit) = query?;
    let (entries, has_more) = conflicts::read_page(&mut sets, slot, limit)?;
    let next_after = entries.last().map_or(after, |entry| entry.seq);
    Ok(ok(
        200,
        &wire::ConflictsAnswer {
            conflicts: entries,
            has_more,
            next_after,
        },
    ))
}
