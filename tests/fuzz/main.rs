//! The fuzz targets' seeds and saved crash inputs, replayed through the
//! same checks the targets run (`checks/`, which the fuzz crate includes by
//! `#[path]`), so every input that once crashed keeps being tested by a
//! plain `cargo test`, without nightly or libFuzzer. Fuzzing itself:
//! `deploy/fuzz`.

// Test code: a panic is how a check fails.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod checks;

use std::path::{Path, PathBuf};

/// The files of `fuzz/<kind>/<target>/`, sorted; none when it is missing.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Runs `target`'s check on each of its seeds and regressions; fails
/// naming every input whose check panicked.
fn replay(target: &str) {
    let check = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .unwrap_or_else(|| panic!("no check named {target}"));
    let seeds = inputs("seeds", target);
    assert!(!seeds.is_empty(), "fuzz/seeds/{target}/ holds no seed");
    let regressions = inputs("regressions", target);
    let mut failed = Vec::new();
    for path in seeds.iter().chain(&regressions) {
        let bytes = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| check(&bytes)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: the check failed on\n  {}",
        failed.join("\n  ")
    );
}

#[test]
fn every_target_has_a_check_a_fuzz_target_and_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, _) in checks::TARGETS {
        let source = root.join("fuzz_targets").join(format!("{target}.rs"));
        assert!(source.is_file(), "{} is missing", source.display());
        assert!(!inputs("seeds", target).is_empty(), "no seeds for {target}");
    }
    let targets = std::fs::read_dir(root.join("fuzz_targets"))
        .unwrap()
        .count();
    assert_eq!(
        targets,
        checks::TARGETS.len(),
        "a fuzz target without a check"
    );
}

#[test]
fn cgi_request_inputs_pass_its_checks() {
    replay("cgi_request");
}

#[test]
fn fcgi_records_inputs_pass_its_checks() {
    replay("fcgi_records");
}

#[test]
fn merge_inputs_pass_its_checks() {
    replay("merge");
}

#[test]
fn push_body_inputs_pass_its_checks() {
    replay("push_body");
}

#[test]
fn rfc3339_inputs_pass_its_checks() {
    replay("rfc3339");
}
