//! The figures of `healthsync report`, from the entries of a window: per
//! route the requests, error rates and p50/p95/p99 of total and MySQL
//! time; the slowest requests; 5xx by cause; conflicts by entity and
//! resolution; records stored, pulled and refused; sync success by the
//! number of devices a user syncs from; authentication attempts; accounts
//! created and erased. Pure: entries in, a `Summary` (serialized for
//! `--json`) or text out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use serde::Serialize;

use crate::report::entry::Entry;
use crate::store::clock;
use crate::sync::Entity;

/// How many of the slowest requests a report lists.
pub const SLOWEST: usize = 10;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub since: String,
    pub until: String,
    pub requests: u64,
    /// Lines that looked like the binary's but could not be read.
    pub unreadable_lines: u64,
    pub first_at: Option<String>,
    pub last_at: Option<String>,
    /// Busiest first.
    pub routes: Vec<RouteStats>,
    pub slowest: Vec<Slow>,
    /// 500s and 503s by their cause, most frequent first.
    pub failures: Vec<Failure>,
    pub conflicts: Vec<Conflicts>,
    pub records: Records,
    pub sync_by_devices: Vec<DeviceBucket>,
    /// Kind -> result -> count (`login` -> `failed` -> 3).
    pub auth: BTreeMap<String, BTreeMap<String, u64>>,
    pub accounts: Accounts,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteStats {
    /// The route's name; `(no route)` for 404s, 405s and defects.
    pub route: String,
    pub requests: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// 5xx in percent of the route's requests.
    pub error_percent: f64,
    pub total_ms: Percentiles,
    /// Over the requests that used MySQL.
    pub db_ms: Option<Percentiles>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Slow {
    pub at: String,
    pub request_id: String,
    pub route: String,
    pub status: u16,
    pub total_ms: f64,
    pub db_ms: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub status: u16,
    pub cause: String,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflicts {
    pub entity: String,
    pub resolution: String,
    pub count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Records {
    pub stored: u64,
    pub pulled: u64,
    /// Error code -> refused records.
    pub refused: BTreeMap<String, u64>,
}

/// Sync requests (push, pull, bulk) of the users who synced from this
/// many devices in the window (`X-Device-Id`; `0` when none was sent).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceBucket {
    pub devices: String,
    pub users: u64,
    pub requests: u64,
    pub succeeded: u64,
    pub success_percent: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Accounts {
    pub created: u64,
    pub erased: u64,
}

/// The value at rank ceil(p/100 * n) of sorted values (nearest rank);
/// 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn percentiles(values: &mut [f64]) -> Percentiles {
    values.sort_by(f64::total_cmp);
    Percentiles {
        p50: percentile(values, 50.0),
        p95: percentile(values, 95.0),
        p99: percentile(values, 99.0),
    }
}

/// Push, pull and bulk: the routes whose time a device waits on to sync.
pub fn is_sync_route(route: &str) -> bool {
    if route == "POST /sync/bulk" {
        return true;
    }
    if let Some(path) = route.strip_prefix("POST /") {
        return path
            .strip_suffix("/sync")
            .is_some_and(|slug| Entity::from_slug(slug).is_some());
    }
    route
        .strip_prefix("GET /")
        .is_some_and(|slug| Entity::from_slug(slug).is_some())
}

const NO_ROUTE: &str = "(no route)";

fn rounded(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn percent(part: u64, whole: u64) -> f64 {
    match whole {
        0 => 0.0,
        _ => rounded(part as f64 * 100.0 / whole as f64),
    }
}

/// The figures of `entries` (those of the window, in log order).
pub fn summarize(entries: &[Entry], since_ms: i64, until_ms: i64, unreadable: u64) -> Summary {
    let mut by_route: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for entry in entries {
        by_route
            .entry(entry.route.as_deref().unwrap_or(NO_ROUTE))
            .or_default()
            .push(entry);
    }
    let mut routes: Vec<RouteStats> = by_route
        .into_iter()
        .map(|(route, list)| route_stats(route, &list))
        .collect();
    routes.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.route.cmp(&b.route)));

    let mut slowest: Vec<&Entry> = entries.iter().collect();
    slowest.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    let slowest = slowest
        .into_iter()
        .take(SLOWEST)
        .map(|entry| Slow {
            at: clock::to_rfc3339(entry.at),
            request_id: entry.request_id.clone(),
            route: entry.route.clone().unwrap_or_else(|| NO_ROUTE.into()),
            status: entry.status,
            total_ms: entry.total_ms,
            db_ms: entry.db_ms,
        })
        .collect();

    let mut failures: HashMap<(u16, String), u64> = HashMap::new();
    let mut conflicts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut records = Records::default();
    let mut auth: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut accounts = Accounts::default();
    for entry in entries {
        if entry.status >= 500 {
            let cause = entry.cause.as_deref().map_or("(none logged)", cause_class);
            *failures
                .entry((entry.status, cause.to_owned()))
                .or_default() += 1;
        }
        if let Some(sync) = &entry.sync {
            records.stored += sync.stored;
            records.pulled += sync.pulled;
            for (code, count) in &sync.errors {
                *records.refused.entry(code.clone()).or_default() += count;
            }
            for (entity, resolutions) in &sync.conflicts {
                for (resolution, count) in resolutions {
                    *conflicts
                        .entry((entity.clone(), resolution.clone()))
                        .or_default() += count;
                }
            }
        }
        if let Some(attempt) = &entry.auth {
            *auth
                .entry(attempt.kind.clone())
                .or_default()
                .entry(attempt.result.clone())
                .or_default() += 1;
            if attempt.result == "ok" {
                match attempt.kind.as_str() {
                    "register" => accounts.created += 1,
                    "account_erase" => accounts.erased += 1,
                    _ => {}
                }
            }
        }
    }
    let mut failures: Vec<Failure> = failures
        .into_iter()
        .map(|((status, cause), count)| Failure {
            status,
            cause,
            count,
        })
        .collect();
    failures.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.status.cmp(&b.status))
            .then(a.cause.cmp(&b.cause))
    });

    Summary {
        since: clock::to_rfc3339(since_ms),
        until: clock::to_rfc3339(until_ms),
        requests: entries.len() as u64,
        unreadable_lines: unreadable,
        first_at: entries.iter().map(|e| e.at).min().map(clock::to_rfc3339),
        last_at: entries.iter().map(|e| e.at).max().map(clock::to_rfc3339),
        routes,
        slowest,
        failures,
        conflicts: conflicts
            .into_iter()
            .map(|((entity, resolution), count)| Conflicts {
                entity,
                resolution,
                count,
            })
            .collect(),
        records,
        sync_by_devices: device_buckets(entries),
        auth,
        accounts,
    }
}

