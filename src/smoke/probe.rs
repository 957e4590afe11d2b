//! The body-size probe: the largest request body that reaches the binary
//! whole through the host, found by a bounded binary search. A probe is an
//! authenticated POST to /sync/bulk whose body is one JSON object with a
//! key the contract does not know (`Bodies`): the binary parses all of it
//! and refuses it, 400 `VALIDATION_ERROR` (or 413 above `MAX_BODY_BYTES`),
//! storing nothing. A host limit answers with a page of its own, cuts the
//! upload off, or hands the binary a truncated body, which it answers 400
//! `INVALID_JSON`: mod_fcgid under a smaller `LimitRequestBody` does that.

use super::client::{self, Call, Client, Envelope};

/// Probe sizes are multiples of this (the ceiling excepted), and the
/// answer is exact to it.
pub const STEP: u64 = 1024;

/// No search sends more probes than this.
pub const MAX_PROBES: usize = 20;

/// What one probe showed.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The binary answered: the body reached it.
    Reached,
    /// The host answered instead, or cut the upload off.
    Refused(String),
}

/// The search's result.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    /// The largest size that reached the binary.
    pub cap: u64,
    /// The smallest size refused, with how; None when the ceiling reached.
    pub refused: Option<(u64, String)>,
    pub probes: usize,
}

/// Searches sizes from `STEP` to `ceiling` (at least `2 * STEP`): first
/// `STEP` (which must reach), then the ceiling (done if it reaches), then
/// KiB-aligned halving. `Err` when a probe could not be judged.
pub fn search(
    ceiling: u64,
    probe: &mut dyn FnMut(u64) -> Result<Verdict, String>,
) -> Result<Found, String> {
    let mut probes = 2;
    if let Verdict::Refused(how) = probe(STEP)? {
        return Err(format!(
            "even a {STEP}-byte body does not reach the binary: {how}"
        ));
    }
    let mut refused = match probe(ceiling)? {
        Verdict::Reached => {
            return Ok(Found {
                cap: ceiling,
                refused: None,
                probes: 2,
            })
        }
        Verdict::Refused(how) => (ceiling, how),
    };
    let mut reached = STEP;
    // Bounded by the halving alone for any ceiling up to 256 MiB; the
    // count guards against a ceiling past that.
    while refused.0 - reached > STEP && probes < MAX_PROBES {
        let middle = ((reached + refused.0) / 2 / STEP * STEP).max(reached + STEP);
        probes += 1;
        match probe(middle)? {
            Verdict::Reached => reached = middle,
            Verdict::Refused(how) => refused = (middle, how),
        }
    }
    Ok(Found {
        cap: reached,
        refused: Some(refused),
        probes,
    })
}

/// The key of the probe bodies: unknown to the contract, so a bulk that
/// carries it is refused whole (section 6).
const PROBE_KEY: &[u8] = b"{\"smoke_probe\":\"";
const PROBE_END: &[u8] = b"\"}";

/// Probe bodies of any size up to a ceiling, cut from one buffer: the
/// object's opening, then filler, closed at the size asked.
pub struct Bodies {
    buffer: Vec<u8>,
}

impl Bodies {
    pub fn up_to(ceiling: u64) -> Result<Bodies, String> {
        let length = usize::try_from(ceiling).map_err(|error| error.to_string())?;
        let mut buffer = vec![b'x'; length.max(PROBE_KEY.len() + PROBE_END.len())];
        buffer[..PROBE_KEY.len()].copy_from_slice(PROBE_KEY);
        Ok(Bodies { buffer })
    }

    /// The body of exactly `size` bytes, valid JSON, for `use_body`.
    pub fn with<T>(&mut self, size: u64, use_body: impl FnOnce(&[u8]) -> T) -> Result<T, String> {
        let end = usize::try_from(size)
            .ok()
            .filter(|end| (PROBE_KEY.len() + PROBE_END.len()..=self.buffer.len()).contains(end))
            .ok_or_else(|| format!("no {size}-byte probe body"))?;
        let close = end - PROBE_END.len();
        self.buffer[close..end].copy_from_slice(PROBE_END);
        let result = use_body(&self.buffer[..end]);
        self.buffer[close..end].fill(b'x');
        Ok(result)
    }
}

/// One probe of `size` bytes, judged by who answered and how.
pub fn send(
    client: &Client,
    token: &str,
    bodies: &mut Bodies,
    size: u64,
) -> Result<Verdict, String> {
    bodies.with(size, |body| judge(client, token, body, size))?
}

