//! The state digest of contract section 9.2: a record's hash is the first
//! 8 bytes of SHA-256 over `<id>:<version>` (lower-case id, decimal
//! version) read as a big-endian integer, and an entity's digest is the
//! XOR of its records' hashes. XOR makes it incremental: a write XORs out
//! the hash of the (id, version) it replaces and XORs in the new one.
//! Pure: no IO, cannot fail.

use sha2::{Digest as _, Sha256};

/// The hash of one stored record version.
pub fn record_hash(id: &str, version: u64) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(id.as_bytes());
    hasher.update(b":");
    hasher.update(version.to_string().as_bytes());
    let hash = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// The change a write makes to its entity's digest: the hash of the
/// version it replaces (none for a new row) out, the new one in.
pub fn write_delta(id: &str, old_version: Option<u64>, new_version: u64) -> u64 {
    let old = old_version.map_or(0, |version| record_hash(id, version));
    old ^ record_hash(id, new_version)
}

/// A digest as the wire spells it: 16 lower-case hex digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest(pub u64);

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The digest of a set of `(id, version)` pairs.
pub fn of<'a>(records: impl IntoIterator<Item = (&'a str, u64)>) -> Digest {
    Digest(
        records
            .into_iter()
            .fold(0, |acc, (id, version)| acc ^ record_hash(id, version)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_hash_is_the_first_eight_bytes_of_sha256_big_endian() {
        // sha256("00000000-0000-4000-8000-000000000001:1"), first 8 bytes.
        let id = "00000000-0000-4000-8000-000000000001";
        let full = Sha256::digest(format!("{id}:1").as_bytes());
        let expected = full[..8]
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
        assert_eq!(record_hash(id, 1), expected);
        assert_ne!(record_hash(id, 1), record_hash(id, 2));
    }

    #[test]
    fn digests_are_sixteen_hex_digits_and_zero_when_empty() {
        assert_eq!(of([]).to_string(), "0000000000000000");
        assert_eq!(Digest(0xab).to_string(), "00000000000000ab");
        assert_eq!(
            serde_json::to_string(&Digest(u64::MAX)).ok().as_deref(),
            Some("\"ffffffffffffffff\"")
        );
    }

    #[test]
    fn write_deltas_telescope_to_the_digest_of_the_final_state() {
        let (a, b) = (
            "00000000-0000-4000-8000-00000000000a",
            "00000000-0000-4000-8000-00000000000b",
        );
        let mut digest = 0;
        digest ^= write_delta(a, None, 1);
        digest ^= write_delta(b, None, 2);
        digest ^= write_delta(a, Some(1), 3);
        digest ^= write_delta(a, Some(3), 4);
        assert_eq!(Digest(digest), of([(a, 4), (b, 2)]));
    }
}
