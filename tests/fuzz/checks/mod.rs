//! The checks of every fuzz target, in one place: the fuzz crate includes
//! this module by `#[path]` (`fuzz/fuzz_targets/*.rs`) and the test
//! `fuzz_regressions` (`tests/fuzz/main.rs`) replays the seeds and the
//! saved crash inputs through it, so `cargo test` runs them on stable.
//!
//! Each `check` takes the raw input bytes, turns them into the values under
//! test with its own small decoder (no `arbitrary`: a saved input must
//! decode the same way in both crates, whatever versions their lock files
//! hold), and panics when a property fails. A panic is a finding.

pub mod cgi_request;
pub mod fcgi_records;
pub mod input;
pub mod merge;
pub mod push_body;
pub mod rfc3339;

/// A target's check: panics when the input breaks one of its properties.
pub type Check = fn(&[u8]);

/// Every fuzz target by name (its file in `fuzz/fuzz_targets/`, its seeds
/// in `fuzz/seeds/<name>/`, its regressions in `fuzz/regressions/<name>/`).
pub const TARGETS: &[(&str, Check)] = &[
    ("cgi_request", cgi_request::check),
    ("fcgi_records", fcgi_records::check),
    ("merge", merge::check),
    ("push_body", push_body::check),
    ("rfc3339", rfc3339::check),
];
