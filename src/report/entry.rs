//! One request's log line, read back: from `LOG_FILE` (a JSON line), or
//! from an Apache error log, which holds the binary's stderr lines as they
//! are (Apache 2.4 on Debian 12) or inside Apache's own prefix and suffix
//! (`[...] AH01215: {...}: /path/healthsync.cgi` under mod_cgid, `[...]
//! mod_fcgid: stderr: {...}` under mod_fcgid), depending on the version
//! and `ErrorLogFormat`. Pure.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::store::clock;

/// A request as its log line tells it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    /// Unix milliseconds of the line's `ts`.
    pub at: i64,
    pub request_id: String,
    /// The route's name (`POST /meals/sync`); `None` for a request that
    /// matched no route (404, 405, a defect).
    pub route: Option<String>,
    pub status: u16,
    pub total_ms: f64,
    pub db_ms: Option<f64>,
    pub user_id: Option<String>,
    pub device_id: Option<String>,
    /// The hidden cause of a 500/503.
    pub cause: Option<String>,
    pub sync: Option<SyncCounts>,
    pub auth: Option<Auth>,
    /// Why the line could not go to `LOG_FILE` (a line of stderr).
    pub log_file_error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SyncCounts {
    pub stored: u64,
    pub pulled: u64,
    /// Entity (bulk key) -> resolution -> count.
    pub conflicts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Error code -> refused records.
    pub errors: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Auth {
    pub kind: String,
    pub result: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a line of a log is.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    Request(Box<Entry>),
    /// A line about the process (`event`), or a line not written by the
    /// binary (Apache's own, in an error log).
    Other,
    /// A line that looks like the binary's but does not parse: counted, so
    /// a report says how much it could not read.
    Unreadable,
}

#[derive(Deserialize)]
struct Raw {
    ts: Option<String>,
    #[serde(default)]
    request_id: String,
    route: Option<String>,
    status: Option<u16>,
    ms: Option<f64>,
    db_ms: Option<f64>,
    user_id: Option<String>,
    device_id: Option<String>,
    error: Option<String>,
    sync: Option<SyncCounts>,
    auth: Option<Auth>,
    log_file_error: Option<String>,
    event: Option<String>,
}

const MARK: &str = "{\"ts\":";

pub fn parse_line(line: &str) -> Parsed {
    let Some(start) = line.find(MARK) else {
        return match line.trim().is_empty() || !line.trim_start().starts_with('{') {
            true => Parsed::Other,
            false => Parsed::Unreadable,
        };
    };
    // The JSON object ends where Apache's suffix begins: read one value.
    let mut values = serde_json::Deserializer::from_str(&line[start..]).into_iter::<Raw>();
    let raw = match values.next() {
        Some(Ok(raw)) => raw,
        _ => return Parsed::Unreadable,
    };
    if raw.event.is_some() && raw.status.is_none() {
        return Parsed::Other;
    }
    let (Some(ts), Some(status), Some(ms)) = (raw.ts, raw.status, raw.ms) else {
        return Parsed::Unreadable;
    };
    let Some(at) = clock::parse_rfc3339(&ts) else {
        return Parsed::Unreadable;
    };
    Parsed::Request(Box::new(Entry {
        at,
        request_id: raw.request_id,
        route: raw.route,
        status,
        total_ms: ms,
        db_ms: raw.db_ms,
        user_id: raw.user_id,
        device_id: raw.device_id,
        cause: raw.error,
        sync: raw.sync,
        auth: raw.auth,
        log_file_error: raw.log_file_error,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: &Parsed) {
        assert_eq!(&parse_line(line), expected, "{line}");
    }

    fn request(at: i64, route: &str, status: u16, ms: f64) -> Parsed {
        Parsed::Request(Box::new(Entry {
            at,
            request_id: "r".into(),
            route: Some(route.into()),
            status,
            total_ms: ms,
            ..Entry::default()
        }))
    }

    #[test]
    fn lines_of_the_log_file_and_of_apache_error_logs_are_read_alike() {
        let at = clock::parse_rfc3339("2026-11-30T18:00:00Z").unwrap_or_default();
        let json = r#"{"ts":"2026-11-30T18:00:00Z","level":"info","request_id":"r","method":"GET","route":"GET /health","status":200,"ms":1.5,"user_id":null,"error":null}"#;
        check(json, &request(at, "GET /health", 200, 1.5));
        check(
            &format!("[Mon Nov 30 18:00:00.000000 2026] [cgid:error] [pid 7:tid 8] [client 127.0.0.1:5000] AH01215: {json}: /srv/htdocs/healthsync.cgi"),
            &request(at, "GET /health", 200, 1.5),
        );
        check(
            &format!("[Mon Nov 30 18:00:00.000000 2026] [fcgid:warn] [pid 7:tid 8] [client 127.0.0.1:5000] mod_fcgid: stderr: {json}"),
            &request(at, "GET /health", 200, 1.5),
        );
        check(
            r#"{"ts":"2026-11-30T18:00:00.123456789Z","request_id":"r","route":"GET /health","status":200,"ms":1.5}"#,
            &request(at + 123, "GET /health", 200, 1.5),
        );
        check(
            r#"{"ts":"2026-11-30T18:00:00Z","level":"warn","event":"fastcgi connection: reset"}"#,
            &Parsed::Other,
        );
        check(
            "[Mon Nov 30 18:00:00 2026] [mpm_event:notice] AH00489: Apache configured",
            &Parsed::Other,
        );
        check("", &Parsed::Other);
        check(
            r#"{"ts":"2026-11-30T18:00:00Z","status":200"#,
            &Parsed::Unreadable,
        );
        check(
            r#"{"ts":"yesterday","status":200,"ms":1}"#,
            &Parsed::Unreadable,
        );
        check(r#"{"level":"info"}"#, &Parsed::Unreadable);
    }

    /// What `log.rs` writes is what this reads back.
    #[test]
    fn a_line_the_binary_writes_reads_back_whole() {
        use crate::config::LogLevel;
        use crate::ctx::{AuthFacts, AuthFailure, AuthKind, Seen, SyncFacts};
        use crate::reply::Timing;
        use crate::route::Route;
        use std::time::Duration;

        let mut facts = SyncFacts {
            stored: 3,
            pulled: 7,
            ..SyncFacts::default()
        };
        facts.add_conflict("medications", "merged");
        facts.add_error("QUOTA_EXCEEDED");
        let seen = Seen {
            user_id: Some("u-9".into()),
            device_id: Some("tablet".into()),
            sync: Some(facts),
            auth: Some(AuthFacts {
                kind: AuthKind::Login,
                failure: Some(AuthFailure::GuessingLimit),
            }),
            ..Seen::default()
        };
        let line = crate::log::Line {
            level: LogLevel::Error,
            request_id: "abc",
            method: "POST",
            route: Some(Route::Bulk),
            status: 503,
            timing: Timing {
                total: Duration::from_micros(12_345),
                db: Some(Duration::from_micros(10_001)),
            },
            seen: &seen,
            cause: Some("connect: refused"),
        };
        let text =
            crate::log::format_line(&line, "2026-11-30T18:00:00.5Z".into(), Some("disk full"));
        let Parsed::Request(entry) = parse_line(text.trim_end()) else {
            panic!("not read back: {text}");
        };
        let mut conflicts = BTreeMap::new();
        conflicts.insert(
            "medications".to_owned(),
            BTreeMap::from([("merged".to_owned(), 1)]),
        );
        assert_eq!(
            *entry,
            Entry {
                at: clock::parse_rfc3339("2026-11-30T18:00:00.5Z").unwrap_or_default(),
                request_id: "abc".into(),
                route: Some("POST /sync/bulk".into()),
                status: 503,
                total_ms: 12.345,
                db_ms: Some(10.001),
                user_id: Some("u-9".into()),
                device_id: Some("tablet".into()),
                cause: Some("connect: refused".into()),
                sync: Some(SyncCounts {
                    stored: 3,
                    pulled: 7,
                    conflicts,
                    errors: BTreeMap::from([("QUOTA_EXCEEDED".to_owned(), 1)]),
                }),
                auth: Some(Auth {
                    kind: "login".into(),
                    result: "locked".into(),
                    reason: Some("guessing_limit".into()),
                }),
                log_file_error: Some("disk full".into()),
            }
        );
    }

    #[test]
    fn sync_counts_and_auth_results_are_read() {
        let line = r#"{"ts":"2026-11-30T18:00:00Z","request_id":"r","route":"POST /meals/sync","status":200,"ms":3,"db_ms":1.25,"user_id":"u","device_id":"d","error":null,"sync":{"stored":2,"pulled":0,"conflicts":{"meals":{"kept_both":1}},"errors":{"CLOCK_SKEW":1}},"auth":{"kind":"login","result":"failed","reason":"wrong_password"}}"#;
        let Parsed::Request(entry) = parse_line(line) else {
            panic!("not a request: {line}");
        };
        assert_eq!(entry.db_ms, Some(1.25));
        assert_eq!(entry.device_id.as_deref(), Some("d"));
        let sync = entry.sync.unwrap_or_default();
        assert_eq!(sync.stored, 2);
        assert_eq!(sync.conflicts["meals"]["kept_both"], 1);
        assert_eq!(sync.errors["CLOCK_SKEW"], 1);
        let auth = entry.auth.unwrap_or_default();
        assert_eq!(
            (
                auth.kind.as_str(),
                auth.result.as_str(),
                auth.reason.as_deref()
            ),
            ("login", "failed", Some("wrong_password"))
        );
    }
}
