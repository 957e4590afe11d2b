//! `healthsync report --alert`: nothing when all is well, one short
//! sentence per threshold passed. Pure: the window's entries, the
//! thresholds (`ALERT_*`) and what the command found outside the log (the
//! database as `check` sees it, the last request the database counted)
//! in, messages out.

use crate::config::AlertThresholds;
use crate::report::entry::Entry;
use crate::report::summary::{cause_class, is_sync_route, percentiles};
use crate::store::clock;

/// What `report --alert` learnt besides the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Problems with the configuration or the database, as `healthsync
    /// check` words them.
    pub database_problems: Vec<String>,
    /// The start (unix seconds) of the newest rate-limit window in which
    /// the database counted a request: requests are coming in.
    pub last_counted_request: Option<i64>,
    /// The newest line of the log, whatever the window (unix ms).
    pub last_line_at: Option<i64>,
    /// The log could not be read (a missing file, no permission).
    pub log_problem: Option<String>,
}

/// The most entries satisfying `matches` within any span of `span_ms`,
/// and when that span began. Entries are in log order, which is time
/// order but for lines of processes that finished out of step.
pub fn burst(entries: &[Entry], span_ms: i64, matches: impl Fn(&Entry) -> bool) -> (u64, i64) {
    let mut times: Vec<i64> = entries
        .iter()
        .filter(|e| matches(e))
        .map(|e| e.at)
        .collect();
    times.sort_unstable();
    let mut best = (0u64, 0i64);
    let mut first = 0;
    for (last, at) in times.iter().enumerate() {
        while *at - times[first] >= span_ms {
            first += 1;
        }
        let count = (last - first + 1) as u64;
        if count > best.0 {
            best = (count, times[first]);
        }
    }
    best
}

fn is_failed_login(entry: &Entry) -> bool {
    entry.auth.as_ref().is_some_and(|auth| {
        auth.kind == "login" && matches!(auth.result.as_str(), "failed" | "locked")
    })
}

