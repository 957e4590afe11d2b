//! One JSON line per request: request id, method, route name, status, the
//! `Server-Timing` figures (`ms` total, `db_ms`), the user (an opaque id),
//! the device id, a sync's counts, an authentication attempt and its
//! result, and the hidden cause of a 500/503. Never bodies, tokens,
//! passwords, emails or health data; the raw path is not logged either (a
//! client controls it), only the route's name.
//!
//! The line goes to stderr (Apache's error log), or, with `LOG_FILE`, to
//! that file: one `write` of the whole line on a descriptor opened with
//! `O_APPEND`, so lines of concurrent processes never mix, and a writer
//! that finds the file too big renames it away first (rotation by size).
//! Rotation is safe from many processes: a rename is atomic; each rotated
//! file gets a name of its own (`LOG_FILE.<UTC time>-<pid>`), so two
//! processes rotating at once never rename one onto the other, and at
//! worst rotate a fresh, small file early; a process still holding the old
//! file writes into the rotated one. The oldest rotated files beyond
//! `LOG_FILE_KEEP` are removed. A FastCGI worker keeps the file open
//! between requests (`LogSink`, held by `main`), for a second at most, so
//! its lines follow another process's rotation within a second. A line
//! that cannot be written to the file goes to stderr with the reason; a
//! request never waits on or fails for its log line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::{Config, LogFile, LogLevel};
use crate::ctx::{AuthFacts, Seen, SyncFacts};
use crate::reply::Timing;
use crate::route::Route;

pub struct Line<'a> {
    pub level: LogLevel,
    pub request_id: &'a str,
    pub method: &'a str,
    pub route: Option<Route>,
    pub status: u16,
    /// The figures of the response's `Server-Timing` header.
    pub timing: Timing,
    pub seen: &'a Seen,
    pub cause: Option<&'a str>,
}

/// Writes a request's line where the configuration says: with `LOG_FILE`,
/// every request to the file (its level does not matter: `healthsync
/// report` counts them all) and errors to stderr as well; without it, to
/// stderr when the level passes `LOG_LEVEL`. `config` is `None` when the
/// configuration itself could not be read.
pub fn request(line: Line, config: Option<&Config>, sink: &mut LogSink) {
    let log_level = config.map_or(LogLevel::Info, |c| c.log_level);
    let to_stderr = line.level <= log_level;
    let Some(log_file) = config.and_then(|c| c.log_file.as_ref()) else {
        if to_stderr {
            write_stderr(&format_line(&line, now_rfc3339(), None));
        }
        return;
    };
    let text = format_line(&line, now_rfc3339(), None);
    match append(sink, log_file, text.as_bytes()) {
        Ok(()) => {
            if to_stderr && line.level == LogLevel::Error {
                write_stderr(&text);
            }
        }
        Err(error) => {
            let problem = format!("{}: {error}", log_file.path.display());
            write_stderr(&format_line(&line, now_rfc3339(), Some(&problem)));
        }
    }
}

/// A line about the process rather than a request (a broken FastCGI
/// connection, an accept that failed).
pub fn event(level: LogLevel, message: &str) {
    let record = serde_json::json!({
        "ts": now_rfc3339(),
        "level": level_name(level),
        "event": message,
    });
    write_stderr(&format!("{record}\n"));
}

pub fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    }
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// The line as text, newline included. `log_file_error` says why the line
/// could not go to `LOG_FILE` (then it goes to stderr).
pub fn format_line(line: &Line, ts: String, log_file_error: Option<&str>) -> String {
    let record = Record {
        ts,
        level: level_name(line.level),
        request_id: line.request_id,
        method: line.method,
        route: line.route.map(Route::name),
        status: line.status,
        ms: millis(line.timing.total),
        db_ms: line.timing.db.map(millis),
        user_id: line.seen.user_id.as_deref(),
        device_id: line.seen.device_id.as_deref(),
        error: line.cause,
        sync: line.seen.sync.as_ref().map(SyncCounts),
        auth: line.seen.auth.map(|auth| AuthResult {
            auth,
            status: line.status,
        }),
        log_file_error,
    };
    let mut text = serde_json::to_string(&record).unwrap_or_else(|error| {
        format!("{{\"level\":\"error\",\"event\":\"log line not serialized: {error}\"}}")
    });
    text.push('\n');
    text
}

