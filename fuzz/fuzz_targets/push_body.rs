//! Bytes as a push body (each entity) and as a bulk body, through the
//! routes' parsing and `engine::validate`.
//!
//! The properties are checked in `tests/fuzz/checks/push_body.rs`, which
//! `cargo test --test fuzz_regressions` runs on the seeds and regressions.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz/checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::push_body::check(data));
