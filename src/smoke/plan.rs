//! What the smoke writes and what the contract says must come back: three
//! records of every entity (one a tombstone), one device's edits (sent as
//! a bulk), and another device's concurrent edits, one conflict of each
//! resolution of section 4, with the result the contract prescribes for
//! each, worked out by hand from its text. Pure: times and ids come in.

use serde_json::{json, Value};

use crate::sync::Entity;

/// The edit times, UTC milliseconds: every record is written at `first`;
/// device A edits at `device_a`; device B, which saw only the first
/// versions, edits at `device_b_earlier` (before A) or `device_b_later`.
#[derive(Clone, Copy, Debug)]
pub struct Times {
    pub first: i64,
    pub device_b_earlier: i64,
    pub device_a: i64,
    pub device_b_later: i64,
}

impl Times {
    /// Times in the recent past, a minute apart: well inside the
    /// contract's bounds (after 2000, at most 5 minutes ahead).
    pub fn before(now_millis: i64) -> Times {
        let first = now_millis - 10 * 60_000;
        Times {
            first,
            device_b_earlier: first + 30_000,
            device_a: first + 60_000,
            device_b_later: first + 120_000,
        }
    }
}

/// A record to push.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// The id as sent; the server stores it lower-case.
    pub id_sent: String,
    pub data: Value,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

impl Planned {
    pub fn id(&self) -> String {
        self.id_sent.to_ascii_lowercase()
    }
}

/// The first three records of an entity, from three fresh ids: two live
/// records and a tombstone. One id of health metrics is sent in upper
/// case (the contract stores ids lower-case); the data holds what JSON
/// must survive (a 64-bit integer, non-ASCII text, deep nesting).
pub fn first_records(entity: Entity, ids: [String; 3], times: Times) -> Vec<Planned> {
    let [a, b, c] = ids;
    let (data_a, data_b, data_c) = match entity {
        Entity::HealthMetrics => (
            json!({"type": "weight", "value": 80, "unit": "kg", "notes": "morning",
                   "bodyMeasurements": {"waist": 90}}),
            json!({"type": "steps", "value": 9_007_199_254_740_993_u64,
                   "label": "Grüße, 体重 ✓ \"quoted\"\n"}),
            json!({"type": "heart_rate", "value": 61}),
        ),
        Entity::Medications => (
            json!({"name": "Ibuprofen", "dose": "200 mg", "sideEffects": ["nausea"]}),
            json!({"name": "Vitamin D", "dose": "1000 IU", "sideEffects": []}),
            json!({"name": "Old prescription"}),
        ),
        Entity::Meals => (
            json!({"date": "2024-05-01", "name": "Lunch", "calories": 650}),
            json!({"date": "2024-05-01", "name": "Breakfast", "items": ["oats", "milk"]}),
            json!({"date": "2024-04-30", "name": "Snack"}),
        ),
        Entity::Exercises => (
            json!({"kind": "run", "minutes": 30}),
            json!({"kind": "swim", "minutes": 45,
                   "sets": [{"laps": 10, "stroke": {"name": "crawl", "drills": [1, 2, {"kick": true}]}}]}),
            json!({"kind": "yoga", "minutes": 20}),
        ),
        Entity::MealPlans => (
            json!({"name": "Week 1", "days": {"mon": ["oats"], "tue": ["eggs"]}}),
            json!({"name": "Week 2", "days": {}, "share": 0.5}),
            json!({"name": "Draft"}),
        ),
    };
    let b = if entity == Entity::HealthMetrics {
        b.to_ascii_uppercase()
    } else {
        b
    };
    vec![
        Planned {
            id_sent: a,
            data: data_a,
            updated_at: times.first,
            deleted_at: None,
        },
        Planned {
            id_sent: b,
            data: data_b,
            updated_at: times.first,
            deleted_at: None,
        },
        Planned {
            id_sent: c,
            data: data_c,
            updated_at: times.first,
            deleted_at: Some(times.first),
        },
    ]
}

/// Device A's edit of the entity's first record (`id`), sent in the bulk
/// with the version it saw; for medications, a new record (`new_id`)
/// instead, so the bulk also inserts.
pub fn device_a_edit(entity: Entity, id: &str, new_id: &str, times: Times) -> Planned {
    let (id, data) = match entity {
        Entity::HealthMetrics => (
            id,
            json!({"type": "weight", "value": 81, "unit": "kg", "notes": "morning",
                   "bodyMeasurements": {"waist": 90}, "source": "scale"}),
        ),
        Entity::Medications => (
            new_id,
            json!({"name": "Melatonin", "dose": "3 mg", "sideEffects": ["drowsiness"]}),
        ),
        Entity::Meals => (
            id,
            json!({"date": "2024-05-01", "name": "Lunch", "calories": 700}),
        ),
        Entity::Exercises => (id, json!({"kind": "run", "minutes": 35})),
        Entity::MealPlans => (
            id,
            json!({"name": "Week 1", "days": {"mon": ["oats"], "tue": ["eggs"], "wed": ["soup"]}}),
        ),
    };
    Planned {
        id_sent: id.to_owned(),
        data,
        updated_at: times.device_a,
        deleted_at: None,
    }
}

/// The resolutions of section 4, one conflict each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    ServerWins,
    ClientWins,
    Merged,
    KeptBoth,
}

impl Resolution {
    pub const ALL: [Resolution; 4] = [
        Resolution::ServerWins,
        Resolution::ClientWins,
        Resolution::Merged,
        Resolution::KeptBoth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::ServerWins => "server_wins",
            Resolution::ClientWins => "client_wins",
            Resolution::Merged => "merged",
            Resolution::KeptBoth => "kept_both",
        }
    }
}

