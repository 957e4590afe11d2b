//! `rfc3339`: text to `store::clock::parse_rfc3339`, the parser of every
//! client time (`updated_at`, `deleted_at`, `since`, `last_sync_at`).
//! Whatever it accepts, the server must be able to spell back: formatted
//! with `to_rfc3339` and parsed again it is the same millisecond, and it
//! survives the trip through a `DATETIME(3)` parameter.

use healthsync::store::clock::{from_sql, parse_rfc3339, to_rfc3339, to_sql};

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(millis) = parse_rfc3339(text) else {
        return;
    };
    let spelled = to_rfc3339(millis);
    assert_eq!(spelled.len(), 24, "{text:?} spelled {spelled:?}");
    assert_eq!(
        parse_rfc3339(&spelled),
        Some(millis),
        "{text:?} is {millis} ms, spelled {spelled:?}"
    );
    assert_eq!(
        from_sql(&to_sql(millis)),
        Some(millis),
        "{text:?} ({millis} ms) through DATETIME(3)"
    );
}
