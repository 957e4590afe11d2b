//! What a route function is handed besides the request: the configuration,
//! the clock at the start of the request, the mode, and the connection
//! (opened on first use); and `Seen`, what the request established on its
//! way (the user, the rate-limit state), returned to the transport for the
//! response headers and the log line. Below both `app` and `routes`.

use time::OffsetDateTime;

use crate::config::Config;
use crate::error::{ApiError, RateLimitState};
use crate::store::clock;
use crate::store::db::{Db, DbSlot};

/// The request's facts that stay readable while the connection is
/// borrowed.
pub struct Env<'a> {
    pub config: &'a Config,
    /// The server clock at the start of the request.
    pub now: OffsetDateTime,
    /// "cgi" or "fastcgi".
    pub mode: &'static str,
}

impl Env<'_> {
    pub fn now_millis(&self) -> i64 {
        clock::to_millis(self.now)
    }

    pub fn now_secs(&self) -> i64 {
        self.now.unix_timestamp()
    }
}

pub struct Ctx<'a> {
    pub env: Env<'a>,
    db: &'a mut DbSlot,
}

impl<'a> Ctx<'a> {
    pub fn new(config: &'a Config, db: &'a mut DbSlot, mode: &'static str) -> Ctx<'a> {
        db.start_request();
        Ctx {
            env: Env {
                config,
                now: OffsetDateTime::now_utc(),
                mode,
            },
            db,
        }
    }

    /// The database connection (opened on first use) beside the request's
    /// facts.
    pub fn db(&mut self) -> Result<(&mut Db, &Env<'a>), ApiError> {
        let db = self.db.get(&self.env.config.db)?;
        Ok((db, &self.env))
    }
}

/// What a request established on its way, whatever its outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The authenticated (or registering) user, for the log line.
    pub user_id: Option<String>,
    /// The tightest rate limit counted; becomes the `RateLimit-*` headers.
    pub rate_limit: Option<RateLimitState>,
}
