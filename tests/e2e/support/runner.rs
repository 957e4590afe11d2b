//! Runs named scenarios one after the other against running instances,
//! catching each one's assertion failure so that one report lists every
//! scenario that failed (with the Apache error log), instead of stopping at
//! the first.

use super::harness::{Instance, Mode};
use std::panic::{self, AssertUnwindSafe};

pub struct Runner {
    mode: Mode,
    passed: usize,
    failures: Vec<String>,
}

impl Runner {
    pub fn new(mode: Mode) -> Runner {
        Runner {
            mode,
            passed: 0,
            failures: Vec::new(),
        }
    }

    /// Runs one scenario; a panic inside it is recorded as that scenario's
    /// failure.
    pub fn run(&mut self, name: &str, scenario: impl FnOnce()) {
        match panic::catch_unwind(AssertUnwindSafe(scenario)) {
            Ok(()) => {
                self.passed += 1;
                println!("e2e [{}] ok      {name}", self.mode.name());
            }
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()))
                    .unwrap_or_else(|| "(no message)".to_string());
                println!("e2e [{}] FAILED  {name}", self.mode.name());
                self.failures.push(format!("- {name}:\n    {message}"));
            }
        }
    }

    /// Fails the test when any scenario failed, with every failure and the
    /// tail of each instance's error log.
    pub fn finish(self, instances: &[&Instance]) {
        if self.failures.is_empty() {
            println!(
                "e2e [{}] {} scenarios passed",
                self.mode.name(),
                self.passed
            );
            return;
        }
        let logs: Vec<String> = instances
            .iter()
            .map(|instance| {
                format!(
                    "--- Apache error log, port {}:\n{}",
                    instance.port,
                    instance.error_log_tail()
                )
            })
            .collect();
        panic!(
            "{} of {} e2e scenarios failed in {} mode:\n{}\n{}",
            self.failures.len(),
            self.failures.len() + self.passed,
            self.mode.name(),
            self.failures.join("\n"),
            logs.join("\n")
        );
    }
}
