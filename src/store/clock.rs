//! Conversions between the binary's timestamps (UTC milliseconds since the
//! Unix epoch, `i64`) and MySQL `DATETIME(3)` values, and RFC 3339 text for
//! the wire. One place, so every table and response agrees to the
//! millisecond.

use mysql::Value;
use time::format_description::well_known::Rfc3339 as Rfc3339Format;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// A `DATETIME` column as the text protocol sends it.
const TEXT_DATETIME: time::format_description::FormatDescriptionV3<'static> = time::macros::format_description!(
    version = 3,
    "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
);

/// A `DATETIME(3)` parameter for a UTC millisecond timestamp. Out-of-range
/// values (never produced by validated input) become the epoch.
pub fn to_sql(millis: i64) -> Value {
    let moment = from_millis(millis);
    Value::Date(
        u16::try_from(moment.year()).unwrap_or(1970),
        u8::from(moment.month()),
        moment.day(),
        moment.hour(),
        moment.minute(),
        moment.second(),
        moment.millisecond() as u32 * 1000,
    )
}

/// A `DATETIME(3)` column as UTC milliseconds. `None` for NULL or a value
/// that is not a date.
pub fn from_sql(value: &Value) -> Option<i64> {
    match value {
        Value::Date(year, month, day, hour, minute, second, micros) => {
            let date =
                Date::from_calendar_date(i32::from(*year), Month::try_from(*month).ok()?, *day)
                    .ok()?;
            let time = Time::from_hms_micro(*hour, *minute, *second, *micros).ok()?;
            let moment = PrimitiveDateTime::new(date, time).assume_utc();
            Some(to_millis(moment))
        }
        Value::Bytes(bytes) => {
            // Text protocol: "YYYY-MM-DD HH:MM:SS.fff".
            let text = std::str::from_utf8(bytes).ok()?;
            let moment = PrimitiveDateTime::parse(text, &TEXT_DATETIME).ok()?;
            Some(to_millis(moment.assume_utc()))
        }
        _ => None,
    }
}

/// The instant in whole milliseconds, rounded down (towards the past, also
/// before 1970). In `i64` seconds and milliseconds, not `i128`
/// nanoseconds: a pull converts two timestamps per record.
pub fn to_millis(moment: OffsetDateTime) -> i64 {
    moment.unix_timestamp() * 1000 + i64::from(moment.millisecond())
}

pub fn from_millis(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000))
        .ok()
        .and_then(|second| {
            // 0..=999 by `rem_euclid`.
            let millisecond = u16::try_from(millis.rem_euclid(1000)).ok()?;
            second.replace_millisecond(millisecond).ok()
        })
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 in UTC with exactly three fractional digits, e.g.
/// `2024-01-15T10:30:00.123Z`: every response spells a time one way.
pub fn to_rfc3339(millis: i64) -> String {
    Rfc3339(millis).to_string()
}

/// A UTC millisecond timestamp that displays as `to_rfc3339` spells it,
/// written straight into the output: a pull writes two per record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc3339(pub i64);

impl Rfc3339 {
    /// The text, `YYYY-MM-DDTHH:MM:SS.mmmZ`, always 24 ASCII bytes.
    pub fn text(self) -> [u8; 24] {
        let moment = from_millis(self.0);
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let fields: [(usize, usize, u32); 7] = [
            (0, 4, u32::try_from(moment.year()).unwrap_or(0)),
            (5, 2, u32::from(u8::from(moment.month()))),
            (8, 2, u32::from(moment.day())),
            (11, 2, u32::from(moment.hour())),
            (14, 2, u32::from(moment.minute())),
            (17, 2, u32::from(moment.second())),
            (20, 3, u32::from(moment.millisecond())),
        ];
        for (start, width, mut value) in fields {
            for slot in text.iter_mut().skip(start).take(width).rev() {
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        text
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.text();
        f.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?)
    }
}

impl serde::Serialize for Rfc3339 {
    /// As a JSON string, without going through `Display`: a pull writes
    /// two per record.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.text();
        match std::str::from_utf8(&text) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => Err(serde::ser::Error::custom("a time that is not ASCII")),
        }
    }
}

/// `0000-01-01T00:00:00.000Z` and `9999-12-31T23:59:59.999Z`: the first and
/// the last instant RFC 3339 can spell in UTC.
const EARLIEST_SPELLED_MS: i64 = -62_167_219_200_000;
const LATEST_SPELLED_MS: i64 = 253_402_300_799_999;

