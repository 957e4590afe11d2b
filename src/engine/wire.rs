//! The engine's results as the contract's wire shapes (sections 4, 5, 6):
//! each type serializes to exactly what the client receives inside the
//! envelope's `data`, so no route builds or takes apart JSON by hand.
//! Pulled records go out as their stored JSON text (`records::Pulled`).

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;

use crate::ctx::SyncFacts;
use crate::store::clock;
use crate::store::conflicts;
use crate::store::records::Pulled;
use crate::store::repair::PrefixDigest;
use crate::sync::digest::Digest;
use crate::sync::{Entity, Record};

/// A position in the user's change sequence: its decimal digits, one
/// spelling per position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token(pub u64);

impl Serialize for Token {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl Token {
    pub fn parse(text: &str) -> Option<u64> {
        if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    }
}

/// A server time on the wire: RFC 3339, UTC, milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time(pub i64);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        clock::Rfc3339(self.0).serialize(serializer)
    }
}

/// A refused record of a push: `{id, index, code, message}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecordError {
    pub id: Option<String>,
    pub index: usize,
    pub code: &'static str,
    pub message: String,
}

/// `{id, version}` of a record the server now holds exactly as sent.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub id: String,
    pub version: u64,
}

/// A record the server holds, already parsed (a conflict's result), as a
/// pull returns it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Held<'a> {
    pub record: &'a Record,
    pub version: u64,
}

impl Serialize for Held<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("id", &self.record.id)?;
        map.serialize_entry("data", &self.record.data)?;
        map.serialize_entry("updated_at", &Time(self.record.updated_at))?;
        map.serialize_entry("deleted_at", &self.record.deleted_at.map(Time))?;
        map.serialize_entry("version", &self.version)?;
        map.end()
    }
}

/// JSON rendered once and sent as it is. A conflict's versions are
/// rendered when the conflict is found, and the answer's
/// `conflict_details` (and `server_updates`, when the server's record
/// stands) and the conflict log (section 9.4) take the same text: byte
/// for byte what the device was told, each serialized once.
#[derive(Clone, Debug)]
pub struct Rendered(pub Box<RawValue>);

impl Rendered {
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Rendered, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Rendered)
    }
}

impl PartialEq for Rendered {
    fn eq(&self, other: &Rendered) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for Rendered {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// One conflict, as `conflict_details` lists it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConflictDetail {
    pub entity_id: String,
    pub entity_type: &'static str,
    /// The record as the device sent it.
    pub client_version: Rendered,
    /// The stored record it met, as a pull returns it (`Held`).
    pub server_version: Rendered,
    pub resolution: &'static str,
}

/// What one entity's push produced.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct EntityResult {
    pub synced: u64,
    pub conflicts: u64,
    pub errors: Vec<RecordError>,
    pub conflict_details: Vec<ConflictDetail>,
    /// Conflict results: each record as the server now holds it
    /// (`Held`), rendered once.
    pub server_updates: Vec<Rendered>,
    pub applied: Vec<Applied>,
}

impl EntityResult {
    /// Adds this entity's counts to a sync's facts for the log line.
    pub fn count_into(&self, facts: &mut SyncFacts) {
        facts.stored += self.synced;
        for detail in &self.conflict_details {
            facts.add_conflict(detail.entity_type, detail.resolution);
        }
        for error in &self.errors {
            facts.add_error(error.code);
        }
    }
}

/// The answer of `POST /<slug>/sync`.
#[derive(Debug, serde::Serialize)]
pub struct PushAnswer<'a> {
    #[serde(flatten)]
    pub result: &'a EntityResult,
    pub previous_sync_token: Token,
    pub sync_token: Token,
}

/// The answer of `GET /<slug>`: the list under the entity's list key;
/// on the last page (`has_more: false`) the entity's digest at
/// `next_sync_token` (section 9.2).
#[derive(Debug)]
pub struct PullAnswer {
    pub entity: Entity,
    pub records: Vec<Pulled>,
    pub has_more: bool,
    pub next_sync_token: Token,
    pub digest: Option<Digest>,
    pub oldest_sync_token: Option<Token>,
}

impl Serialize for PullAnswer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(self.entity.list_key(), &self.records)?;
        map.serialize_entry("has_more", &self.has_more)?;
        map.serialize_entry("next_sync_token", &self.next_sync_token)?;
        map.serialize_entry("oldest_sync_token", &self.oldest_sync_token)?;
        if let Some(digest) = &self.digest {
            map.serialize_entry("digest", digest)?;
        }
        map.end()
    }
}

