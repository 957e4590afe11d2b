//! Sync vocabulary shared by the merge core and the IO layer: the synced entities and their
//! names on the wire and in the database, and the record shapes the merge works on.
//! This module and its children are pure: no IO, no clock, no panics, nothing that can fail.
//! Reading rows, validating ids and timestamps, and writing results belong to the IO layer.

pub mod digest;
pub mod merge;

pub use merge::{decide, decide_derived, Outcome, Resolution};

/// The length of a value as compact JSON (the measure of `MAX_RECORD_BYTES`
/// and `MAX_PAGE_BYTES`), counted without building the text. A value that
/// cannot be serialized counts as too large for any limit.
pub fn compact_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// One kind of synced record. Each has its own table and its own merge strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entity {
    HealthMetrics,
    Medications,
    Meals,
    Exercises,
    MealPlans,
}

impl Entity {
    /// Every entity, in the order the wire contract lists them, so responses that walk all
    /// entities come out in a stable order.
    pub const ALL: [Entity; 5] = [
        Entity::HealthMetrics,
        Entity::Medications,
        Entity::Meals,
        Entity::Exercises,
        Entity::MealPlans,
    ];

    /// The position in `ALL`.
    pub fn index(self) -> usize {
        match self {
            Entity::HealthMetrics => 0,
            Entity::Medications => 1,
            Entity::Meals => 2,
            Entity::Exercises => 3,
            Entity::MealPlans => 4,
        }
    }

    /// The name in URL paths.
    pub fn slug(self) -> &'static str {
        match self {
            Entity::HealthMetrics => "health-metrics",
            Entity::Medications => "medications",
            Entity::Meals => "meals",
            Entity::Exercises => "exercises",
            Entity::MealPlans => "meal-plans",
        }
    }

    /// The database table.
    pub fn table(self) -> &'static str {
        match self {
            Entity::HealthMetrics => "health_metrics",
            Entity::Medications => "medications",
            Entity::Meals => "meals",
            Entity::Exercises => "exercises",
            Entity::MealPlans => "meal_plans",
        }
    }

    /// The key of this entity's array in bulk sync bodies; the contract spells it like the table.
    pub fn bulk_key(self) -> &'static str {
        self.table()
    }

    /// The key of the array in list responses.
    pub fn list_key(self) -> &'static str {
        match self {
            Entity::HealthMetrics => "metrics",
            Entity::Medications => "medications",
            Entity::Meals => "meals",
            Entity::Exercises => "exercises",
            Entity::MealPlans => "meal_plans",
        }
    }

    /// The entity a URL path names, or None for a path that names none.
    pub fn from_slug(slug: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|entity| entity.slug() == slug)
    }

    /// The entity a bulk body key names, or None for a key that names none.
    pub fn from_bulk_key(bulk_key: &str) -> Option<Entity> {
        Entity::ALL
            .into_iter()
            .find(|entity| entity.bulk_key() == bulk_key)
    }
}

/// A record's content, as the merge sees it. Timestamps are UTC milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Canonical lower-case UUID, already validated by the IO layer.
    pub id: String,
    pub data: serde_json::Map<String, serde_json::Value>,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

impl Record {
    /// Same data (as JSON values), same `updated_at`, same `deleted_at`.
    ///
    /// The id is left out on purpose: callers compare records held under one id, and a
    /// kept-both meal is compared after being re-keyed. Data is compared as `serde_json::Value`
    /// so key order and number spelling that parse to equal values do not matter.
    pub fn same_content(&self, other: &Record) -> bool {
        self.data == other.data
            && self.updated_at == other.updated_at
            && self.deleted_at == other.deleted_at
    }
}

/// A record the server holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub record: Record,
    pub version: u64,
}

/// A record a device pushed.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    pub record: Record,
    /// The stored version the device last saw, if it sent one.
    pub base_version: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(data: serde_json::Value, updated_at: i64, deleted_at: Option<i64>) -> Record {
        assert!(data.is_object(), "test data must be a JSON object: {data}");
        let data = match data {
            serde_json::Value::Object(fields) => fields,
            _ => serde_json::Map::new(),
        };
        Record {
            id: "3f2b8c1e-6a4d-4e5f-9a7b-1c2d3e4f5a6b".to_owned(),
            data,
            updated_at,
            deleted_at,
        }
    }

    #[test]
    fn all_lists_every_entity_in_contract_order() {
        assert_eq!(
            Entity::ALL.map(Entity::slug),
            [
                "health-metrics",
                "medications",
                "meals",
                "exercises",
                "meal-plans"
            ]
        );
    }

    #[test]
    fn tables_and_bulk_keys_use_underscores() {
        assert_eq!(
            Entity::ALL.map(Entity::table),
            [
                "health_metrics",
                "medications",
                "meals",
                "exercises",
                "meal_plans"
            ]
        );
        assert_eq!(
            Entity::ALL.map(Entity::bulk_key),
            Entity::ALL.map(Entity::table)
        );
    }

    #[test]
    fn list_keys_name_health_metrics_metrics() {
        assert_eq!(
            Entity::ALL.map(Entity::list_key),
            ["metrics", "medications", "meals", "exercises", "meal_plans"]
        );
    }

    #[test]
    fn every_slug_and_bulk_key_maps_back_to_its_entity() {
        for entity in Entity::ALL {
            assert_eq!(Entity::from_slug(entity.slug()), Some(entity));
            assert_eq!(Entity::from_bulk_key(entity.bulk_key()), Some(entity));
        }
    }

    #[test]
    fn unknown_or_misspelled_names_map_to_no_entity() {
        for name in ["", "meal_plans", "Meals", "metrics", "health metrics"] {
            assert_eq!(Entity::from_slug(name), None, "slug {name:?}");
        }
        for name in ["", "meal-plans", "MEALS", "metrics", "health-metrics"] {
            assert_eq!(Entity::from_bulk_key(name), None, "bulk key {name:?}");
        }
    }

    #[test]
    fn same_content_compares_data_as_values_and_both_timestamps() {
        let base = record(json!({"a": 1, "b": [1, 2]}), 10, None);
        let parsed = serde_json::from_str(r#"{"b":[1,2],"a":1}"#);
        assert!(parsed.is_ok(), "test literal must parse");
        let reordered: serde_json::Value = parsed.unwrap_or_default();
        assert!(base.same_content(&record(reordered, 10, None)));
        assert!(!base.same_content(&record(json!({"a": 1.0, "b": [1, 2]}), 10, None)));
        assert!(!base.same_content(&record(json!({"a": 1, "b": [1, 2]}), 11, None)));
        assert!(!base.same_content(&record(json!({"a": 1, "b": [1, 2]}), 10, Some(10))));
    }

    #[test]
    fn same_content_ignores_the_id() {
        let original = record(json!({"a": 1}), 10, None);
        let rekeyed = Record {
            id: "00000000-0000-0000-0000-000000000000".to_owned(),
            ..original.clone()
        };
        assert!(original.same_content(&rekeyed));
    }
}
