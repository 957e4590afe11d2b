//! `healthsync smoke URL`: a client of the live API that proves a
//! deployment works and leaves nothing behind (see `args::HELP` for what it
//! does and prints). It never prints itself: every line goes to the
//! caller's `emit` (`cli.rs` prints them). It holds no SQL and shares
//! nothing with the request path but the entities' names (`sync::Entity`).
//!
//! `args` parses the command line, `client` speaks HTTP (ureq), `plan`
//! holds the records and the contract's expected results, `scenario` runs
//! the steps, `probe` measures the host's body limit.

pub mod args;
mod client;
mod plan;
mod probe;
mod scenario;

use std::time::Duration;

pub use args::{Options, Refusal, HELP};

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Fail,
}

/// The step lines and the first failure, for the closing line.
pub struct Report<'e> {
    emit: &'e mut dyn FnMut(&str),
    first_failure: Option<(String, String)>,
}

impl<'e> Report<'e> {
    pub fn new(emit: &'e mut dyn FnMut(&str)) -> Report<'e> {
        Report {
            emit,
            first_failure: None,
        }
    }

    /// One step's line: `ok    push health-metrics   12.4 ms  detail`.
    pub fn step(&mut self, status: Status, name: &str, elapsed: Duration, detail: &str) {
        let label = match status {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
        };
        let millis = format!("{:.1} ms", elapsed.as_secs_f64() * 1000.0);
        let detail = one_line(detail);
        (self.emit)(&format!("{label:<6}{name:<24}{millis:>11}  {detail}"));
        if status == Status::Fail && self.first_failure.is_none() {
            self.first_failure = Some((name.to_owned(), detail));
        }
    }

    pub fn failed(&self) -> bool {
        self.first_failure.is_some()
    }

    /// The closing line a deploy script reads, and whether all passed.
    pub fn finish(self, facts: &Facts) -> bool {
        match self.first_failure {
            None => {
                (self.emit)(&format!(
                    "smoke: ok version={} body_cap={} max_body_bytes={}",
                    facts.version.as_deref().unwrap_or("unknown"),
                    facts.body_cap.unwrap_or(0),
                    facts.max_body_bytes.unwrap_or(0),
                ));
                true
            }
            Some((step, reason)) => {
                (self.emit)(&format!(
                    "smoke: FAILED step={} reason={reason}",
                    step.replace(' ', "-")
                ));
                false
            }
        }
    }
}

/// What the closing line reports, as far as the run found out.
#[derive(Debug, Default)]
pub struct Facts {
    pub version: Option<String>,
    pub body_cap: Option<u64>,
    pub max_body_bytes: Option<u64>,
}

/// Text on one line: control characters (newlines) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Runs the smoke test; true when every step matched the contract. The
/// last line given to `emit` is the closing line.
pub fn run(options: &Options, emit: &mut dyn FnMut(&str)) -> bool {
    let mut report = Report::new(emit);
    let mut facts = Facts::default();
    match client::Client::new(options) {
        Ok(client) => scenario::run(&client, options, &mut report, &mut facts),
        Err(why) => report.step(Status::Fail, "setup", Duration::ZERO, &why),
    }
    report.finish(&facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines a report prints for `steps`, and what `finish` answered.
    fn printed(steps: &[(Status, &str, Duration, &str)], facts: &Facts) -> (Vec<String>, bool) {
        let mut lines = Vec::new();
        let mut emit = |line: &str| lines.push(line.to_owned());
        let mut report = Report::new(&mut emit);
        for (status, name, took, detail) in steps {
            report.step(*status, name, *took, detail);
        }
        let passed = report.finish(facts);
        (lines, passed)
    }

    #[test]
    fn a_clean_run_closes_with_the_ok_line() {
        let facts = Facts {
            version: Some("1.2.3".into()),
            body_cap: Some(131_072),
            max_body_bytes: Some(131_072),
        };
        let steps = [(
            Status::Ok,
            "push health-metrics",
            Duration::from_micros(12_400),
            "",
        )];
        let (lines, passed) = printed(&steps, &facts);
        assert!(passed);
        assert_eq!(
            lines[0].trim_end(),
            "ok    push health-metrics         12.4 ms"
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some("smoke: ok version=1.2.3 body_cap=131072 max_body_bytes=131072")
        );
    }

    #[test]
    fn the_help_shows_lines_as_they_are_printed() {
        let steps = [
            (
                Status::Ok,
                "push health-metrics",
                Duration::from_micros(12_400),
                "3 records stored, one a tombstone (versions 1, 2, 3)",
            ),
            (
                Status::Fail,
                "pull medications",
                Duration::from_micros(8_100),
                "expected 3 records, got 2",
            ),
        ];
        let (lines, _) = printed(&steps, &Facts::default());
        for line in lines.iter().take(steps.len()) {
            assert!(HELP.contains(&format!("\n  {line}\n")), "{line}");
        }
    }

    #[test]
    fn the_first_failure_names_the_closing_line_on_one_line() {
        let steps = [
            (
                Status::Fail,
                "pull medications",
                Duration::from_millis(8),
                "expected 3 records,\ngot 2",
            ),
            (Status::Fail, "erase account", Duration::ZERO, "later"),
        ];
        let (lines, passed) = printed(&steps, &Facts::default());
        assert!(!passed);
        assert!(lines[0].starts_with("FAIL  pull medications"));
        assert!(lines[0].ends_with("expected 3 records, got 2"));
        assert_eq!(
            lines.last().map(String::as_str),
            Some("smoke: FAILED step=pull-medications reason=expected 3 records, got 2")
        );
    }
}