#[derive(Serialize)]
struct Record<'a> {
    ts: String,
    level: &'static str,
    request_id: &'a str,
    method: &'a str,
    route: Option<String>,
    status: u16,
    ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    db_ms: Option<f64>,
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<&'a str>,
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync: Option<SyncCounts<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<AuthResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_file_error: Option<&'a str>,
}

/// `{"stored": n, "pulled": n, "conflicts": {entity: {resolution: n}},
/// "errors": {code: n}}`.
struct SyncCounts<'a>(&'a SyncFacts);

impl Serialize for SyncCounts<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Conflicts<'a>(&'a [(&'static str, &'static str, u64)]);
        impl Serialize for Conflicts<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut entities: Vec<&str> = Vec::new();
                for (entity, _, _) in self.0 {
                    if !entities.contains(entity) {
                        entities.push(entity);
                    }
                }
                let mut map = serializer.serialize_map(None)?;
                for entity in entities {
                    let by_resolution: Vec<(&str, u64)> = self
                        .0
                        .iter()
                        .filter(|(e, _, _)| *e == entity)
                        .map(|(_, resolution, count)| (*resolution, *count))
                        .collect();
                    map.serialize_entry(entity, &Pairs(&by_resolution))?;
                }
                map.end()
            }
        }
        struct Pairs<'a>(&'a [(&'a str, u64)]);
        impl Serialize for Pairs<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.iter().map(|(key, count)| (*key, *count)))
            }
        }
        let facts = self.0;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("stored", &facts.stored)?;
        map.serialize_entry("pulled", &facts.pulled)?;
        map.serialize_entry("conflicts", &Conflicts(&facts.conflicts))?;
        let errors: Vec<(&str, u64)> = facts.errors.iter().map(|(c, n)| (*c, *n)).collect();
        map.serialize_entry("errors", &Pairs(&errors))?;
        map.end()
    }
}

/// `{"kind": ..., "result": ..., "reason": ...}`: the result from the
/// status, told apart further by what the route noted.
struct AuthResult {
    auth: AuthFacts,
    status: u16,
}

/// An authentication attempt's result: `ok`, `failed` (a wrong password,
/// an unknown account, a refused token), `locked` (the account's guessing
/// limit), `throttled` (the address's rate limit), `revoked` (a refresh
/// token used again: its login is revoked), `invalid` (a malformed
/// request, an email taken), `error` (5xx).
pub fn auth_result(auth: AuthFacts, status: u16) -> &'static str {
    use crate::ctx::AuthFailure;
    match (status, auth.failure) {
        (200..=299, _) => "ok",
        (_, Some(AuthFailure::TokenReuse)) => "revoked",
        (_, Some(AuthFailure::GuessingLimit)) => "locked",
        (_, Some(AuthFailure::WrongPassword | AuthFailure::UnknownAccount)) => "failed",
        (401, None) => "failed",
        (429, None) => "throttled",
        (500.., None) => "error",
        _ => "invalid",
    }
}

impl Serialize for AuthResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kind", self.auth.kind.name())?;
        map.serialize_entry("result", auth_result(self.auth, self.status))?;
        if let Some(failure) = self.auth.failure {
            map.serialize_entry("reason", failure.name())?;
        }
        map.end()
    }
}

fn write_stderr(text: &str) {
    // One write per line, so lines from concurrent processes do not mix.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// The name a rotated file gets: `path.<UTC time to the nanosecond>-<pid>`,
/// which sorts by time and is this process's alone.
fn rotated_path(path: &Path, now: OffsetDateTime, pid: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(
        ".{:04}{:02}{:02}T{:02}{:02}{:02}.{:09}Z-{pid}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond()
    ));
    PathBuf::from(name)
}

