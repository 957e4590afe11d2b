//! One JSON line per request on stderr (Apache's error log): request id,
//! method, route name, status, duration, user id, and the hidden cause of a
//! 500/503. Never bodies, tokens, passwords, emails or health data; the raw
//! path is not logged either (a client controls it), only the route's name.

use std::io::Write;
use std::time::Instant;

use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::LogLevel;
use crate::route::Route;

pub struct Line<'a> {
    pub level: LogLevel,
    pub request_id: &'a str,
    pub method: &'a str,
    pub route: Option<Route>,
    pub status: u16,
    pub started: Instant,
    pub user_id: Option<&'a str>,
    pub cause: Option<&'a str>,
}

pub fn request(line: Line) {
    let elapsed_ms = line.started.elapsed().as_secs_f64() * 1000.0;
    let record = json!({
        "ts": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        "level": level_name(line.level),
        "request_id": line.request_id,
        "method": line.method,
        "route": line.route.map(Route::name),
        "status": line.status,
        "ms": (elapsed_ms * 1000.0).round() / 1000.0,
        "user_id": line.user_id,
        "error": line.cause,
    });
    write_line(&record);
}

/// A line about the process rather than a request (a broken FastCGI
/// connection, an accept that failed).
pub fn event(level: LogLevel, message: &str) {
    let record = json!({
        "ts": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        "level": level_name(level),
        "event": message,
    });
    write_line(&record);
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    }
}

fn write_line(record: &serde_json::Value) {
    let mut text = record.to_string();
    text.push('\n');
    // One write per line, so lines from concurrent processes do not mix.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