/// Parses RFC 3339 with a required offset. Precision beyond milliseconds is
/// truncated (the storage keeps milliseconds). A time whose offset carries
/// it out of the years 0000 to 9999 in UTC is refused: `to_rfc3339` could
/// not spell it back.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let moment = OffsetDateTime::parse(text, &Rfc3339Format).ok()?;
    // The instant, whatever its offset: converting to UTC first would
    // panic for one past year 9999 (`9999-12-31T23:00:00-02:00`).
    let millis = to_millis(moment);
    (EARLIEST_SPELLED_MS..=LATEST_SPELLED_MS)
        .contains(&millis)
        .then_some(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_keep_milliseconds() {
        for text in [
            "2024-01-15T10:30:00.123Z",
            "2000-01-01T00:00:00.000Z",
            "2099-12-31T23:59:59.999Z",
        ] {
            let millis = parse_rfc3339(text).unwrap_or(-1);
            assert_eq!(to_rfc3339(millis), text);
            assert_eq!(from_sql(&to_sql(millis)), Some(millis), "{text}");
        }
    }

    #[test]
    fn offsets_are_required_and_applied() {
        assert_eq!(parse_rfc3339("2024-01-15T10:30:00"), None);
        assert_eq!(
            parse_rfc3339("2024-01-15T12:30:00.5+02:00")
                .map(to_rfc3339)
                .as_deref(),
            Some("2024-01-15T10:30:00.500Z")
        );
        assert_eq!(
            parse_rfc3339("2024-01-15T10:30:00.123999Z")
                .map(to_rfc3339)
                .as_deref(),
            Some("2024-01-15T10:30:00.123Z")
        );
        assert_eq!(parse_rfc3339("not a date"), None);
    }

    #[test]
    fn times_that_utc_puts_outside_four_digit_years_are_refused() {
        assert_eq!(
            parse_rfc3339("9999-12-31T23:59:59.999Z"),
            Some(LATEST_SPELLED_MS)
        );
        assert_eq!(
            parse_rfc3339("0000-01-01T00:00:00Z"),
            Some(EARLIEST_SPELLED_MS)
        );
        // Year 10000 in UTC panicked; year -1 was spelled as year 0000.
        assert_eq!(parse_rfc3339("9999-12-31T23:59:04.9999-09:10"), None);
        assert_eq!(parse_rfc3339("0000-01-01T00:00:00+00:01"), None);
        assert_eq!(
            parse_rfc3339("9999-12-31T23:59:59+00:01")
                .map(to_rfc3339)
                .as_deref(),
            Some("9999-12-31T23:58:59.000Z")
        );
    }

    #[test]
    fn milliseconds_convert_exactly_on_both_sides_of_1970() {
        for millis in [
            0,
            1,
            999,
            1000,
            -1,
            -999,
            -1000,
            -1001,
            1_700_000_000_123,
            EARLIEST_SPELLED_MS,
            LATEST_SPELLED_MS,
        ] {
            let moment = from_millis(millis);
            let nanos = i128::from(millis) * 1_000_000;
            assert_eq!(moment.unix_timestamp_nanos(), nanos, "{millis}");
            assert_eq!(to_millis(moment), millis, "{millis}");
        }
        // Below a millisecond rounds towards the past, before 1970 too.
        let just_before = OffsetDateTime::UNIX_EPOCH - time::Duration::nanoseconds(1);
        assert_eq!(to_millis(just_before), -1);
        assert_eq!(
            to_rfc3339(to_millis(just_before)),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn text_protocol_dates_parse() {
        let value = Value::Bytes(b"2024-01-15 10:30:00.123".to_vec());
        assert_eq!(
            from_sql(&value).map(to_rfc3339).as_deref(),
            Some("2024-01-15T10:30:00.123Z")
        );
        assert_eq!(from_sql(&Value::NULL), None);
        let whole_seconds = Value::Bytes(b"2024-01-15 10:30:00".to_vec());
        assert_eq!(
            from_sql(&whole_seconds).map(to_rfc3339).as_deref(),
            Some("2024-01-15T10:30:00.000Z")
        );
        assert_eq!(from_sql(&Value::Bytes(b"2024-01-15".to_vec())), None);
    }
}