impl PullAnswer {
    /// The length of the answer in its envelope, at least for records
    /// whose ids need no escaping (every stored id): the records, a comma
    /// each, and room for the envelope and the cursor fields.
    pub fn len_hint(&self) -> usize {
        const FIELDS: usize = 256;
        let records: usize = self.records.iter().map(Pulled::unescaped_len).sum();
        records + self.records.len() + FIELDS
    }

    /// The counts of this page for the log line.
    pub fn facts(&self) -> SyncFacts {
        SyncFacts {
            pulled: self.records.len() as u64,
            ..SyncFacts::default()
        }
    }
}

/// The answer of `POST /sync/bulk`: a section per entity (all five), then
/// the cursor fields; on the last page every entity's digest.
#[derive(Debug)]
pub struct BulkAnswer<'a> {
    /// In `Entity::ALL` order, one per entity.
    pub results: Vec<(Entity, &'a EntityResult)>,
    /// The page of changes, in version order across entities.
    pub page: &'a [Pulled],
    pub previous_sync_token: Token,
    pub sync_token: Token,
    pub has_more: bool,
    pub sync_timestamp: Time,
    pub oldest_sync_token: Option<Token>,
    /// In `Entity::ALL` order, when `has_more` is false.
    pub digests: Option<[u64; 5]>,
}

impl Serialize for BulkAnswer<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (entity, result) in &self.results {
            let section = BulkSection {
                entity: *entity,
                result,
                page: self.page,
            };
            map.serialize_entry(entity.bulk_key(), &section)?;
        }
        map.serialize_entry("previous_sync_token", &self.previous_sync_token)?;
        map.serialize_entry("sync_token", &self.sync_token)?;
        map.serialize_entry("has_more", &self.has_more)?;
        map.serialize_entry("sync_timestamp", &self.sync_timestamp)?;
        map.serialize_entry("oldest_sync_token", &self.oldest_sync_token)?;
        if let Some(digests) = &self.digests {
            map.serialize_entry("digests", &Digests(digests))?;
        }
        map.end()
    }
}

/// `{<bulk key>: digest, …}`, all five.
struct Digests<'a>(&'a [u64; 5]);

impl Serialize for Digests<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Entity::ALL.len()))?;
        for entity in Entity::ALL {
            map.serialize_entry(entity.bulk_key(), &Digest(self.0[entity.index()]))?;
        }
        map.end()
    }
}

/// One entity's part of a bulk answer: its push result, with
/// `server_updates` holding its conflict results, then its part of the
/// page.
struct BulkSection<'a> {
    entity: Entity,
    result: &'a EntityResult,
    page: &'a [Pulled],
}

impl Serialize for BulkSection<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("synced", &self.result.synced)?;
        map.serialize_entry("conflicts", &self.result.conflicts)?;
        map.serialize_entry("conflict_details", &self.result.conflict_details)?;
        map.serialize_entry("errors", &self.result.errors)?;
        map.serialize_entry("applied", &self.result.applied)?;
        map.serialize_entry(
            "server_updates",
            &Updates {
                resolved: &self.result.server_updates,
                pulled: self.page,
                entity: self.entity,
            },
        )?;
        map.end()
    }
}

struct Updates<'a> {
    resolved: &'a [Rendered],
    pulled: &'a [Pulled],
    entity: Entity,
}

impl Serialize for Updates<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for held in self.resolved {
            seq.serialize_element(held)?;
        }
        for pulled in self.pulled.iter().filter(|row| row.entity == self.entity) {
            seq.serialize_element(pulled)?;
        }
        seq.end()
    }
}

/// One entity in `GET /sync/status`.
#[derive(Debug, serde::Serialize)]
pub struct EntityStatus {
    /// Records, tombstones included.
    pub count: u64,
    pub max_version: u64,
    /// The entity's digest at the answer's `sync_token`.
    pub digest: Digest,
}

/// The answer of `GET /sync/status`.
#[derive(Debug)]
pub struct StatusAnswer {
    pub entities: Vec<(Entity, EntityStatus)>,
    pub sync_token: Token,
    pub oldest_sync_token: Option<Token>,
}

impl Serialize for StatusAnswer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entities.len() + 2))?;
        for (entity, status) in &self.entities {
            map.serialize_entry(entity.bulk_key(), status)?;
        }
        map.serialize_entry("sync_token", &self.sync_token)?;
        map.serialize_entry("oldest_sync_token", &self.oldest_sync_token)?;
        map.end()
    }
}