/// Whether a file name's ending is a rotation's: `YYYYMMDDTHHMMSS.nnnnnnnnnZ-<pid>`.
fn is_rotation_suffix(suffix: &str) -> bool {
    let bytes = suffix.as_bytes();
    let shape = |i: usize, b: u8| match i {
        8 => b == b'T',
        15 => b == b'.',
        25 => b == b'Z',
        26 => b == b'-',
        _ => b.is_ascii_digit(),
    };
    bytes.len() > 27 && bytes.iter().enumerate().all(|(i, b)| shape(i, *b))
}

/// The rotated files of a log, oldest first.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            file_name
                .strip_prefix(&prefix)
                .is_some_and(is_rotation_suffix)
        })
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
}

fn open_for_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Whether this process can append to the log (creating it if need be),
/// for `healthsync check`; writes nothing.
pub fn check_appendable(path: &Path) -> std::io::Result<()> {
    open_for_append(path).map(drop)
}

/// How long a process writes on one descriptor of the log before it
/// opens the file by its name again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// The log file a process has open: one per process, kept by `main`
/// across the requests of a FastCGI worker (a CGI process has one
/// request).
#[derive(Default)]
pub struct LogSink {
    open: Option<Kept>,
}

struct Kept {
    path: PathBuf,
    file: File,
    opened: Instant,
}

/// Appends one whole line with one `write` on an `O_APPEND` descriptor,
/// rotating the file first if the line would carry it past its size.
pub fn append(sink: &mut LogSink, log_file: &LogFile, line: &[u8]) -> std::io::Result<()> {
    let appended = append_kept(sink, log_file, line);
    if appended.is_err() {
        // The next line starts afresh from the name.
        sink.open = None;
    }
    appended
}

fn append_kept(sink: &mut LogSink, log_file: &LogFile, line: &[u8]) -> std::io::Result<()> {
    let path = &log_file.path;
    let kept = match sink.open.take() {
        Some(kept) if kept.path == *path && kept.opened.elapsed() < REOPEN_AFTER => kept,
        _ => Kept {
            path: path.clone(),
            file: open_for_append(path)?,
            opened: Instant::now(),
        },
    };
    let kept = sink.open.insert(kept);
    let size = kept.file.metadata()?.len();
    if size > 0 && size.saturating_add(line.len() as u64) > log_file.max_bytes {
        rotate(log_file, &kept.file)?;
        kept.file = open_for_append(path)?;
        kept.opened = Instant::now();
    }
    let written = kept.file.write(line)?;
    if written != line.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("wrote {written} of {} bytes of a line", line.len()),
        ));
    }
    Ok(())
}

