//! The command line of `healthsync report`. Pure.

use crate::store::clock;

pub const HELP: &str = "\
healthsync report [--since 24h] [--json] [--apache-log FILE]
healthsync report --alert [--since 15m] [--apache-log FILE]

Reads the request log (LOG_FILE and its rotated files; without LOG_FILE, the
binary's lines in the Apache error log given with --apache-log) and prints,
per route, requests, 4xx, 5xx and the p50/p95/p99 of total and MySQL time;
the slowest requests; 5xx by cause; conflicts by entity and resolution;
records stored, pulled and refused; sync success by devices per user;
logins and other authentication attempts by result; accounts created and
erased. --json prints the same as one JSON object.

--since takes a duration (30m, 24h, 7d) or an RFC 3339 time; the default is
24h, and for --alert ALERT_WINDOW_MINUTES (15).

--alert prints nothing and exits 0 when all is well; otherwise one line per
problem and exit 1: the database unreachable (as `healthsync check` sees
it), a 5xx rate over ALERT_5XX_PERCENT (5), a p95 of push, pull and bulk
over ALERT_SYNC_P95_MS (1000), ALERT_503_BURST (10) answers 503 or
ALERT_FAILED_LOGIN_BURST (20) failed logins within ALERT_BURST_MINUTES (5),
a log that stopped growing for ALERT_LOG_STALE_MINUTES (10) while the
database counted requests. Rates and p95 need ALERT_MIN_REQUESTS (20)
requests in the window. Run it from cron: the output is the e-mail.";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// The last this many milliseconds.
    Last(i64),
    /// From this time (unix ms).
    At(i64),
}

impl Since {
    pub fn start(&self, now_ms: i64) -> i64 {
        match self {
            Since::Last(span) => now_ms.saturating_sub(*span),
            Since::At(at) => *at,
        }
    }

    /// `24h`, `15m`: how the window is named in a message.
    pub fn label(&self) -> String {
        match self {
            Since::Last(span) => duration_label(*span),
            Since::At(at) => format!("since {}", clock::to_rfc3339(*at)),
        }
    }
}

fn duration_label(span_ms: i64) -> String {
    let seconds = span_ms / 1000;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds >= size && seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `None`: the default of the mode.
    pub since: Option<Since>,
    pub json: bool,
    pub alert: bool,
    pub apache_log: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Help,
    Usage(String),
}

/// `30s`, `15m`, `24h`, `7d`, or an RFC 3339 time.
pub fn parse_since(text: &str) -> Option<Since> {
    if let Some(at) = clock::parse_rfc3339(text) {
        return Some(Since::At(at));
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok().filter(|n| *n > 0)?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(unit_ms).map(Since::Last)
}

pub fn parse(args: &[String]) -> Result<Options, Refusal> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(Refusal::Help),
            "--json" => options.json = true,
            "--alert" => options.alert = true,
            "--since" => {
                let value = args.next().ok_or_else(|| {
                    Refusal::Usage(
                        "--since needs a value (24h, 30m, 7d or an RFC 3339 time)".into(),
                    )
                })?;
                options.since = Some(parse_since(value).ok_or_else(|| {
                    Refusal::Usage(format!(
                        "--since {value}: not a duration (24h, 30m, 7d) or an RFC 3339 time"
                    ))
                })?);
            }
            "--apache-log" => {
                let value = args
                    .next()
                    .ok_or_else(|| Refusal::Usage("--apache-log needs a file".into()))?;
                options.apache_log = Some(value.clone());
            }
            other => return Err(Refusal::Usage(format!("unknown argument '{other}'"))),
        }
    }
    if options.alert && options.json {
        return Err(Refusal::Usage(
            "--alert prints sentences; it takes no --json".into(),
        ));
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn since_is_a_duration_or_a_time() {
        let check = |text: &str, expected: Option<Since>| {
            assert_eq!(parse_since(text), expected, "{text}");
        };
        check("24h", Some(Since::Last(86_400_000)));
        check("15m", Some(Since::Last(900_000)));
        check("30s", Some(Since::Last(30_000)));
        check("7d", Some(Since::Last(7 * 86_400_000)));
        check(
            "2026-11-30T18:00:00Z",
            clock::parse_rfc3339("2026-11-30T18:00:00Z").map(Since::At),
        );
        for bad in [
            "",
            "h",
            "24",
            "0h",
            "-1h",
            "1w",
            "1.5h",
            "24 h",
            "99999999999999999d",
        ] {
            check(bad, None);
        }
        assert_eq!(Since::Last(86_400_000).label(), "1d");
        assert_eq!(Since::Last(900_000).label(), "15m");
        assert_eq!(Since::Last(90_000).label(), "90s");
        assert_eq!(Since::Last(10_000).start(25_000), 15_000);
    }

    #[test]
    fn options_are_parsed_and_mistakes_named() {
        assert_eq!(parse(&args(&[])), Ok(Options::default()));
        assert_eq!(
            parse(&args(&[
                "--since",
                "1h",
                "--json",
                "--apache-log",
                "/var/log/e.log"
            ])),
            Ok(Options {
                since: Some(Since::Last(3_600_000)),
                json: true,
                alert: false,
                apache_log: Some("/var/log/e.log".into()),
            })
        );
        assert_eq!(parse(&args(&["--help"])), Err(Refusal::Help));
        for bad in [
            &["--since"][..],
            &["--since", "soon"],
            &["--apache-log"],
            &["--verbose"],
            &["--alert", "--json"],
        ] {
            assert!(
                matches!(parse(&args(bad)), Err(Refusal::Usage(_))),
                "{bad:?}"
            );
        }
    }
}
