//! Text to `healthsync::store::clock::parse_rfc3339`, and back.
//!
//! The properties are checked in `tests/fuzz/checks/rfc3339.rs`, which
//! `cargo test --test fuzz_regressions` runs on the seeds and regressions.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz/checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::rfc3339::check(data));