fn route_stats(route: &str, list: &[&Entry]) -> RouteStats {
    let requests = list.len() as u64;
    let status_4xx = list
        .iter()
        .filter(|e| (400..500).contains(&e.status))
        .count() as u64;
    let status_5xx = list.iter().filter(|e| e.status >= 500).count() as u64;
    let mut totals: Vec<f64> = list.iter().map(|e| e.total_ms).collect();
    let mut dbs: Vec<f64> = list.iter().filter_map(|e| e.db_ms).collect();
    RouteStats {
        route: route.to_owned(),
        requests,
        status_4xx,
        status_5xx,
        error_percent: percent(status_5xx, requests),
        total_ms: percentiles(&mut totals),
        db_ms: (!dbs.is_empty()).then(|| percentiles(&mut dbs)),
    }
}

/// A cause as the report groups it: its first 120 characters (a driver's
/// message may go on with detail that differs between occurrences).
pub fn cause_class(cause: &str) -> &str {
    let cut = cause
        .char_indices()
        .nth(120)
        .map_or(cause.len(), |(i, _)| i);
    cause[..cut].trim()
}

fn device_buckets(entries: &[Entry]) -> Vec<DeviceBucket> {
    struct PerUser<'a> {
        devices: HashSet<&'a str>,
        requests: u64,
        succeeded: u64,
    }
    let mut users: HashMap<&str, PerUser> = HashMap::new();
    for entry in entries {
        let (Some(route), Some(user)) = (&entry.route, &entry.user_id) else {
            continue;
        };
        if !is_sync_route(route) {
            continue;
        }
        let per_user = users.entry(user).or_insert_with(|| PerUser {
            devices: HashSet::new(),
            requests: 0,
            succeeded: 0,
        });
        per_user.requests += 1;
        if (200..300).contains(&entry.status) {
            per_user.succeeded += 1;
        }
        if let Some(device) = &entry.device_id {
            per_user.devices.insert(device);
        }
    }
    let mut buckets: BTreeMap<usize, (u64, u64, u64)> = BTreeMap::new();
    for per_user in users.values() {
        let bucket = buckets.entry(per_user.devices.len().min(4)).or_default();
        bucket.0 += 1;
        bucket.1 += per_user.requests;
        bucket.2 += per_user.succeeded;
    }
    buckets
        .into_iter()
        .map(|(devices, (users, requests, succeeded))| DeviceBucket {
            devices: match devices {
                4 => "4+".into(),
                n => n.to_string(),
            },
            users,
            requests,
            succeeded,
            success_percent: percent(succeeded, requests),
        })
        .collect()
}