/// `{count, digest}` of one child prefix.
#[derive(Debug, serde::Serialize)]
struct Child {
    count: u64,
    digest: Digest,
}

/// The sixteen children, keyed by their prefixes, in hex order.
#[derive(Debug)]
struct Children(Vec<(String, Child)>);

impl Serialize for Children {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(prefix, child)| (prefix, child)))
    }
}

/// The answer of `GET /<slug>/digest` (section 9.3): `records` for a
/// leaf of at most 64, else all sixteen `children`.
#[derive(Debug)]
pub struct PrefixAnswer {
    pub prefix: String,
    pub found: PrefixDigest,
}

impl Serialize for PrefixAnswer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct IdVersion<'a> {
            id: &'a str,
            version: u64,
        }
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("prefix", &self.prefix)?;
        map.serialize_entry("sync_token", &Token(self.found.sync_token))?;
        map.serialize_entry("count", &self.found.count)?;
        map.serialize_entry("digest", &Digest(self.found.digest))?;
        if let Some(records) = &self.found.records {
            let records: Vec<IdVersion> = records
                .iter()
                .map(|(id, version)| IdVersion {
                    id,
                    version: *version,
                })
                .collect();
            map.serialize_entry("records", &records)?;
        }
        if let Some(children) = &self.found.children {
            let children: Vec<(String, Child)> = children
                .iter()
                .enumerate()
                .map(|(digit, (count, digest))| {
                    let child = Child {
                        count: *count,
                        digest: Digest(*digest),
                    };
                    (format!("{}{digit:x}", self.prefix), child)
                })
                .collect();
            map.serialize_entry("children", &Children(children))?;
        }
        map.end()
    }
}

/// The answer of `POST /<slug>/fetch` (section 9.3).
#[derive(Debug)]
pub struct FetchAnswer {
    pub entity: Entity,
    pub records: Vec<Pulled>,
    pub sync_token: Token,
}

impl Serialize for FetchAnswer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry(self.entity.list_key(), &self.records)?;
        map.serialize_entry("sync_token", &self.sync_token)?;
        map.end()
    }
}

/// The answer of `GET /sync/conflicts` (section 9.4).
#[derive(Debug, serde::Serialize)]
pub struct ConflictsAnswer {
    pub conflicts: Vec<conflicts::Entry>,
    pub has_more: bool,
    pub next_after: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_answer_in_its_envelope_fits_its_length_hint() {
        use serde_json::value::RawValue;
        let record = |version: u64| Pulled {
            entity: Entity::HealthMetrics,
            id: "3f2b8c1e-1234-4abc-8def-0123456789ab".to_owned(),
            data: RawValue::from_string(r#"{"weight":65.5,"note":"x"}"#.to_owned()).unwrap(),
            updated_at: 1_700_000_000_123,
            deleted_at: Some(1_700_000_000_456),
            version,
        };
        for count in [0, 1, 1000] {
            let answer = PullAnswer {
                entity: Entity::HealthMetrics,
                records: (1..=count).map(|v| record(u64::MAX - v)).collect(),
                has_more: true,
                next_sync_token: Token(u64::MAX),
                digest: Some(Digest(u64::MAX)),
                oldest_sync_token: Some(Token(u64::MAX)),
            };
            let response = crate::reply::ok(200, &answer);
            assert!(response.body.len() <= answer.len_hint(), "{count} records");
        }
    }

    #[test]
    fn sync_tokens_are_plain_decimal_positions() {
        assert_eq!(Token::parse("0"), Some(0));
        assert_eq!(Token::parse("42"), Some(42));
        assert_eq!(Token::parse("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "abc",
            " 1",
            "18446744073709551616",
            "0x10",
        ] {
            assert_eq!(Token::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            serde_json::to_string(&Token(7)).ok().as_deref(),
            Some("\"7\"")
        );
    }

    #[test]
    fn a_push_answer_is_flat_with_string_tokens() {
        let result = EntityResult {
            synced: 1,
            applied: vec![Applied {
                id: "a".into(),
                version: 3,
            }],
            ..EntityResult::default()
        };
        let answer = PushAnswer {
            result: &result,
            previous_sync_token: Token(2),
            sync_token: Token(3),
        };
        let value = serde_json::to_value(&answer).unwrap_or_default();
        assert_eq!(
            value,
            serde_json::json!({
                "synced": 1, "conflicts": 0, "errors": [], "conflict_details": [],
                "server_updates": [], "applied": [{"id": "a", "version": 3}],
                "previous_sync_token": "2", "sync_token": "3",
            })
        );
    }
}
