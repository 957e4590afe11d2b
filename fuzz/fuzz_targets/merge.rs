//! Two records of one entity through `healthsync::sync::decide`.
//!
//! The properties are checked in `tests/fuzz/checks/merge.rs`, which
//! `cargo test --test fuzz_regressions` runs on the seeds and regressions.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz/checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::merge::check(data));
