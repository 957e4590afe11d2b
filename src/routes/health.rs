//! `GET /health`: the database answers and the schema is the one this
//! binary needs; the configured limits, so devices size their batches.

use serde_json::json;

use crate::ctx::{Ctx, Seen};
use crate::error::ApiError;
use crate::http::Response;
use crate::reply::ok;
use crate::store::{health, migrate};

pub fn get_health(ctx: &mut Ctx, _seen: &mut Seen) -> Result<Response, ApiError> {
    let (db, env) = ctx.db()?;
    let schema_version = health::schema_version(db)?;
    let needed = migrate::latest_version();
    if schema_version != needed {
        return Err(ApiError::Unavailable(format!(
            "schema is at version {schema_version}, this binary needs {needed}: run `healthsync migrate`"
        )));
    }
    Ok(ok(
        200,
        &json!({
            "status": "ok",
            "database": "ok",
            "schema_version": schema_version,
            "version": crate::VERSION,
            "limits": {
                "max_body_bytes": env.config.max_body_bytes,
                "max_batch": env.config.max_batch,
                "max_record_bytes": env.config.max_record_bytes,
            },
        }),
    ))
}