fn ms(value: f64) -> String {
    format!("{value:.2}")
}

/// The report for a person.
pub fn render_text(summary: &Summary, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "healthsync report {} .. {}: {} requests from {source}",
        summary.since, summary.until, summary.requests
    );
    if summary.unreadable_lines > 0 {
        let _ = writeln!(
            out,
            "({} lines could not be read)",
            summary.unreadable_lines
        );
    }
    if summary.requests == 0 {
        let _ = writeln!(out, "\nno requests in this window");
        return out;
    }

    let width = summary
        .routes
        .iter()
        .map(|r| r.route.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "\n{:<width$} {:>8} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "route",
        "requests",
        "4xx",
        "5xx",
        "5xx %",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "db p50",
        "db p95",
        "db p99"
    );
    for route in &summary.routes {
        let db = |pick: fn(&Percentiles) -> f64| {
            route.db_ms.as_ref().map_or("-".into(), |p| ms(pick(p)))
        };
        let _ = writeln!(
            out,
            "{:<width$} {:>8} {:>6} {:>6} {:>6.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            route.route,
            route.requests,
            route.status_4xx,
            route.status_5xx,
            route.error_percent,
            ms(route.total_ms.p50),
            ms(route.total_ms.p95),
            ms(route.total_ms.p99),
            db(|p| p.p50),
            db(|p| p.p95),
            db(|p| p.p99),
        );
    }

    let _ = writeln!(out, "\nslowest requests");
    for slow in &summary.slowest {
        let db = slow
            .db_ms
            .map_or(String::new(), |d| format!(", db {} ms", ms(d)));
        let _ = writeln!(
            out,
            "  {:>9} ms{db}  {} {}  {}  request {}",
            ms(slow.total_ms),
            slow.status,
            slow.route,
            slow.at,
            slow.request_id
        );
    }

    let _ = writeln!(out, "\n5xx by cause");
    if summary.failures.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for failure in &summary.failures {
        let _ = writeln!(
            out,
            "  {:>6}  {}  {}",
            failure.count, failure.status, failure.cause
        );
    }

    let _ = writeln!(out, "\nconflicts by entity and resolution");
    if summary.conflicts.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for conflict in &summary.conflicts {
        let _ = writeln!(
            out,
            "  {:>6}  {} {}",
            conflict.count, conflict.entity, conflict.resolution
        );
    }

    let refused: u64 = summary.records.refused.values().sum();
    let codes: Vec<String> = summary
        .records
        .refused
        .iter()
        .map(|(code, count)| format!("{code} {count}"))
        .collect();
    let _ = writeln!(
        out,
        "\nrecords: {} stored, {} pulled, {refused} refused{}",
        summary.records.stored,
        summary.records.pulled,
        if codes.is_empty() {
            String::new()
        } else {
            format!(" ({})", codes.join(", "))
        }
    );

    let _ = writeln!(
        out,
        "\nsync requests (push, pull, bulk) by devices per user\n  {:>7} {:>6} {:>9} {:>6}",
        "devices", "users", "requests", "ok %"
    );
    for bucket in &summary.sync_by_devices {
        let _ = writeln!(
            out,
            "  {:>7} {:>6} {:>9} {:>6.1}",
            bucket.devices, bucket.users, bucket.requests, bucket.success_percent
        );
    }

    let _ = writeln!(out, "\nauthentication");
    if summary.auth.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for (kind, results) in &summary.auth {
        let results: Vec<String> = results
            .iter()
            .map(|(result, count)| format!("{count} {result}"))
            .collect();
        let _ = writeln!(out, "  {kind}: {}", results.join(", "));
    }
    let _ = writeln!(
        out,
        "\naccounts: {} created, {} erased",
        summary.accounts.created, summary.accounts.erased
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::entry::{parse_line, Parsed};

    /// Entries from log lines: the report reads what the binary writes.
    fn entries(lines: &[&str]) -> Vec<Entry> {
        lines
            .iter()
            .map(|line| match parse_line(line) {
                Parsed::Request(entry) => *entry,
                other => panic!("not a request line ({other:?}): {line}"),
            })
            .collect()
    }

    fn line(minute: u32, route: &str, status: u16, ms: f64, extra: &str) -> String {
        format!(
            r#"{{"ts":"2026-11-30T18:{minute:02}:00Z","request_id":"r{minute}-{ms}","route":"{route}","status":{status},"ms":{ms}{extra}}}"#
        )
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let check = |values: &[f64], p: f64, expected: f64| {
            assert_eq!(percentile(values, p), expected, "{values:?} p{p}");
        };
        check(&[], 50.0, 0.0);
        check(&[7.0], 50.0, 7.0);
        check(&[7.0], 99.0, 7.0);
        check(&[1.0, 2.0], 50.0, 1.0);
        check(&[1.0, 2.0], 95.0, 2.0);
        check(&[1.0, 2.0, 3.0, 4.0], 50.0, 2.0);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        check(&hundred, 50.0, 50.0);
        check(&hundred, 95.0, 95.0);
        check(&hundred, 99.0, 99.0);
        check(&hundred, 100.0, 100.0);
    }

    #[test]
    fn sync_routes_are_push_pull_and_bulk() {
        for (route, expected) in [
            ("POST /sync/bulk", true),
            ("POST /meals/sync", true),
            ("POST /health-metrics/sync", true),
            ("GET /meal-plans", true),
            ("GET /sync/status", false),
            ("GET /health", false),
            ("POST /auth/login", false),
            ("GET /account", false),
            ("POST /unknown/sync", false),
        ] {
            assert_eq!(is_sync_route(route), expected, "{route}");
        }
    }

    #[test]
    fn route_figures_come_from_the_lines() {
        let mut lines: Vec<String> = (1..=20)
            .map(|i| line(1, "GET /meals", 200, f64::from(i), r#","db_ms":0.5"#))
            .collect();
        lines.push(line(
            2,
            "GET /meals",
            503,
            40.0,
            r#","error":"connect: refused (os error 111)""#,
        ));
        lines.push(line(2, "GET /meals", 410, 2.0, ""));
        lines.push(line(3, "GET /health", 200, 0.25, ""));
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let summary = summarize(&entries(&refs), 0, 1, 2);
        assert_eq!(summary.requests, 23);
        assert_eq!(summary.unreadable_lines, 2);
        let meals = &summary.routes[0];
        assert_eq!(meals.route, "GET /meals");
        assert_eq!(
            (meals.requests, meals.status_4xx, meals.status_5xx),
            (22, 1, 1)
        );
        assert_eq!(meals.error_percent, 4.545);
        // 1..=20, 40 and 2: sorted 1, 2, 2, 3, ..., 20, 40.
        assert_eq!(
            meals.total_ms,
            Percentiles {
                p50: 10.0,
                p95: 20.0,
                p99: 40.0
            }
        );
        assert_eq!(meals.db_ms.map(|p| p.p99), Some(0.5));
        let health = &summary.routes[1];
        assert_eq!((health.route.as_str(), health.db_ms), ("GET /health", None));
        assert_eq!(summary.slowest[0].total_ms, 40.0);
        assert_eq!(summary.slowest[0].status, 503);
        assert_eq!(summary.slowest.len(), SLOWEST);
        assert_eq!(
            summary.failures,
            vec![Failure {
                status: 503,
                cause: "connect: refused (os error 111)".into(),
                count: 1
            }]
        );
    }

    #[test]
    fn conflicts_records_devices_and_accounts_are_counted() {
        let sync = |conflicts: &str, errors: &str| {
            format!(
                r#","user_id":"{{user}}","device_id":"{{device}}","sync":{{"stored":10,"pulled":5,"conflicts":{{{conflicts}}},"errors":{{{errors}}}}}"#
            )
        };
        let with = |text: String, user: &str, device: &str| {
            text.replace("{user}", user).replace("{device}", device)
        };
        let lines = vec![
            line(
                1,
                "POST /meals/sync",
                200,
                3.0,
                &with(
                    sync(
                        r#""meals":{"kept_both":2,"server_wins":1}"#,
                        r#""CLOCK_SKEW":1"#,
                    ),
                    "u1",
                    "a",
                ),
            ),
            line(
                1,
                "POST /sync/bulk",
                200,
                3.0,
                &with(
                    sync(
                        r#""meals":{"server_wins":1},"medications":{"merged":4}"#,
                        r#""VALIDATION_ERROR":2"#,
                    ),
                    "u1",
                    "b",
                ),
            ),
            line(2, "GET /meals", 200, 1.0, &with(sync("", ""), "u2", "c")),
            line(
                2,
                "GET /meals",
                503,
                1.0,
                r#","user_id":"u2","device_id":"c""#,
            ),
            line(3, "GET /meals", 200, 1.0, r#","user_id":"u3""#),
            line(
                4,
                "POST /auth/register",
                201,
                30.0,
                r#","user_id":"u4","auth":{"kind":"register","result":"ok"}"#,
            ),
            line(
                4,
                "POST /auth/login",
                401,
                30.0,
                r#","auth":{"kind":"login","result":"failed","reason":"wrong_password"}"#,
            ),
            line(
                4,
                "POST /auth/login",
                401,
                30.0,
                r#","auth":{"kind":"login","result":"failed","reason":"unknown_account"}"#,
            ),
            line(
                4,
                "POST /auth/login",
                429,
                1.0,
                r#","auth":{"kind":"login","result":"throttled"}"#,
            ),
            line(
                5,
                "DELETE /account",
                200,
                30.0,
                r#","user_id":"u4","auth":{"kind":"account_erase","result":"ok"}"#,
            ),
        ];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let summary = summarize(&entries(&refs), 0, 1, 0);
        let conflicts: Vec<(&str, &str, u64)> = summary
            .conflicts
            .iter()
            .map(|c| (c.entity.as_str(), c.resolution.as_str(), c.count))
            .collect();
        assert_eq!(
            conflicts,
            vec![
                ("meals", "kept_both", 2),
                ("meals", "server_wins", 2),
                ("medications", "merged", 4)
            ]
        );
        assert_eq!((summary.records.stored, summary.records.pulled), (30, 15));
        assert_eq!(summary.records.refused["VALIDATION_ERROR"], 2);
        assert_eq!(summary.records.refused["CLOCK_SKEW"], 1);
        let buckets: Vec<(&str, u64, u64, u64)> = summary
            .sync_by_devices
            .iter()
            .map(|b| (b.devices.as_str(), b.users, b.requests, b.succeeded))
            .collect();
        // u3 sent no device id; u2 one device, one of two requests failed;
        // u1 two devices.
        assert_eq!(
            buckets,
            vec![("0", 1, 1, 1), ("1", 1, 2, 1), ("2", 1, 2, 2)]
        );
        assert_eq!(summary.sync_by_devices[1].success_percent, 50.0);
        assert_eq!(summary.auth["login"]["failed"], 2);
        assert_eq!(summary.auth["login"]["throttled"], 1);
        assert_eq!(
            summary.accounts,
            Accounts {
                created: 1,
                erased: 1
            }
        );
        let text = render_text(&summary, "test.log");
        for expected in [
            "10 requests from test.log",
            "medications merged",
            "30 stored, 15 pulled, 3 refused (CLOCK_SKEW 1, VALIDATION_ERROR 2)",
            "login: 2 failed, 1 throttled",
            "accounts: 1 created, 1 erased",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }
}
