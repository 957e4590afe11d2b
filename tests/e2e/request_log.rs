//! `LOG_FILE` behind a real Apache: the web server's user appends the
//! lines (FastCGI workers keeping the file open between requests, CGI
//! processes one line each), the file rotates under them, and `healthsync
//! report` reads back exactly the lines written.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::harness::Mode;

/// A rotation every dozen lines or so.
const MAX_BYTES: u64 = 4_000;

/// A directory the web server's user can write (www-data when the tests
/// run as root), removed on drop.
pub struct LogDir(PathBuf);

impl LogDir {
    pub fn new(mode: Mode) -> LogDir {
        let dir = std::env::temp_dir().join(format!(
            "hs-e2e-log-{}-{}",
            mode.name(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        LogDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("requests.log")
    }

    /// The instance's `.env` overrides.
    pub fn settings(&self) -> Vec<String> {
        vec![
            format!("LOG_FILE={}", self.file().display()),
            format!("LOG_FILE_MAX_BYTES={MAX_BYTES}"),
            "LOG_FILE_KEEP=99".to_owned(),
        ]
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn every_request_has_a_whole_line(log: &LogDir) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&log.0)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "the log never rotated: {files:?}");
    let mut lines: Vec<Value> = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.ends_with('\n'), "{} ends mid-line", path.display());
        for line in text.lines() {
            lines.push(
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{}: not a JSON line ({e}): {line}", path.display())
                }),
            );
        }
    }
    let ids: HashSet<&str> = lines
        .iter()
        .map(|line| line["request_id"].as_str().expect("a request id"))
        .collect();
    assert_eq!(ids.len(), lines.len(), "a request logged twice");
    let has = |route: &str, status: u64| {
        lines
            .iter()
            .any(|line| line["route"] == route && line["status"] == status)
    };
    for (route, status) in [
        ("GET /health", 200),
        ("POST /auth/register", 201),
        ("GET /__test/panic", 500),
        ("POST /sync/bulk", 200),
    ] {
        assert!(has(route, status), "no line for {route} {status}");
    }
    let panic_line = lines
        .iter()
        .find(|line| line["route"] == "GET /__test/panic")
        .unwrap();
    assert!(
        panic_line["error"]
            .as_str()
            .is_some_and(|cause| cause.contains("deliberate panic")),
        "{panic_line}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_healthsync"))
        .env_clear()
        .env("LOG_FILE", log.file())
        .env("LOG_FILE_KEEP", "99")
        .args(["report", "--json", "--since", "1h"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["requests"], lines.len() as u64, "{summary}");
    assert_eq!(summary["unreadable_lines"], 0);
}