/// Renames `path` to a rotated name of its own, unless another process
/// rotated it since `file` was opened (the name then holds a new file:
/// write into that), then removes the oldest rotated files beyond `keep`.
fn rotate(log_file: &LogFile, file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let path = &log_file.path;
    let ours = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(named) if (named.dev(), named.ino()) == (ours.dev(), ours.ino()) => {}
        Ok(_) => return Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    }
    let target = rotated_path(path, OffsetDateTime::now_utc(), std::process::id());
    if target.exists() {
        // This process rotated within the same nanosecond: the next line
        // rotates instead.
        return Ok(());
    }
    match std::fs::rename(path, &target) {
        Ok(()) => {}
        // Another process renamed it a moment earlier: as good.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    }
    let rotated = rotated_files(path);
    let excess = rotated.len().saturating_sub(log_file.keep as usize);
    for old in &rotated[..excess] {
        match std::fs::remove_file(old) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::{AuthFailure, AuthKind};
    use crate::sync::Entity;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hs-log-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    fn line_of<'a>(seen: &'a Seen, route: Option<Route>, status: u16) -> Line<'a> {
        Line {
            level: LogLevel::Info,
            request_id: "r1",
            method: "POST",
            route,
            status,
            timing: Timing {
                total: Duration::from_micros(2500),
                db: Some(Duration::from_micros(1250)),
            },
            seen,
            cause: None,
        }
    }

    #[test]
    fn a_sync_line_carries_its_counts_timings_user_and_device() {
        let mut facts = SyncFacts {
            stored: 48,
            pulled: 3,
            ..SyncFacts::default()
        };
        facts.add_conflict("meals", "kept_both");
        facts.add_conflict("meals", "server_wins");
        facts.add_conflict("meals", "server_wins");
        facts.add_error("CLOCK_SKEW");
        let seen = Seen {
            user_id: Some("u-1".into()),
            device_id: Some("phone-1".into()),
            sync: Some(facts),
            ..Seen::default()
        };
        let text = format_line(
            &line_of(&seen, Some(Route::Push(Entity::Meals)), 200),
            "2026-11-30T18:00:00Z".into(),
            None,
        );
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(
            value,
            serde_json::json!({
                "ts": "2026-11-30T18:00:00Z", "level": "info", "request_id": "r1",
                "method": "POST", "route": "POST /meals/sync", "status": 200,
                "ms": 2.5, "db_ms": 1.25, "user_id": "u-1", "device_id": "phone-1",
                "error": null,
                "sync": {"stored": 48, "pulled": 3,
                         "conflicts": {"meals": {"kept_both": 1, "server_wins": 2}},
                         "errors": {"CLOCK_SKEW": 1}},
            })
        );
    }

    #[test]
    fn an_auth_result_comes_from_the_status_and_what_the_route_noted() {
        let check = |kind, failure, status, expected: &str| {
            let auth = AuthFacts { kind, failure };
            assert_eq!(
                auth_result(auth, status),
                expected,
                "{kind:?} {failure:?} {status}"
            );
        };
        check(AuthKind::Login, None, 200, "ok");
        check(AuthKind::Register, None, 201, "ok");
        check(
            AuthKind::Login,
            Some(AuthFailure::WrongPassword),
            401,
            "failed",
        );
        check(
            AuthKind::Login,
            Some(AuthFailure::UnknownAccount),
            401,
            "failed",
        );
        check(
            AuthKind::Login,
            Some(AuthFailure::GuessingLimit),
            429,
            "locked",
        );
        check(AuthKind::Login, None, 429, "throttled");
        check(AuthKind::Refresh, None, 401, "failed");
        check(
            AuthKind::Refresh,
            Some(AuthFailure::TokenReuse),
            401,
            "revoked",
        );
        check(
            AuthKind::PasswordChange,
            Some(AuthFailure::WrongPassword),
            400,
            "failed",
        );
        check(AuthKind::Register, None, 409, "invalid");
        check(AuthKind::Register, None, 400, "invalid");
        check(AuthKind::AccountErase, None, 503, "error");
    }

    #[test]
    fn a_full_file_is_rotated_and_the_oldest_dropped() {
        let dir = temp_dir("rotate");
        let log_file = LogFile {
            path: dir.join("requests.log"),
            max_bytes: 100,
            keep: 2,
        };
        let line = format!("{}\n", "x".repeat(39));
        // Odd lines from one process that keeps the file open, even ones
        // from a process each.
        let mut kept = LogSink::default();
        for n in 0..7 {
            let appended = match n % 2 {
                0 => append(&mut LogSink::default(), &log_file, line.as_bytes()),
                _ => append(&mut kept, &log_file, line.as_bytes()),
            };
            assert!(appended.is_ok());
        }
        let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).ok();
        // 2 lines fit in 100 bytes: 7 lines are 2 + 2 + 2 + 1, the first
        // two rotated out of the kept files.
        assert_eq!(size(&log_file.path), Some(40));
        let rotated = rotated_files(&log_file.path);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        assert!(rotated.iter().all(|path| size(path) == Some(80)));
        // Another file of the directory is never taken for a rotated one.
        assert!(std::fs::write(dir.join("requests.log.bak"), "x").is_ok());
        assert_eq!(rotated_files(&log_file.path), rotated);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_rotation_by_another_process_is_not_repeated() {
        let dir = temp_dir("rotated-elsewhere");
        let log_file = LogFile {
            path: dir.join("requests.log"),
            max_bytes: 10,
            keep: 3,
        };
        assert!(std::fs::write(&log_file.path, "old line 1\n").is_ok());
        let held = open_for_append(&log_file.path);
        assert!(held.is_ok());
        let Ok(held) = held else { return };
        // Another process rotated between this one's open and its check.
        let elsewhere = rotated_path(&log_file.path, OffsetDateTime::now_utc(), 1);
        assert!(std::fs::rename(&log_file.path, &elsewhere).is_ok());
        assert!(std::fs::write(&log_file.path, "new\n").is_ok());
        assert!(rotate(&log_file, &held).is_ok());
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(read(&log_file.path), "new\n");
        assert_eq!(rotated_files(&log_file.path), vec![elsewhere.clone()]);
        assert_eq!(read(&elsewhere), "old line 1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rotated_names_sort_by_time() {
        let path = Path::new("/logs/requests.log");
        let at = |text: &str| {
            OffsetDateTime::parse(text, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        };
        let early = rotated_path(path, at("2026-11-30T09:59:59.999999999Z"), 99999);
        let late = rotated_path(path, at("2026-11-30T10:00:00.000000001Z"), 1);
        assert_eq!(
            early.to_string_lossy(),
            "/logs/requests.log.20261130T095959.999999999Z-99999"
        );
        assert!(early < late);
        for (suffix, expected) in [
            ("20261130T095959.999999999Z-99999", true),
            ("20261130T095959.999999999Z-", false),
            ("20261130T095959.999999999Z", false),
            ("1", false),
            ("bak", false),
            ("20261130T095959.99999999xZ-1", false),
        ] {
            assert_eq!(is_rotation_suffix(suffix), expected, "{suffix}");
        }
    }

    #[test]
    fn an_unwritable_log_file_is_an_error_not_a_panic() {
        let dir = temp_dir("unwritable");
        let log_file = LogFile {
            path: dir.join("missing-dir").join("requests.log"),
            max_bytes: 1000,
            keep: 1,
        };
        let mut sink = LogSink::default();
        assert!(append(&mut sink, &log_file, b"line\n").is_err());
        assert!(sink.open.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod cost {
    use super::*;
    use crate::ctx::SyncFacts;
    use crate::sync::Entity;

    /// The time one request line costs with `LOG_FILE`: formatting and
    /// appending (open, fstat, write, close). `cargo test --release --lib
    /// log::cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn the_cost_of_a_line() {
        let dir = std::env::temp_dir().join(format!("hs-log-cost-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let log_file = LogFile {
            path: dir.join("requests.log"),
            max_bytes: 10 * 1024 * 1024,
            keep: 2,
        };
        let seen = Seen {
            user_id: Some(uuid::Uuid::new_v4().to_string()),
            device_id: Some("phone-1".into()),
            sync: Some(SyncFacts {
                pulled: 100,
                ..SyncFacts::default()
            }),
            ..Seen::default()
        };
        let line = Line {
            level: LogLevel::Info,
            request_id: "0123456789abcdef0123456789abcdef",
            method: "GET",
            route: Some(Route::Pull(Entity::Meals)),
            status: 200,
            timing: Timing {
                total: Duration::from_micros(512),
                db: Some(Duration::from_micros(301)),
            },
            seen: &seen,
            cause: None,
        };
        let rounds = 20_000;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            let _ = format_line(&line, now_rfc3339(), None);
        }
        let format_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            let text = format_line(&line, now_rfc3339(), None);
            let _ = append(&mut LogSink::default(), &log_file, text.as_bytes());
        }
        let fresh_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        let mut sink = LogSink::default();
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            let text = format_line(&line, now_rfc3339(), None);
            let _ = append(&mut sink, &log_file, text.as_bytes());
        }
        let kept_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        println!(
            "a line: format {format_us:.2} us; format and append {fresh_us:.2} us opening the \
             file (CGI), {kept_us:.2} us on a kept descriptor (FastCGI)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