fn judge(client: &Client, token: &str, body: &[u8], size: u64) -> Result<Verdict, String> {
    let call = Call {
        expect_continue: true,
        ..Call::with_body("POST", "/sync/bulk", Some(token), body)
    };
    match client.send(&call) {
        Err(why) if client::is_cut_off(&why) => Ok(Verdict::Refused(why)),
        Err(why) => Err(why),
        Ok(answer) => match answer.envelope() {
            // Parsed whole and refused for its unknown key, or refused
            // by its size (whole or not, the binary does not read it).
            Ok(Envelope::Failure { code, .. })
                if matches!(
                    (answer.status, code.as_str()),
                    (400, "VALIDATION_ERROR") | (413, "PAYLOAD_TOO_LARGE")
                ) =>
            {
                Ok(Verdict::Reached)
            }
            // The JSON sent is valid: the binary got it cut short.
            Ok(Envelope::Failure { code, .. })
                if answer.status == 400 && code == "INVALID_JSON" =>
            {
                Ok(Verdict::Refused(
                    "the host hands the binary a truncated body".into(),
                ))
            }
            Ok(Envelope::Failure { code, message }) => Err(format!(
                "a {size}-byte probe got HTTP {} {code}: {message}",
                answer.status
            )),
            Ok(Envelope::Success(_)) => Err(format!(
                "a {size}-byte bulk with an unknown key was accepted (HTTP {}), \
                 which the contract refuses",
                answer.status
            )),
            Err(_) => Ok(Verdict::Refused(format!(
                "the host answers HTTP {}{}",
                answer.status,
                answer
                    .content_type
                    .as_deref()
                    .and_then(|value| value.split(';').next())
                    .map(|value| format!(", {value}"))
                    .unwrap_or_default()
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that lets bodies up to `cap` through.
    fn search_with(cap: u64, ceiling: u64) -> Result<Found, String> {
        search(ceiling, &mut |size| {
            Ok(if size <= cap {
                Verdict::Reached
            } else {
                Verdict::Refused(format!("{size} refused"))
            })
        })
    }

    #[test]
    fn the_cap_is_found_to_the_kib_within_the_probe_budget() {
        let mib = 1024 * 1024;
        let cases = [
            (131_072, 5 * mib),
            (16 * mib, 17 * mib),
            (64 * mib, 65 * mib),
            (131_072 + 700, 5 * mib),
            (5_000_000, 5_242_880),
            (2048, 256 * mib),
            (256 * mib - 1, 256 * mib),
            (1024, 3000),
        ];
        for (cap, ceiling) in cases {
            let found = search_with(cap, ceiling);
            let found = found.as_ref().ok();
            let got = found.map_or(0, |f| f.cap);
            assert!(got <= cap && cap - got < STEP, "cap {cap}, found {found:?}");
            if cap % STEP == 0 {
                assert_eq!(got, cap, "a KiB-aligned cap is found exactly");
            }
            assert!(
                found.is_some_and(|f| f.probes <= MAX_PROBES),
                "cap {cap}: {found:?}"
            );
            assert!(found
                .and_then(|f| f.refused.as_ref())
                .is_some_and(|(size, _)| *size > cap && *size - got <= STEP));
        }
    }

    #[test]
    fn every_probe_body_is_one_json_object_of_the_size_asked() {
        let mut bodies = Bodies::up_to(4096).unwrap_or_else(|e| panic!("{e}"));
        for size in [1024, 4096, 2048, 1024] {
            let parsed = bodies.with(size, |body| {
                assert_eq!(body.len() as u64, size);
                serde_json::from_slice::<serde_json::Value>(body).map(|value| {
                    value
                        .as_object()
                        .map(|map| map.keys().cloned().collect::<Vec<_>>())
                })
            });
            assert!(
                matches!(&parsed, Ok(Ok(Some(keys))) if keys == &["smoke_probe"]),
                "{size}: {parsed:?}"
            );
        }
        assert!(bodies.with(4097, |_| ()).is_err());
        assert!(bodies.with(3, |_| ()).is_err());
    }

    #[test]
    fn a_host_that_takes_the_ceiling_costs_two_probes() {
        let found = search_with(u64::MAX, 5_242_880);
        assert_eq!(
            found,
            Ok(Found {
                cap: 5_242_880,
                refused: None,
                probes: 2
            })
        );
    }

    #[test]
    fn a_host_that_refuses_a_kib_is_a_failure() {
        assert!(search_with(100, 5_242_880).is_err_and(|e| e.contains("1024-byte")));
    }
}