/// One forced conflict: device B's edit of a record device A has edited
/// since B last saw it, and what the server must hold afterwards.
#[derive(Clone, Debug)]
pub struct Conflict {
    /// Device B's record, sent with the first version as `base_version`.
    pub client: Planned,
    /// What the original id must hold afterwards (data, `updated_at`).
    pub held_data: Value,
    pub held_updated_at: i64,
}

/// The conflict of one resolution, against device A's edit `stored` of
/// the record `id`.
pub fn conflict(resolution: Resolution, id: &str, stored: &Planned, times: Times) -> Conflict {
    let planned = |data: Value, updated_at: i64| Planned {
        id_sent: id.to_owned(),
        data,
        updated_at,
        deleted_at: None,
    };
    match resolution {
        // Exercises are last write wins; B wrote before A: the stored
        // record stays as it is.
        Resolution::ServerWins => Conflict {
            client: planned(
                json!({"kind": "run", "minutes": 25}),
                times.device_b_earlier,
            ),
            held_data: stored.data.clone(),
            held_updated_at: stored.updated_at,
        },
        // Meal plans are last write wins; B wrote after A: B's record.
        Resolution::ClientWins => {
            let client = planned(
                json!({"name": "Week 1", "days": {"mon": ["granola"]}}),
                times.device_b_later,
            );
            Conflict {
                held_data: client.data.clone(),
                held_updated_at: client.updated_at,
                client,
            }
        }
        // Health metrics merge field by field: every field of the later
        // side (B), plus fields only A has (`source`); bodyMeasurements
        // united by key, the later side winning `waist`; notes combined,
        // the later text first, joined by a blank line. The later side's
        // updated_at.
        Resolution::Merged => Conflict {
            client: planned(
                json!({"type": "weight", "value": 79, "unit": "kg", "notes": "after a run",
                       "bodyMeasurements": {"waist": 89, "hips": 100}, "mood": "good"}),
                times.device_b_later,
            ),
            held_data: json!({"type": "weight", "value": 79, "unit": "kg",
                              "notes": "after a run\n\nmorning",
                              "bodyMeasurements": {"waist": 89, "hips": 100},
                              "mood": "good", "source": "scale"}),
            held_updated_at: times.device_b_later,
        },
        // Meals on different dates are both kept: A's stays under the id,
        // B's is stored under an id derived from (id, date).
        Resolution::KeptBoth => Conflict {
            client: planned(
                json!({"date": "2024-05-02", "name": "Lunch", "calories": 650}),
                times.device_b_later,
            ),
            held_data: stored.data.clone(),
            held_updated_at: stored.updated_at,
        },
    }
}

/// The entity whose conflict shows `resolution`.
pub fn entity_of(resolution: Resolution) -> Entity {
    match resolution {
        Resolution::ServerWins => Entity::Exercises,
        Resolution::ClientWins => Entity::MealPlans,
        Resolution::Merged => Entity::HealthMetrics,
        Resolution::KeptBoth => Entity::Meals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{self, Incoming, Outcome, Record, Stored};

    fn record(planned: &Planned) -> Record {
        Record {
            id: planned.id(),
            data: planned.data.as_object().cloned().unwrap_or_default(),
            updated_at: planned.updated_at,
            deleted_at: planned.deleted_at,
        }
    }

    /// The expectations above are read from the contract by hand; the
    /// server's merge was written from the same text. They must agree.
    #[test]
    fn every_planned_conflict_resolves_as_the_contract_says() {
        let times = Times::before(1_750_000_000_000);
        let id = "0b9f1f3e-3c1a-4f0e-9d55-0d6a4f3a2b10";
        for resolution in Resolution::ALL {
            let entity = entity_of(resolution);
            let stored = device_a_edit(entity, id, id, times);
            let case = conflict(resolution, id, &stored, times);
            let incoming = Incoming {
                record: record(&case.client),
                base_version: Some(1),
            };
            let held = Stored {
                record: record(&stored),
                version: 2,
            };
            // The smoke's records are small: no merge nears the size limit.
            let outcome = sync::decide(entity, &incoming, Some(&held), usize::MAX);
            let held_now = Record {
                id: id.to_owned(),
                data: case.held_data.as_object().cloned().unwrap_or_default(),
                updated_at: case.held_updated_at,
                deleted_at: None,
            };
            match (resolution, outcome) {
                (
                    Resolution::ServerWins,
                    Outcome::Conflict {
                        resolution: sync::Resolution::ServerWins,
                        store: None,
                    },
                ) => assert_eq!(held_now, held.record),
                (
                    Resolution::ClientWins,
                    Outcome::Conflict {
                        resolution: sync::Resolution::ClientWins,
                        store: Some(stored),
                    },
                )
                | (
                    Resolution::Merged,
                    Outcome::Conflict {
                        resolution: sync::Resolution::Merged,
                        store: Some(stored),
                    },
                ) => assert_eq!(stored, held_now, "{resolution:?}"),
                (Resolution::KeptBoth, Outcome::KeepBoth { derived_id }) => {
                    assert_ne!(derived_id, id);
                    assert_eq!(held_now, held.record);
                }
                (resolution, outcome) => panic!("{resolution:?}: the merge gave {outcome:?}"),
            }
        }
    }

    #[test]
    fn times_are_in_order_and_in_the_past() {
        let now = 1_750_000_000_000;
        let times = Times::before(now);
        assert!(times.first < times.device_b_earlier);
        assert!(times.device_b_earlier < times.device_a);
        assert!(times.device_a < times.device_b_later);
        assert!(times.device_b_later < now);
    }
}
