//! `POST /sync/bulk` (contract section 6): every entity's push in one
//! transaction, then one page of the changes since the cursor that this
//! request did not itself write as given. Parse, call the engine, answer.

use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::ctx::{Ctx, Seen};
use crate::engine::wire::EntityResult;
use crate::engine::{self, validate, wire, PageAsk, SyncAsk, Synced};
use crate::error::ApiError;
use crate::http::{Request, Response};
use crate::route::Route;
use crate::routes::body;
use crate::routes::records::{parse_limit, render, sync_route};
use crate::store::clock;
use crate::store::records::Cursor;
use crate::sync::Entity;

pub fn post_bulk(ctx: &mut Ctx, request: &Request, seen: &mut Seen) -> Result<Response, ApiError> {
    let empty = EntityResult::default();
    sync_route(
        ctx,
        request,
        Route::Bulk,
        parse_body,
        &|synced: &Synced| {
            let sections = Entity::ALL
                .iter()
                .map(|entity| {
                    let found = synced.results.iter().find(|(e, _)| e == entity);
                    (*entity, found.map_or(&empty, |(_, result)| result))
                })
                .collect();
            render(&wire::BulkAnswer {
                results: sections,
                page: &synced.page,
                previous_sync_token: wire::Token(synced.previous),
                sync_token: wire::Token(synced.position),
                has_more: synced.has_more,
                sync_timestamp: wire::Time(synced.sync_timestamp),
                oldest_sync_token: synced.oldest_sync_token.map(wire::Token),
                digests: synced.digests,
            })
        },
        seen,
    )
}

pub fn parse_body(request: &Request, config: &Config, now: i64) -> Result<SyncAsk, ApiError> {
    let body = body::json_object(request)?.unwrap_or_default();
    let mut errors = Map::new();
    let mut lists: Vec<(Entity, Vec<Value>)> = Vec::new();
    let mut token = None;
    let mut since = None;
    let mut limit = engine::MAX_PULL_LIMIT;
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
            "sync_token" => match value.as_str().and_then(wire::Token::parse) {
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
            "limit" => match value
                .as_number()
                .and_then(validate::whole_number)
                .map(|n| parse_limit(&n.to_string()))
            {
                Some(Ok(value)) => limit = value,
                _ => {
                    errors.insert(
                        key,
                        json!(format!(
                            "must be an integer from 1 to {}",
                            engine::MAX_PULL_LIMIT
                        )),
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
        .map(|(entity, list)| validate::validate(entity, list, config, now))
        .collect();
    Ok(SyncAsk {
        batches,
        page: Some(PageAsk { cursor, limit }),
    })
}
