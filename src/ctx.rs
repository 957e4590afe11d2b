//! What a route function is handed besides the request: the configuration,
//! the clock at the start of the request, the mode, and the connection
//! (opened on first use); and `Seen`, what the request established on its
//! way (the user, the rate-limit state, the device, a sync's counts, an
//! authentication attempt), returned to the transport for the response
//! headers and the log line. Below both `app` and `routes`.

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
    /// The request's `X-Device-Id`, once checked (push, pull, bulk).
    pub device_id: Option<String>,
    /// What a push, pull or bulk did, from the engine's answer.
    pub sync: Option<SyncFacts>,
    /// An authentication attempt: its kind, and why it failed when the
    /// route knows more than the status says.
    pub auth: Option<AuthFacts>,
}

/// The counts of a sync's answer, for the log line. Never a record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncFacts {
    /// Records stored or confirmed without a conflict (`synced`, summed
    /// over the entities).
    pub stored: u64,
    /// Records sent back in a pull's or a bulk's page.
    pub pulled: u64,
    /// Conflicts by entity (bulk key) and resolution.
    pub conflicts: Vec<(&'static str, &'static str, u64)>,
    /// Refused records by error code.
    pub errors: Vec<(&'static str, u64)>,
}

impl SyncFacts {
    pub fn add_conflict(&mut self, entity: &'static str, resolution: &'static str) {
        match self
            .conflicts
            .iter_mut()
            .find(|(e, r, _)| *e == entity && *r == resolution)
        {
            Some((_, _, count)) => *count += 1,
            None => self.conflicts.push((entity, resolution, 1)),
        }
    }

    pub fn add_error(&mut self, code: &'static str) {
        match self.errors.iter_mut().find(|(c, _)| *c == code) {
            Some((_, count)) => *count += 1,
            None => self.errors.push((code, 1)),
        }
    }
}

/// The kinds of authentication attempt the log tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    Register,
    Login,
    Refresh,
    Logout,
    PasswordChange,
    AccountErase,
}

impl AuthKind {
    pub fn name(self) -> &'static str {
        match self {
            AuthKind::Register => "register",
            AuthKind::Login => "login",
            AuthKind::Refresh => "refresh",
            AuthKind::Logout => "logout",
            AuthKind::PasswordChange => "password_change",
            AuthKind::AccountErase => "account_erase",
        }
    }
}

/// Why an attempt failed, where the status alone does not say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// A login for an email no account has.
    UnknownAccount,
    /// A wrong password for an existing account.
    WrongPassword,
    /// The account's guessing limit refused the attempt (429).
    GuessingLimit,
    /// A spent refresh token came back: its login was revoked.
    TokenReuse,
}

impl AuthFailure {
    pub fn name(self) -> &'static str {
        match self {
            AuthFailure::UnknownAccount => "unknown_account",
            AuthFailure::WrongPassword => "wrong_password",
            AuthFailure::GuessingLimit => "guessing_limit",
            AuthFailure::TokenReuse => "token_reuse",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthFacts {
    pub kind: AuthKind,
    pub failure: Option<AuthFailure>,
}

impl AuthFacts {
    pub fn attempt(kind: AuthKind) -> Option<AuthFacts> {
        Some(AuthFacts {
            kind,
            failure: None,
        })
    }
}

impl Seen {
    /// Notes why the authentication attempt under way failed.
    pub fn auth_failed(&mut self, failure: AuthFailure) {
        if let Some(auth) = &mut self.auth {
            auth.failure = Some(failure);
        }
    }
}