/// The alerts of a window, in a fixed order; empty when all is well.
pub fn judge(
    entries: &[Entry],
    window_label: &str,
    thresholds: &AlertThresholds,
    facts: &Facts,
) -> Vec<String> {
    let mut alerts = Vec::new();
    for problem in &facts.database_problems {
        alerts.push(format!("database: {problem}"));
    }
    if let Some(problem) = &facts.log_problem {
        alerts.push(format!("log: {problem}"));
    }

    let requests = entries.len() as u64;
    let failed: Vec<&Entry> = entries.iter().filter(|e| e.status >= 500).collect();
    let percent = match requests {
        0 => 0.0,
        _ => failed.len() as f64 * 100.0 / requests as f64,
    };
    if requests >= thresholds.min_requests && percent > thresholds.error_percent {
        let mut causes: Vec<(String, u64)> = Vec::new();
        for entry in &failed {
            let cause = format!(
                "{} {}",
                entry.status,
                entry
                    .cause
                    .as_deref()
                    .map_or("(no cause logged)", cause_class)
            );
            match causes.iter_mut().find(|(c, _)| *c == cause) {
                Some((_, count)) => *count += 1,
                None => causes.push((cause, 1)),
            }
        }
        causes.sort_by_key(|cause| std::cmp::Reverse(cause.1));
        let top = causes
            .first()
            .map(|(cause, count)| format!("; most often {cause} ({count})"))
            .unwrap_or_default();
        alerts.push(format!(
            "5xx rate {percent:.1} % ({} of {requests} requests) in the last {window_label}, over ALERT_5XX_PERCENT={}{top}",
            failed.len(),
            thresholds.error_percent
        ));
    }

    let mut sync_times: Vec<f64> = entries
        .iter()
        .filter(|e| e.route.as_deref().is_some_and(is_sync_route))
        .map(|e| e.total_ms)
        .collect();
    let sync_requests = sync_times.len() as u64;
    let p95 = percentiles(&mut sync_times).p95;
    if sync_requests >= thresholds.min_requests && p95 > thresholds.sync_p95_ms {
        alerts.push(format!(
            "p95 of push, pull and bulk is {p95:.0} ms over {sync_requests} requests in the last {window_label}, over ALERT_SYNC_P95_MS={}",
            thresholds.sync_p95_ms
        ));
    }

    let span_ms = i64::from(thresholds.burst_minutes) * 60_000;
    let (unavailable, from) = burst(entries, span_ms, |e| e.status == 503);
    if unavailable >= thresholds.unavailable_burst {
        alerts.push(format!(
            "{unavailable} answers 503 within {} minutes from {}, ALERT_503_BURST={}: the database was unreachable or overloaded",
            thresholds.burst_minutes,
            clock::to_rfc3339(from),
            thresholds.unavailable_burst
        ));
    }
    let (failed_logins, from) = burst(entries, span_ms, is_failed_login);
    if failed_logins >= thresholds.failed_login_burst {
        alerts.push(format!(
            "{failed_logins} failed logins within {} minutes from {}, ALERT_FAILED_LOGIN_BURST={}: someone may be guessing passwords",
            thresholds.burst_minutes,
            clock::to_rfc3339(from),
            thresholds.failed_login_burst
        ));
    }

    let unwritten = entries
        .iter()
        .filter(|e| e.log_file_error.is_some())
        .count();
    if let Some(reason) = entries
        .iter()
        .rev()
        .find_map(|e| e.log_file_error.as_deref())
    {
        alerts.push(format!(
            "{unwritten} request lines could not be written to LOG_FILE (last: {reason})"
        ));
    }

    if let Some(counted) = facts.last_counted_request {
        let stale_ms = i64::from(thresholds.log_stale_minutes) * 60_000;
        let counted_ms = counted.saturating_mul(1000);
        let stopped = match facts.last_line_at {
            Some(last) => counted_ms > last.saturating_add(stale_ms),
            None => true,
        };
        if stopped && facts.log_problem.is_none() {
            let last = facts
                .last_line_at
                .map_or("no line at all".to_owned(), |at| {
                    format!("its last line is at {}", clock::to_rfc3339(at))
                });
            alerts.push(format!(
                "the log stopped growing: {last}, but the database counted requests until {} (ALERT_LOG_STALE_MINUTES={}): check LOG_FILE, its directory's permissions and the disk",
                clock::to_rfc3339(counted_ms),
                thresholds.log_stale_minutes
            ));
        }
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::entry::Auth;

    const T0: i64 = 1_796_000_000_000;

    fn entry(second: i64, route: &str, status: u16, ms: f64) -> Entry {
        Entry {
            at: T0 + second * 1000,
            route: Some(route.into()),
            status,
            total_ms: ms,
            ..Entry::default()
        }
    }

    fn login(second: i64, result: &str) -> Entry {
        Entry {
            auth: Some(Auth {
                kind: "login".into(),
                result: result.into(),
                reason: None,
            }),
            ..entry(second, "POST /auth/login", 401, 30.0)
        }
    }

    /// 100 healthy requests over 100 seconds: 60 pulls, 40 pushes.
    /// `check` with the facts of a healthy setup.
    fn check_healthy(entries: &[Entry], expected: &[&str]) {
        check(entries, &healthy_facts(), expected);
    }

    fn healthy() -> Vec<Entry> {
        (0..100)
            .map(|i| match i % 5 {
                0 | 1 => entry(i, "POST /meals/sync", 200, 4.0),
                _ => entry(i, "GET /meals", 200, 1.0),
            })
            .collect()
    }

    fn healthy_facts() -> Facts {
        Facts {
            last_counted_request: Some((T0 + 60_000) / 1000),
            last_line_at: Some(T0 + 99_000),
            ..Facts::default()
        }
    }

    /// Runs the judge on `entries` and checks that exactly the alerts
    /// containing the `expected` texts come out, one each.
    fn check(entries: &[Entry], facts: &Facts, expected: &[&str]) {
        let alerts = judge(entries, "15m", &AlertThresholds::default(), facts);
        assert_eq!(alerts.len(), expected.len(), "{alerts:#?}");
        for (alert, text) in alerts.iter().zip(expected) {
            assert!(alert.contains(text), "{text:?} not in {alert:?}");
        }
    }

    #[test]
    fn a_healthy_window_is_silent() {
        check_healthy(&healthy(), &[]);
        // Too few requests make no rate and no p95.
        let few = vec![
            entry(0, "GET /meals", 503, 5000.0),
            entry(1, "GET /meals", 200, 5000.0),
        ];
        check_healthy(&few, &[]);
        check(&[], &Facts::default(), &[]);
    }

    #[test]
    fn each_threshold_is_loud() {
        // 5xx rate: 6 of 100 is over 5 %.
        let mut entries = healthy();
        for e in entries.iter_mut().take(6) {
            e.status = 500;
            e.cause = Some("panic: boom".into());
        }
        check_healthy(&entries, &["5xx rate 6.0 % (6 of 100 requests) in the last 15m, over ALERT_5XX_PERCENT=5; most often 500 panic: boom (6)"]);

        // p95 of sync routes.
        let mut entries = healthy();
        for e in entries
            .iter_mut()
            .filter(|e| e.route.as_deref() == Some("GET /meals"))
            .take(10)
        {
            e.total_ms = 1500.0;
        }
        check_healthy(
            &entries,
            &["p95 of push, pull and bulk is 1500 ms over 100 requests"],
        );

        // A burst of 503s: 10 within a minute, in 200 requests (5 %: no
        // rate alert).
        let mut entries = healthy();
        entries.extend(healthy().into_iter().map(|mut e| {
            e.at += 200_000;
            e
        }));
        for e in entries.iter_mut().skip(50).take(10) {
            e.status = 503;
        }
        check_healthy(&entries, &["10 answers 503 within 5 minutes from"]);

        // Failed logins: 20 within 5 minutes; 19 are not enough, nor 20
        // spread over an hour.
        let mut entries = healthy();
        entries.extend((0..20).map(|i| login(100 + i * 10, "failed")));
        check_healthy(&entries, &["20 failed logins within 5 minutes"]);
        let mut entries = healthy();
        entries.extend((0..19).map(|i| login(100 + i, "locked")));
        entries.extend((0..5).map(|i| login(100 + i, "ok")));
        check_healthy(&entries, &[]);
        let mut entries = healthy();
        entries.extend((0..20).map(|i| login(100 + i * 180, "failed")));
        check_healthy(&entries, &[]);

        // The log stopped growing while the database counted requests.
        let stale = Facts {
            last_counted_request: Some((T0 + 99_000 + 11 * 60_000) / 1000),
            ..healthy_facts()
        };
        check(
            &healthy(),
            &stale,
            &["the log stopped growing: its last line is at"],
        );
        let empty_log = Facts {
            last_line_at: None,
            ..healthy_facts()
        };
        check(
            &[],
            &empty_log,
            &["the log stopped growing: no line at all"],
        );

        // Lines that could not go to LOG_FILE (read from Apache's log).
        let mut entries = healthy();
        entries[3].log_file_error = Some("/logs/hs.log: Permission denied (os error 13)".into());
        check_healthy(&entries, &["1 request lines could not be written to LOG_FILE (last: /logs/hs.log: Permission denied"]);

        // What check says of the database, and a log that cannot be read.
        let broken = Facts {
            database_problems: vec!["cannot reach MySQL at db:3306".into()],
            log_problem: Some("/logs/hs.log cannot be read".into()),
            ..healthy_facts()
        };
        check(
            &healthy(),
            &broken,
            &[
                "database: cannot reach MySQL at db:3306",
                "log: /logs/hs.log cannot be read",
            ],
        );
    }

    #[test]
    fn a_burst_is_the_most_matches_within_any_span() {
        let at = |seconds: &[i64]| -> Vec<Entry> {
            seconds
                .iter()
                .map(|s| entry(*s, "GET /meals", 503, 1.0))
                .collect()
        };
        let check = |seconds: &[i64], span_s: i64, expected: (u64, i64)| {
            let (count, from) = burst(&at(seconds), span_s * 1000, |_| true);
            assert_eq!(
                (count, (from - T0) / 1000),
                expected,
                "{seconds:?} in {span_s} s"
            );
        };
        check(&[], 60, (0, -T0 / 1000));
        check(&[5], 60, (1, 5));
        check(&[0, 30, 59, 60, 61], 60, (4, 30));
        check(&[0, 59, 60, 119], 60, (2, 0));
        check(&[0, 100, 110, 120, 130, 400], 60, (4, 100));
        // Out of log order (processes finishing out of step).
        check(&[130, 100, 120, 110], 60, (4, 100));
    }
}
