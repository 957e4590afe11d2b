//! `POST /sync/bulk` (contract section 6): every entity's push in one
//! transaction, then one page of the changes since the cursor that this
//! request did not itself write as given.

use serde_json::{json, Map, Value};

use crate::app::{ok_out, Ctx, Out};
use crate::config::Config;
use crate::error::ApiError;
use crate::http::{Request, Response};
use crate::routes::body;
use crate::routes::push::{self, Applied, Batch};
use crate::routes::records::{
    self as pull, parse_limit, parse_sync_token, sync_token, MAX_PULL_LIMIT,
};
use crate::routes::session;
use crate::store::records::{self, Cursor, Pulled};
use crate::store::users::{Lock, User};
use crate::store::{clock, db};
use crate::sync::Entity;

struct BulkBody {
    batches: Vec<Batch>,
    cursor: Option<Cursor>,
    limit: usize,
}

fn parse_body(request: &Request, config: &Config, now: i64) -> Result<BulkBody, ApiError> {
    let body = body::json_object(request)?.unwrap_or_default();
    let mut errors = Map::new();
    let mut lists: Vec<(Entity, Vec<Value>)> = Vec::new();
    let mut token = None;
    let mut since = None;
    let mut limit = MAX_PULL_LIMIT;
    for (key, value) in body {
        if let Some(entity) = Entity::from_bulk_key(&key) {
            match value {
                Value::Array(list) => lists.push((entity, list)),
                Value::Null => {}
                _ => {
                    errors.insert(key, json!("must be an array of records"));
                }
            }
            continue;
        }
        match key.as_str() {
            "sync_token" => match value.as_str().and_then(parse_sync_token) {
                Some(version) => token = Some(version),
                None if value.is_null() => {}
                None => {
                    errors.insert(key, json!("is not a sync token from this server"));
                }
            },
            "last_sync_at" => match value.as_str().and_then(clock::parse_rfc3339) {
                Some(millis) => since = Some(millis),
                None if value.is_null() => {}
                None => {
                    errors.insert(key, json!("must be RFC 3339 with an offset"));
                }
            },
            "limit" => match value.as_u64().map(|n| parse_limit(&n.to_string())) {
                Some(Ok(value)) => limit = value,
                _ => {
                    errors.insert(
                        key,
                        json!(format!("must be an integer from 1 to {MAX_PULL_LIMIT}")),
                    );
                }
            },
            // A typo must not silently drop a list of records.
            _ => {
                errors.insert(key, json!("is not a bulk key"));
            }
        }
    }
    let total: usize = lists.iter().map(|(_, list)| list.len()).sum();
    if total > config.max_batch {
        return Err(ApiError::PayloadTooLarge(format!(
            "{total} records in one request; the limit is {}",
            config.max_batch
        )));
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    let cursor = match (token, since) {
        (Some(version), _) => Some(Cursor::AfterVersion(version)),
        (None, Some(millis)) => Some(Cursor::ReceivedAfter(millis)),
        (None, None) => None,
    };
    // Entities are applied in the contract's order, whatever the body's.
    lists.sort_by_key(|(entity, _)| Entity::ALL.iter().position(|e| e == entity));
    let batches = lists
        .into_iter()
        .map(|(entity, list)| push::validate(entity, list, config, now))
        .collect();
    Ok(BulkBody {
        batches,
        cursor,
        limit,
    })
}

pub fn post_bulk(ctx: &mut Ctx, request: &Request) -> Result<Response, ApiError> {
    let now = ctx.env.now_millis();
    let parsed = parse_body(request, ctx.env.config, now);
    let device = pull::device_id(request);
    let claims = session::access_claims(&ctx.env, request)?;
    let writes = matches!(&parsed, Ok(body) if body.batches.iter().any(|b| b.len() > 0));
    let (conn, env) = ctx.conn()?;
    let outcome = db::transaction(conn, |tx| {
        // Writers lock the user row; a pure pull shares it, which still
        // waits for the user's writers so `sync_timestamp` is exact.
        let lock = if writes { Lock::Update } else { Lock::Share };
        let user = session::load_user(tx, &claims, lock)?;
        session::limit_user(env, tx, &user.id)?;
        let body = parsed.as_ref().map_err(Clone::clone)?;
        let device = device.clone()?;
        if !user.sync_enabled {
            return Err(ApiError::SyncDisabled);
        }
        pull::check_cursor(&user, body.cursor)?;

        let received_at = pull::receive_time(&user);
        let mut counter = user.change_counter;
        let mut results: Vec<(Entity, Applied)> = Vec::new();
        for batch in &body.batches {
            let applied = push::apply(tx, &user.id, batch, &mut counter, received_at)?;
            results.push((batch.entity, applied));
        }
        let wrote = counter != user.change_counter;
        if wrote {
            records::advance_user(tx, &user.id, counter, received_at, env.now_millis())?;
        }

        // Every version above the position before this request's writes
        // is one of them: the page stops there.
        let cursor = body.cursor.unwrap_or(Cursor::AfterVersion(0));
        let (page, has_more) = match cursor {
            Cursor::AfterVersion(after) if after >= user.change_counter => (Vec::new(), false),
            _ => records::changes(
                tx,
                &user.id,
                &Entity::ALL,
                cursor,
                user.change_counter,
                body.limit,
            )?,
        };
        // Complete: everything up to the user's position has been sent or
        // was written by this request. Otherwise: up to the last sent.
        let position = match (has_more, page.last()) {
            (true, Some(last)) => last.version,
            _ => counter,
        };
        // Later writes get a receive time strictly after this one.
        let sync_timestamp = if wrote {
            received_at
        } else {
            let just_before_now = clock::to_millis(time::OffsetDateTime::now_utc()) - 1;
            user.last_write_at
                .map_or(just_before_now, |last| last.max(just_before_now))
        };
        // A writer records the sync in its own transaction; a pure pull
        // does it after commit, so its shared lock is never upgraded (two
        // pulls upgrading at once would deadlock).
        if wrote {
            pull::record_sync(tx, env, &user, device, position, wrote)?;
        }

        Ok(Outcome {
            results,
            page,
            has_more,
            previous: user.change_counter,
            position,
            sync_timestamp,
            pull_only: (!wrote).then(|| (user, device.map(str::to_owned))),
        })
    })?;
    if let Some((user, device)) = &outcome.pull_only {
        pull::record_sync(conn, env, user, device.as_deref(), outcome.position, false)?;
    }

    let sections: Vec<(&str, Out)> = Entity::ALL
        .iter()
        .map(|entity| {
            let applied = outcome
                .results
                .iter()
                .find(|(e, _)| e == entity)
                .map(|(_, a)| a);
            let mut fields = applied.map_or_else(|| Applied::default().to_json(), Applied::to_json);
            let conflict_results = match fields.remove("server_updates") {
                Some(Value::Array(values)) => values,
                _ => Vec::new(),
            };
            let mut updates: Vec<Out> = conflict_results.into_iter().map(Out::Json).collect();
            updates.extend(
                outcome
                    .page
                    .iter()
                    .filter(|row| row.entity == *entity)
                    .map(Out::Record),
            );
            let mut section: Vec<(&str, Out)> = Vec::new();
            for key in [
                "synced",
                "conflicts",
                "conflict_details",
                "errors",
                "applied",
            ] {
                section.push((key, Out::Json(fields.remove(key).unwrap_or(Value::Null))));
            }
            section.push(("server_updates", Out::List(updates)));
            (entity.bulk_key(), Out::Object(section))
        })
        .collect();
    let mut data = sections;
    data.push((
        "previous_sync_token",
        Out::Json(sync_token(outcome.previous)),
    ));
    data.push(("sync_token", Out::Json(sync_token(outcome.position))));
    data.push(("has_more", Out::Json(json!(outcome.has_more))));
    data.push((
        "sync_timestamp",
        Out::Json(json!(clock::to_rfc3339(outcome.sync_timestamp))),
    ));
    Ok(ok_out(200, Out::Object(data)))
}

/// What the bulk's transaction produced, shaped after it commits.
struct Outcome {
    results: Vec<(Entity, Applied)>,
    page: Vec<Pulled>,
    has_more: bool,
    previous: u64,
    position: u64,
    sync_timestamp: i64,
    /// For a bulk that wrote nothing: whose sync to record after commit.
    pull_only: Option<(User, Option<String>)>,
}
