//! Push, pull, bulk and status (contract sections 3 to 7) through the
//! binary: every rule, for every entity where it applies, and isolation
//! between users.

use serde_json::{json, Value};

use crate::support::{register, Resp, TestDb, User, ENTITIES};

const T1: &str = "2024-03-01T10:00:00.000Z";
const T2: &str = "2024-03-01T11:00:00.000Z";
const T3: &str = "2024-03-01T12:00:00.000Z";

fn id(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

fn rec(id: &str, data: Value, updated_at: &str) -> Value {
    json!({"id": id, "data": data, "updated_at": updated_at})
}

fn push(db: &TestDb, user: &User, slug: &str, key: &str, records: Value) -> Resp {
    db.post(&format!("/api/{slug}/sync"), &json!({ key: records }))
        .token(&user.token)
        .send()
}

fn pull(db: &TestDb, user: &User, slug: &str, query: &str) -> Resp {
    db.get(&format!("/api/{slug}?{query}"))
        .token(&user.token)
        .send()
}

fn setup() -> (TestDb, User) {
    let db = TestDb::new();
    let user = register(&db, "sync@example.com");
    (db, user)
}

#[test]
fn every_entity_inserts_pulls_and_reports_versions_and_tokens() {
    let (db, user) = setup();
    let mut expected_version = 0;
    for (slug, key, _) in ENTITIES {
        let response = push(
            &db,
            &user,
            slug,
            key,
            json!([rec(
                &id(1),
                json!({"a": 1, "big": 9007199254740993u64, "f": 0.1, "s": "ü\u{1F600}"}),
                T1
            )]),
        );
        let data = response.ok();
        expected_version += 1;
        assert_eq!(data["synced"], 1);
        assert_eq!(data["conflicts"], 0);
        assert_eq!(
            data["applied"],
            json!([{"id": id(1), "version": expected_version}])
        );
        assert_eq!(
            data["previous_sync_token"],
            (expected_version - 1).to_string()
        );
        assert_eq!(data["sync_token"], expected_version.to_string());
        let pulled = pull(&db, &user, slug, "").ok().clone();
        let list = pulled[key].as_array().cloned().unwrap_or_default();
        assert_eq!(list.len(), 1, "{slug}");
        assert_eq!(
            list[0]["data"],
            json!({"a": 1, "big": 9007199254740993u64, "f": 0.1, "s": "ü\u{1F600}"})
        );
        assert_eq!(list[0]["updated_at"], T1);
        assert_eq!(list[0]["deleted_at"], Value::Null);
        assert_eq!(list[0]["version"], expected_version);
        assert_eq!(pulled["has_more"], false);
        assert_eq!(pulled["next_sync_token"], expected_version.to_string());
    }
    let status = db
        .get("/api/sync/status")
        .token(&user.token)
        .send()
        .ok()
        .clone();
    for (_, _, bulk_key) in ENTITIES {
        assert_eq!(status[bulk_key]["count"], 1);
    }
    assert_eq!(status["meal_plans"]["max_version"], 5);
    assert_eq!(status["sync_token"], "5");
}

/// A pull sends each stored `data` as its text, spacing included (MySQL's
/// `JSON` type prints `{"a": 1}`), and a row edited by hand with
/// whitespace around the object is still sent, trimmed.
#[test]
fn stored_data_is_sent_as_its_text() {
    let (db, user) = setup();
    let records = json!([
        rec(&id(1), json!({"a": 1}), T1),
        rec(&id(2), json!({"b": 2}), T1)
    ]);
    push(&db, &user, "health-metrics", "metrics", records).ok();
    db.exec(&format!(
        "UPDATE health_metrics SET data = '{{\"a\": [1, 2]}}' WHERE id = '{}'",
        id(1)
    ));
    db.exec(&format!(
        "UPDATE health_metrics SET data = ' \n{{\"b\":2}}\t' WHERE id = '{}'",
        id(2)
    ));
    let pulled = pull(&db, &user, "health-metrics", "");
    let body = String::from_utf8_lossy(&pulled.raw_body).into_owned();
    assert!(body.contains(r#""data":{"a": [1, 2]},"#), "{body}");
    assert!(body.contains(r#""data":{"b":2},"#), "{body}");
    assert_eq!(pulled.data()["metrics"][1]["data"], json!({"b": 2}));
}

#[test]
fn ids_are_case_insensitive_and_stored_lower_case() {
    let (db, user) = setup();
    let upper = "AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE";
    push(
        &db,
        &user,
        "meals",
        "meals",
        json!([rec(upper, json!({"v": 1}), T1)]),
    )
    .ok();
    let data = push(
        &db,
        &user,
        "meals",
        "meals",
        json!([rec(&upper.to_lowercase(), json!({"v": 2}), T2)]),
    )
    .ok()
    .clone();
    assert_eq!(data["synced"], 1);
    let rows: Vec<String> = db.query("SELECT id FROM meals");
    assert_eq!(rows, vec![upper.to_lowercase()]);
}

#[test]
fn bad_records_go_to_errors_and_the_rest_commit() {
    let (db, user) = setup();
    let now = time::OffsetDateTime::now_utc();
    let future = (now + time::Duration::minutes(10))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    // Depth as JSON_DEPTH counts it (what MariaDB enforces): 32 objects
    // around a scalar is 33 levels, 31 objects is 32.
    let nested = (0..32).fold(json!(1), |inner, _| json!({ "n": inner }));
    let records = json!([
        rec(&id(1), json!({}), T1),                                   // 0 ok
        rec("not-a-uuid", json!({}), T1),                             // 1
        rec("00000000-0000-0000-0000-000000000000", json!({}), T1),   // 2 nil
        rec("{aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee}", json!({}), T1), // 3 braced
        rec(&id(2), json!([1, 2]), T1),                               // 4 data not an object
        {"id": id(3), "updated_at": T1},                              // 5 data missing
        rec(&id(4), json!({}), "2024-03-01T10:00:00"),                // 6 no offset
        rec(&id(5), json!({}), &future),                              // 7 clock skew
        rec(&id(6), json!({}), "1999-12-31T23:59:59.000Z"),           // 8 clock skew
        rec(&id(1).to_uppercase(), json!({}), T1),                    // 9 duplicate
        rec(&id(7), nested, T1),                                      // 10 too deep
        rec(&id(8), json!({"x": "y".repeat(70_000)}), T1),            // 11 too large
        {"id": id(9), "data": {}, "updated_at": T1, "base_version": "3"}, // 12
        "a string",                                                   // 13
        {"id": id(10), "data": {}, "updated_at": T1, "deleted_at": &future}, // 14 clock skew
        rec(&id(11), (0..31).fold(json!(1), |inner, _| json!({ "n": inner })), T1), // 15 ok: 32 levels
        rec(&id(12), json!({}), "9999-12-31T23:00:00-02:00"),         // 16 year 10000 in UTC
    ]);
    let data = push(&db, &user, "exercises", "exercises", records)
        .ok()
        .clone();
    assert_eq!(data["synced"], 2);
    let errors = data["errors"].as_array().cloned().unwrap_or_default();
    let codes: Vec<(u64, &str)> = errors
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap_or(99),
                e["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            (1, "VALIDATION_ERROR"),
            (2, "VALIDATION_ERROR"),
            (3, "VALIDATION_ERROR"),
            (4, "VALIDATION_ERROR"),
            (5, "VALIDATION_ERROR"),
            (6, "VALIDATION_ERROR"),
            (7, "CLOCK_SKEW"),
            (8, "CLOCK_SKEW"),
            (9, "DUPLICATE_ID"),
            (10, "VALIDATION_ERROR"),
            (11, "VALIDATION_ERROR"),
            (12, "VALIDATION_ERROR"),
            (13, "VALIDATION_ERROR"),
            (14, "CLOCK_SKEW"),
            (16, "VALIDATION_ERROR"),
        ]
    );
    assert_eq!(errors[0]["id"], "not-a-uuid");
    assert_eq!(errors[12]["id"], Value::Null);
    assert!(errors.iter().all(|e| e["message"].is_string()));
    assert_eq!(db.count("SELECT COUNT(*) FROM exercises"), 2);
}

#[test]
fn whole_request_limits_are_413_and_store_nothing() {
    let (mut db, user) = setup();
    db.set("MAX_BATCH", "3");
    let records: Vec<Value> = (0..4).map(|n| rec(&id(n + 1), json!({}), T1)).collect();
    push(&db, &user, "meals", "meals", json!(records)).expect(413, "PAYLOAD_TOO_LARGE");
    let bulk = json!({"meals": [rec(&id(1), json!({}), T1), rec(&id(2), json!({}), T1)], "exercises": [rec(&id(3), json!({}), T1), rec(&id(4), json!({}), T1)]});
    db.post("/api/sync/bulk", &bulk)
        .token(&user.token)
        .send()
        .expect(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM meals") + db.count("SELECT COUNT(*) FROM exercises"),
        0
    );
    push(&db, &user, "meals", "meals", json!("nope")).expect(400, "VALIDATION_ERROR");
    db.post("/api/meals/sync", &json!({"metrics": []}))
        .token(&user.token)
        .send()
        .expect(400, "VALIDATION_ERROR");
}

#[test]
fn a_retry_changes_nothing_and_takes_no_version() {
    let (db, user) = setup();
    let record = rec(&id(1), json!({"a": 1, "b": [1, 2]}), T1);
    let first = push(&db, &user, "medications", "medications", json!([record]))
        .ok()
        .clone();
    // Same value, other spelling: key order and number format.
    let again = json!({"id": id(1), "updated_at": "2024-03-01T11:00:00.000+01:00", "data": {"b": [1, 2], "a": 1}});
    let second = push(&db, &user, "medications", "medications", json!([again]))
        .ok()
        .clone();
    assert_eq!(second["synced"], 1);
    assert_eq!(second["conflicts"], 0);
    assert_eq!(second["applied"], first["applied"]);
    assert_eq!(second["sync_token"], first["sync_token"]);
    assert_eq!(second["previous_sync_token"], second["sync_token"]);
}

#[test]
fn base_version_match_is_a_plain_update_even_with_an_older_timestamp() {
    let (db, user) = setup();
    push(
        &db,
        &user,
        "exercises",
        "exercises",
        json!([rec(&id(1), json!({"v": 1}), T2)]),
    )
    .ok();
    let update = json!([{"id": id(1), "data": {"v": 2}, "updated_at": T1, "base_version": 1}]);
    let data = push(&db, &user, "exercises", "exercises", update)
        .ok()
        .clone();
    assert_eq!(
        (data["synced"].clone(), data["conflicts"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(data["applied"], json!([{"id": id(1), "version": 2}]));
    assert_eq!(
        pull(&db, &user, "exercises", "").ok()["exercises"][0]["data"],
        json!({"v": 2})
    );
}

#[test]
fn without_base_version_a_later_timestamp_is_a_plain_update_and_an_earlier_one_loses() {
    let (db, user) = setup();
    push(
        &db,
        &user,
        "meal-plans",
        "meal_plans",
        json!([rec(&id(1), json!({"v": 1}), T2)]),
    )
    .ok();
    let later = push(
        &db,
        &user,
        "meal-plans",
        "meal_plans",
        json!([rec(&id(1), json!({"v": 2}), T3)]),
    )
    .ok()
    .clone();
    assert_eq!(later["synced"], 1);
    let earlier = push(
        &db,
        &user,
        "meal-plans",
        "meal_plans",
        json!([rec(&id(1), json!({"v": 3}), T1)]),
    )
    .ok()
    .clone();
    assert_eq!(earlier["synced"], 0);
    assert_eq!(earlier["conflicts"], 1);
    assert_eq!(earlier["applied"], json!([]));
    let detail = &earlier["conflict_details"][0];
    assert_eq!(detail["resolution"], "server_wins");
    assert_eq!(detail["entity_type"], "meal_plans");
    assert_eq!(detail["entity_id"], id(1));
    assert_eq!(detail["client_version"]["data"], json!({"v": 3}));
    assert_eq!(detail["server_version"]["data"], json!({"v": 2}));
    assert_eq!(earlier["server_updates"][0]["data"], json!({"v": 2}));
    assert_eq!(earlier["server_updates"][0]["version"], 2);
    // Server wins writes nothing and takes no version.
    assert_eq!(earlier["sync_token"], earlier["previous_sync_token"]);
    // An equal timestamp without base_version: the server's side wins.
    let tie = push(
        &db,
        &user,
        "meal-plans",
        "meal_plans",
        json!([rec(&id(1), json!({"v": 4}), T3)]),
    )
    .ok()
    .clone();
    assert_eq!(tie["conflict_details"][0]["resolution"], "server_wins");
}

#[test]
fn a_stale_base_version_is_a_conflict_resolved_by_last_write() {
    let (db, user) = setup();
    push(
        &db,
        &user,
        "exercises",
        "exercises",
        json!([rec(&id(1), json!({"v": 1}), T1)]),
    )
    .ok();
    push(
        &db,
        &user,
        "exercises",
        "exercises",
        json!([{"id": id(1), "data": {"v": 2}, "updated_at": T2, "base_version": 1}]),
    )
    .ok();
    let stale = json!([{"id": id(1), "data": {"v": 3}, "updated_at": T3, "base_version": 1}]);
    let data = push(&db, &user, "exercises", "exercises", stale)
        .ok()
        .clone();
    assert_eq!(data["conflicts"], 1);
    assert_eq!(data["synced"], 0);
    assert_eq!(data["conflict_details"][0]["resolution"], "client_wins");
    assert_eq!(data["applied"], json!([{"id": id(1), "version": 3}]));
    assert_eq!(data["server_updates"][0]["data"], json!({"v": 3}));
}

#[test]
fn delete_against_edit_goes_by_updated_at() {
    let (db, user) = setup();
    push(
        &db,
        &user,
        "medications",
        "medications",
        json!([
            rec(&id(1), json!({"v": 1}), T2),
            rec(&id(2), json!({"v": 1}), T2)
        ]),
    )
    .ok();
    let tombstones = json!([
        {"id": id(1), "data": {}, "updated_at": T3, "deleted_at": T3, "base_version": 99},
        {"id": id(2), "data": {}, "updated_at": T1, "deleted_at": T1, "base_version": 99},
    ]);
    let data = push(&db, &user, "medications", "medications", tombstones)
        .ok()
        .clone();
    let resolutions: Vec<&str> = data["conflict_details"]
        .as_array()
        .map(|d| d.iter().filter_map(|c| c["resolution"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(resolutions, vec!["client_wins", "server_wins"]);
    let pulled = pull(&db, &user, "medications", "").ok().clone();
    let list = pulled["medications"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let one = list
        .iter()
        .find(|r| r["id"] == id(1))
        .cloned()
        .unwrap_or_default();
    let two = list
        .iter()
        .find(|r| r["id"] == id(2))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        one["deleted_at"], T3,
        "tombstones are pulled like any change"
    );
    assert_eq!(two["deleted_at"], Value::Null);
}

#[test]
fn health_metrics_concurrent_edits_merge() {
    let (db, user) = setup();
    let server = json!({"weight": 70.0, "sleepQuality": 6, "bodyMeasurements": {"waist": 80, "hips": 95}, "notes": "slept badly", "onlyServer": true});
    push(
        &db,
        &user,
        "health-metrics",
        "metrics",
        json!([rec(&id(1), server, T2)]),
    )
    .ok();
    let client =
        json!({"weight": 71.5, "bodyMeasurements": {"waist": 82, "chest": 100}, "notes": "ran 5k"});
    let data = push(
        &db,
        &user,
        "health-metrics",
        "metrics",
        json!([{"id": id(1), "data": client, "updated_at": T3, "base_version": 0}]),
    )
    .ok()
    .clone();
    assert_eq!(data["conflict_details"][0]["resolution"], "merged");
    let merged = &data["server_updates"][0];
    assert_eq!(merged["updated_at"], T3);
    assert_eq!(
        merged["data"],
        json!({"weight": 71.5, "sleepQuality": 6, "bodyMeasurements": {"waist": 82, "hips": 95, "chest": 100},
               "notes": "ran 5k\n\nslept badly", "onlyServer": true})
    );
    assert_eq!(data["applied"], json!([]));
    assert_eq!(
        pull(&db, &user, "health-metrics", "").ok()["metrics"][0],
        *merged
    );
}

#[test]
fn medications_conflicts_union_side_effects() {
    let (db, user) = setup();
    push(
        &db,
        &user,
        "medications",
        "medications",
        json!([rec(
            &id(1),
            json!({"dose": "5mg", "sideEffects": ["nausea", "dizziness"]}),
            T2
        )]),
    )
    .ok();
    let client = json!({"dose": "10mg", "sideEffects": ["headache", "nausea"]});
    let data = push(
        &db,
        &user,
        "medications",
        "medications",
        json!([{"id": id(1), "data": client, "updated_at": T3, "base_version": 0}]),
    )
    .ok()
    .clone();
    assert_eq!(data["conflict_details"][0]["resolution"], "merged");
    assert_eq!(
        data["server_updates"][0]["data"],
        json!({"dose": "10mg", "sideEffects": ["headache", "nausea", "dizziness"]})
    );
}

#[test]
fn meals_on_different_dates_keep_both_and_a_retry_makes_no_further_copy() {
    let (db, user) = setup();
    push(
        &db,
        &user,
        "meals",
        "meals",
        json!([rec(
            &id(1),
            json!({"date": "2024-03-01", "name": "Oats"}),
            T2
        )]),
    )
    .ok();
    let client = json!([{"id": id(1), "data": {"date": "2024-03-02", "name": "Eggs"}, "updated_at": T3, "base_version": 0}]);
    let first = push(&db, &user, "meals", "meals", client.clone())
        .ok()
        .clone();
    assert_eq!(first["conflict_details"][0]["resolution"], "kept_both");
    let updates = first["server_updates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0]["id"], id(1));
    assert_eq!(updates[0]["data"]["name"], "Oats");
    let derived = updates[1]["id"].as_str().unwrap_or_default().to_owned();
    assert_ne!(derived, id(1));
    assert_eq!(
        uuid::Uuid::parse_str(&derived)
            .map(|u| u.get_version_num())
            .ok(),
        Some(5)
    );
    assert_eq!(updates[1]["data"]["name"], "Eggs");

    let retry = push(&db, &user, "meals", "meals", client).ok().clone();
    assert_eq!(retry["server_updates"][1]["id"], derived.as_str());
    assert_eq!(retry["sync_token"], retry["previous_sync_token"]);
    assert_eq!(db.count("SELECT COUNT(*) FROM meals"), 2);
    // Same date: plain last write wins.
    let same = push(&db, &user, "meals", "meals", json!([{"id": id(1), "data": {"date": "2024-03-01", "name": "Toast"}, "updated_at": T3, "base_version": 0}])).ok().clone();
    assert_eq!(same["conflict_details"][0]["resolution"], "client_wins");
}

#[test]
fn users_never_see_or_overwrite_each_others_records() {
    let db = TestDb::new();
    let alice = register(&db, "alice@example.com");
    let bob = register(&db, "bob@example.com");
    push(
        &db,
        &alice,
        "meals",
        "meals",
        json!([rec(&id(1), json!({"owner": "alice"}), T1)]),
    )
    .ok();
    let data = push(
        &db,
        &bob,
        "meals",
        "meals",
        json!([{"id": id(1), "data": {"owner": "bob"}, "updated_at": T2, "base_version": 1}]),
    )
    .ok()
    .clone();
    // Bob's push of a UUID Alice holds is an insert of Bob's own record.
    assert_eq!(data["synced"], 1);
    assert_eq!(data["conflicts"], 0);
    assert_eq!(
        pull(&db, &alice, "meals", "").ok()["meals"][0]["data"],
        json!({"owner": "alice"})
    );
    assert_eq!(
        pull(&db, &bob, "meals", "").ok()["meals"][0]["data"],
        json!({"owner": "bob"})
    );
    let export = db
        .get("/api/account/export")
        .token(&alice.token)
        .send()
        .ok()
        .clone();
    assert_eq!(export["meals"].as_array().map(Vec::len), Some(1));
    // A token of another user's sequence is refused, not answered.
    let bob_token = data["sync_token"].as_str().unwrap_or_default().to_owned();
    pull(
        &db,
        &alice,
        "meals",
        &format!("sync_token={}", bob_token.parse::<u64>().unwrap_or(0) + 5),
    )
    .expect(410, "RESET_REQUIRED");
}

#[test]
fn pull_pages_exactly_by_sync_token() {
    let (db, user) = setup();
    let records: Vec<Value> = (1..=7).map(|n| rec(&id(n), json!({"n": n}), T1)).collect();
    push(&db, &user, "exercises", "exercises", json!(records)).ok();
    push(
        &db,
        &user,
        "meals",
        "meals",
        json!([rec(&id(50), json!({}), T1)]),
    )
    .ok();
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let query = if token.is_empty() {
            "limit=3".to_owned()
        } else {
            format!("limit=3&sync_token={token}")
        };
        let page = pull(&db, &user, "exercises", &query).ok().clone();
        for record in page["exercises"].as_array().cloned().unwrap_or_default() {
            seen.push(record["version"].as_u64().unwrap_or(0));
        }
        token = page["next_sync_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(token, "7");
    // An empty page keeps the cursor.
    let empty = pull(&db, &user, "exercises", "sync_token=8").ok().clone();
    assert_eq!(empty["exercises"], json!([]));
    assert_eq!(empty["next_sync_token"], "8");
}

#[test]
fn pull_parameters_are_checked_never_clamped() {
    let (db, user) = setup();
    for query in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "sync_token=abc",
        "sync_token=-1",
        "since=yesterday",
        "since=2024-01-01T00:00:00",
    ] {
        let response = pull(&db, &user, "meals", query);
        response.expect(400, "VALIDATION_ERROR");
    }
    let response = pull(&db, &user, "meals", "limit=0&since=nope");
    let details = response.body["error"]["details"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        details.contains_key("limit") && details.contains_key("since"),
        "{details:?}"
    );
    pull(&db, &user, "meals", "limit=1000").ok();
}

#[test]
fn since_returns_writes_received_after_it() {
    let (db, user) = setup();
    push(
        &db,
        &user,
        "meals",
        "meals",
        json!([rec(&id(1), json!({}), T1)]),
    )
    .ok();
    let bulk = db
        .post("/api/sync/bulk", &json!({}))
        .token(&user.token)
        .send()
        .ok()
        .clone();
    let stamp = bulk["sync_timestamp"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    push(
        &db,
        &user,
        "meals",
        "meals",
        json!([rec(&id(2), json!({}), T1)]),
    )
    .ok();
    let page = pull(
        &db,
        &user,
        "meals",
        &format!("since={}", stamp.replace('+', "%2B")),
    )
    .ok()
    .clone();
    let ids: Vec<&str> = page["meals"]
        .as_array()
        .map(|l| l.iter().filter_map(|r| r["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![id(2).as_str()]);
    // An unencoded `+` in the offset (a space once decoded) still parses.
    let offset = pull(&db, &user, "meals", "since=2024-01-01T12:00:00+02:00")
        .ok()
        .clone();
    assert_eq!(offset["meals"].as_array().map(Vec::len), Some(2));
}

#[test]
fn bulk_pushes_every_entity_and_returns_changes_it_did_not_write() {
    let db = TestDb::new();
    let user = register(&db, "bulk@example.com");
    // Another device's write, before this device's bulk.
    push(
        &db,
        &user,
        "exercises",
        "exercises",
        json!([rec(&id(9), json!({"from": "other"}), T1)]),
    )
    .ok();
    let body = json!({
        "health_metrics": [rec(&id(1), json!({"weight": 70}), T1)],
        "meals": [rec(&id(2), json!({"date": "2024-03-01"}), T1)],
        "sync_token": "0",
    });
    let data = db
        .post("/api/sync/bulk", &body)
        .token(&user.token)
        .var("HTTP_X_DEVICE_ID", "tablet")
        .send()
        .ok()
        .clone();
    assert_eq!(data["health_metrics"]["synced"], 1);
    assert_eq!(
        data["meals"]["applied"],
        json!([{"id": id(2), "version": 3}])
    );
    assert_eq!(
        data["health_metrics"]["server_updates"],
        json!([]),
        "own writes are not sent back"
    );
    assert_eq!(
        data["exercises"]["server_updates"][0]["data"],
        json!({"from": "other"})
    );
    assert_eq!(data["previous_sync_token"], "1");
    assert_eq!(data["sync_token"], "3");
    assert_eq!(data["has_more"], false);
    assert!(data["sync_timestamp"]
        .as_str()
        .is_some_and(|s| s.ends_with('Z') && s.len() == 24));
    for (_, _, key) in ENTITIES {
        for field in [
            "synced",
            "conflicts",
            "conflict_details",
            "errors",
            "server_updates",
            "applied",
        ] {
            assert!(!data[key][field].is_null(), "{key}.{field}");
        }
    }
    // Unknown keys are refused and nothing is stored.
    let typo = json!({"meal": [rec(&id(3), json!({}), T1)], "meals": [rec(&id(4), json!({}), T1)]});
    let response = db.post("/api/sync/bulk", &typo).token(&user.token).send();
    response.expect(400, "VALIDATION_ERROR");
    assert!(response.body["error"]["details"]["meal"].is_string());
    assert_eq!(db.count("SELECT COUNT(*) FROM meals"), 1);
}

#[test]
fn bulk_pages_changes_with_has_more() {
    let (db, user) = setup();
    for (slug, key, _) in ENTITIES {
        let records: Vec<Value> = (1..=3)
            .map(|n| rec(&id(n), json!({ "e": slug }), T1))
            .collect();
        push(&db, &user, slug, key, json!(records)).ok();
    }
    let first = db
        .post("/api/sync/bulk", &json!({"limit": 10}))
        .token(&user.token)
        .send()
        .ok()
        .clone();
    let count = |data: &Value| {
        ENTITIES
            .iter()
            .map(|(_, _, k)| data[k]["server_updates"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
    };
    assert_eq!(count(&first), 10);
    assert_eq!(first["has_more"], true);
    assert_eq!(first["sync_token"], "10");
    let rest = db
        .post(
            "/api/sync/bulk",
            &json!({"sync_token": first["sync_token"]}),
        )
        .token(&user.token)
        .send()
        .ok()
        .clone();
    assert_eq!(count(&rest), 5);
    assert_eq!(rest["has_more"], false);
    assert_eq!(rest["sync_token"], "15");
}

#[test]
fn purged_tombstones_make_older_cursors_reset() {
    let (mut db, user) = setup();
    push(
        &db,
        &user,
        "meals",
        "meals",
        json!([rec(&id(1), json!({}), T1)]),
    )
    .ok();
    push(
        &db,
        &user,
        "meals",
        "meals",
        json!([{"id": id(2), "data": {}, "updated_at": T1, "deleted_at": T1}]),
    )
    .ok();
    push(
        &db,
        &user,
        "meals",
        "meals",
        json!([rec(&id(3), json!({}), T1)]),
    )
    .ok();
    db.exec("UPDATE meals SET server_updated_at = server_updated_at - INTERVAL 200 DAY WHERE deleted_at IS NOT NULL");
    db.set("TOMBSTONE_DAYS", "180");
    let output = db.cli(&["purge"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("1 tombstones purged from 1 of 1 users"),
        "{stdout}"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM meals"), 2);
    // The quota counts follow the purge.
    let usage = db.get("/api/account").token(&user.token).send().ok()["usage"].clone();
    assert_eq!(usage["records"], 2);
    assert_eq!(usage["data_bytes"], 4);
    pull(&db, &user, "meals", "sync_token=1").expect(410, "RESET_REQUIRED");
    pull(&db, &user, "meals", "sync_token=2").ok();
    pull(&db, &user, "meals", "since=2020-01-01T00:00:00Z").expect(410, "RESET_REQUIRED");
    db.post("/api/sync/bulk", &json!({"sync_token": "0"}))
        .token(&user.token)
        .send()
        .expect(410, "RESET_REQUIRED");
    // A full pull from no cursor still works.
    assert_eq!(
        pull(&db, &user, "meals", "").ok()["meals"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[test]
fn a_bulk_page_leaves_out_its_own_writes_however_many_come_first() {
    let (db, user) = setup();
    // Five changes from elsewhere, after the cursor.
    let others: Vec<Value> = (100..105)
        .map(|n| rec(&id(n), json!({"other": n}), T1))
        .collect();
    push(&db, &user, "medications", "medications", json!(others)).ok();
    // This bulk writes 30 records (versions 6..=35), then pages with limit 3.
    let own: Vec<Value> = (1..=30)
        .map(|n| rec(&id(n), json!({"own": n}), T1))
        .collect();
    let first = db
        .post(
            "/api/sync/bulk",
            &json!({"meals": own, "sync_token": "0", "limit": 3}),
        )
        .token(&user.token)
        .send()
        .ok()
        .clone();
    let sent = |data: &Value| -> Vec<u64> {
        ENTITIES
            .iter()
            .flat_map(|(_, _, key)| {
                data[key]["server_updates"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|r| r["version"].as_u64().unwrap_or(0))
            .collect()
    };
    assert_eq!(sent(&first), vec![1, 2, 3]);
    assert_eq!(first["has_more"], true);
    assert_eq!(first["sync_token"], "3");
    let rest = db
        .post("/api/sync/bulk", &json!({"sync_token": "3", "limit": 3}))
        .token(&user.token)
        .send()
        .ok()
        .clone();
    assert_eq!(sent(&rest), vec![4, 5, 6]);
    // A bulk that wrote everything after the cursor has nothing to send.
    let mine = db
        .post(
            "/api/sync/bulk",
            &json!({"exercises": [rec(&id(200), json!({}), T1)], "sync_token": "35", "limit": 3}),
        )
        .token(&user.token)
        .send()
        .ok()
        .clone();
    assert_eq!(sent(&mine), Vec::<u64>::new());
    assert_eq!(
        (mine["has_more"].clone(), mine["sync_token"].clone()),
        (json!(false), json!("36"))
    );
}

#[test]
fn a_bad_device_id_is_a_validation_error_and_stores_nothing() {
    let (db, user) = setup();
    let long = "d".repeat(129);
    for bad in [long.as_str(), "phone\u{7}"] {
        db.post(
            "/api/meals/sync",
            &json!({"meals": [rec(&id(1), json!({}), T1)]}),
        )
        .token(&user.token)
        .var("HTTP_X_DEVICE_ID", bad)
        .send()
        .expect(400, "VALIDATION_ERROR");
        pull(&db, &user, "meals", "").ok();
        db.get("/api/meals")
            .token(&user.token)
            .var("HTTP_X_DEVICE_ID", bad)
            .send()
            .expect(400, "VALIDATION_ERROR");
    }
    assert_eq!(db.count("SELECT COUNT(*) FROM meals"), 0);
    assert_eq!(db.count("SELECT COUNT(*) FROM sync_status"), 0);
}

/// Contract section 4, v2: unions take linear time, and a merge that would
/// pass `MAX_RECORD_BYTES` is last write wins. Thirty rounds of a stale
/// medication edit, each with 11,000 side effects overlapping the stored
/// ones: the union grows by a thousand a round until it would pass the
/// limit; that round the later side wins whole, and the union grows again.
#[test]
fn large_side_effect_unions_stay_fast_and_within_the_record_limit() {
    const LIMIT: usize = 192 * 1024;
    let mut db = TestDb::new();
    db.set("MAX_RECORD_BYTES", &LIMIT.to_string())
        .set("MAX_BODY_BYTES", &(4 * LIMIT).to_string())
        .set("RATE_LIMIT_PER_MINUTE", "1000");
    let user = register(&db, "unions@example.com");
    let mut resolutions = Vec::new();
    for round in 0..30_usize {
        let effects: Vec<String> = (round * 1000..round * 1000 + 11_000)
            .map(|n| format!("e{n}"))
            .collect();
        let at = format!("2024-03-01T10:{:02}:00.000Z", round);
        let record = json!([{
            "id": id(1),
            "data": {"dose": "5mg", "sideEffects": effects},
            "updated_at": at,
            "base_version": if round == 0 { Value::Null } else { json!(0) },
        }]);
        let started = std::time::Instant::now();
        let answer = push(&db, &user, "medications", "medications", record);
        let took = started.elapsed();
        let data = answer.ok().clone();
        assert!(took.as_secs_f64() < 2.0, "round {round} took {took:?}");
        if round > 0 {
            resolutions.push(data["conflict_details"][0]["resolution"].clone());
        }
        let held =
            pull(&db, &user, "medications", "limit=1").ok()["medications"][0]["data"].clone();
        let held_len = serde_json::to_string(&held).unwrap_or_default().len();
        assert!(held_len <= LIMIT, "round {round}: stored {held_len} bytes");
    }
    assert_eq!(resolutions.first(), Some(&json!("merged")));
    let overflowed = resolutions.iter().filter(|r| *r == "client_wins").count();
    assert!((1..=3).contains(&overflowed), "{resolutions:?}");
}

/// Contract section 5 (v2): a page ends early by size. It holds at least
/// one record and, after the first, none that would carry its compact
/// JSON past `MAX_PAGE_BYTES`; paging on by the token (pull or bulk)
/// misses nothing and repeats nothing.
#[test]
fn pages_end_early_by_size_and_paging_on_misses_nothing() {
    let mut db = TestDb::new();
    db.set("MAX_PAGE_BYTES", "3000");
    let user = register(&db, "pages@example.com");
    let records: Vec<Value> = (1..=10)
        .map(|n| {
            let size = if n == 5 { 5000 } else { 900 };
            rec(&id(n), json!({"note": "x".repeat(size)}), T1)
        })
        .collect();
    push(&db, &user, "meals", "meals", json!(records)).ok();
    let everything: Vec<String> = (1..=10).map(id).collect();
    let check_page = |list: &[Value]| {
        assert!(!list.is_empty(), "a page holds at least one record");
        let size: usize = list.iter().map(|r| r.to_string().len()).sum();
        assert!(
            list.len() == 1 || size <= 3000,
            "{} records, {size} bytes",
            list.len()
        );
    };

    let (mut token, mut seen, mut pages) = ("0".to_owned(), Vec::new(), 0);
    loop {
        let page = pull(
            &db,
            &user,
            "meals",
            &format!("sync_token={token}&limit=100"),
        )
        .ok()
        .clone();
        let list = page["meals"].as_array().cloned().unwrap_or_default();
        check_page(&list);
        seen.extend(
            list.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned)),
        );
        token = page["next_sync_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        pages += 1;
        if page["has_more"] == false {
            break;
        }
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(seen, everything);
    assert!(pages >= 4, "{pages} pages");

    let (mut token, mut seen, mut pages) = ("0".to_owned(), Vec::new(), 0);
    loop {
        let page = db
            .post("/api/sync/bulk", &json!({ "sync_token": token }))
            .token(&user.token)
            .send()
            .ok()
            .clone();
        let list = page["meals"]["server_updates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        check_page(&list);
        seen.extend(
            list.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned)),
        );
        token = page["sync_token"].as_str().unwrap_or_default().to_owned();
        pages += 1;
        if page["has_more"] == false {
            break;
        }
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(seen, everything);
}

fn usage(db: &TestDb, user: &User) -> Value {
    db.get("/api/account").token(&user.token).send().ok()["usage"].clone()
}

fn error_codes(answer: &Value) -> Vec<(u64, String)> {
    answer["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let index = e["index"].as_u64().unwrap_or(u64::MAX);
                    (index, e["code"].as_str().unwrap_or_default().to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Contract section 7 (v2): a record that would create a row past
/// `MAX_RECORDS_PER_USER` is refused with `QUOTA_EXCEEDED` and the rest of
/// the batch applies; updates that do not grow, deletes and conflict
/// resolutions always apply; `GET /account` shows the usage.
#[test]
fn the_record_quota_refuses_new_rows_only() {
    let mut db = TestDb::new();
    db.set("MAX_RECORDS_PER_USER", "5");
    let user = register(&db, "quota@example.com");
    let meals: Vec<Value> = (1..=7)
        .map(|n| rec(&id(n), json!({"date": "2024-03-01", "n": n}), T1))
        .collect();
    let answer = push(&db, &user, "meals", "meals", json!(meals))
        .ok()
        .clone();
    assert_eq!(answer["synced"], 5);
    assert_eq!(
        error_codes(&answer),
        vec![
            (5, "QUOTA_EXCEEDED".to_owned()),
            (6, "QUOTA_EXCEEDED".to_owned())
        ]
    );
    let held = usage(&db, &user);
    assert_eq!(held["records"], 5);
    assert_eq!(held["max_records"], 5);
    // An update, a delete of an unknown id (a new tombstone row) and a
    // kept-both conflict (a new row) all apply at the limit.
    let answer = push(
        &db,
        &user,
        "meals",
        "meals",
        json!([
            rec(&id(1), json!({"date": "2024-03-01", "n": 10}), T2),
            {"id": id(8), "data": {}, "updated_at": T2, "deleted_at": T2},
            {"id": id(2), "data": {"date": "2024-03-09"}, "updated_at": T3, "base_version": 0},
        ]),
    )
    .ok()
    .clone();
    assert_eq!(error_codes(&answer), vec![]);
    assert_eq!(answer["conflict_details"][0]["resolution"], "kept_both");
    assert_eq!(usage(&db, &user)["records"], 7);
    assert_eq!(db.count("SELECT COUNT(*) FROM meals"), 7);
}

#[test]
fn the_data_quota_refuses_growth_only() {
    let mut db = TestDb::new();
    db.set("MAX_USER_DATA_BYTES", "300");
    let user = register(&db, "bytes@example.com");
    let sized = |n: usize| json!({"note": "x".repeat(n - 11)});
    assert_eq!(sized(200).to_string().len(), 200);
    push(
        &db,
        &user,
        "exercises",
        "exercises",
        json!([rec(&id(1), sized(200), T1)]),
    )
    .ok();
    let refused = push(
        &db,
        &user,
        "exercises",
        "exercises",
        json!([rec(&id(2), sized(200), T1)]),
    )
    .ok()
    .clone();
    assert_eq!(
        error_codes(&refused),
        vec![(0, "QUOTA_EXCEEDED".to_owned())]
    );
    // Growing by 50 fits (250 of 300); growing past the limit does not;
    // shrinking always does.
    push(
        &db,
        &user,
        "exercises",
        "exercises",
        json!([rec(&id(1), sized(250), T2)]),
    )
    .ok();
    let grown = push(
        &db,
        &user,
        "exercises",
        "exercises",
        json!([rec(&id(1), sized(400), T3)]),
    )
    .ok()
    .clone();
    assert_eq!(error_codes(&grown), vec![(0, "QUOTA_EXCEEDED".to_owned())]);
    push(
        &db,
        &user,
        "exercises",
        "exercises",
        json!([rec(&id(1), sized(100), T3)]),
    )
    .ok();
    let held = usage(&db, &user);
    assert_eq!(held["data_bytes"], 100);
    assert_eq!(held["records"], 1);
    assert_eq!(held["max_data_bytes"], 300);
    assert_eq!(
        db.count("SELECT SUM(LENGTH(data)) FROM exercises"),
        100,
        "the count is what is stored"
    );
}

// Found by schemathesis (deploy/api-check): JSON Schema's `integer` (and JSON itself) make
// `1000.0` the integer 1000, and some encoders spell whole doubles that
// way (Dart's `jsonEncode(41.0)`), but the server refused it.

#[test]
fn a_whole_number_written_with_a_fraction_is_an_integer_limit() {
    let db = TestDb::new();
    let user = register(&db, "whole-limit@example.com");
    let data = db
        .post("/api/sync/bulk", &json!({"limit": 1000.0}))
        .token(&user.token)
        .send()
        .ok()
        .clone();
    assert_eq!(data["has_more"], false);
    db.post("/api/sync/bulk", &json!({"limit": 1e3}))
        .token(&user.token)
        .send()
        .ok();
    for bad in [
        json!(2.5),
        json!(0.0),
        json!(1001.0),
        json!(-1.0),
        json!("5"),
    ] {
        let response = db
            .post("/api/sync/bulk", &json!({ "limit": bad }))
            .token(&user.token)
            .send();
        response.expect(400, "VALIDATION_ERROR");
        assert!(
            response.body["error"]["details"]["limit"].is_string(),
            "{bad}"
        );
    }
}

#[test]
fn a_whole_number_written_with_a_fraction_is_an_integer_base_version() {
    let db = TestDb::new();
    let user = register(&db, "whole-base@example.com");
    let id = "0b6f3d2a-5c1e-4f7a-9d8b-2e4c6a8f0b1d";
    let record = |data: Value, at: &str, base: Value| json!({"exercises": [{"id": id, "data": data, "updated_at": at, "base_version": base}]});
    let push = |body: &Value| {
        db.post("/api/exercises/sync", body)
            .token(&user.token)
            .send()
            .ok()
            .clone()
    };
    let first = push(&record(
        json!({"v": 1}),
        "2024-03-01T11:00:00.000Z",
        Value::Null,
    ));
    assert_eq!(first["applied"], json!([{"id": id, "version": 1}]));
    // An older timestamp with the matching base version: a plain update,
    // which it can only be if `1.0` was read as base version 1.
    let second = push(&record(
        json!({"v": 2}),
        "2024-03-01T10:00:00.000Z",
        json!(1.0),
    ));
    assert_eq!(second["errors"], json!([]), "{second}");
    assert_eq!(
        (second["synced"].clone(), second["conflicts"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(second["applied"], json!([{"id": id, "version": 2}]));
    let refused = push(&record(
        json!({"v": 3}),
        "2024-03-01T12:00:00.000Z",
        json!(1.5),
    ));
    assert_eq!(
        refused["errors"][0]["code"], "VALIDATION_ERROR",
        "{refused}"
    );
    assert_eq!(refused["synced"], 0);
}

// Found by schemathesis (deploy/api-check): with a valid `sync_token`, a `since` that is not
// RFC 3339 was ignored instead of refused, unlike a bulk's `last_sync_at`
// beside its `sync_token`; an invalid query parameter is 400 whether or
// not another one wins.
#[test]
fn a_bad_since_is_refused_even_beside_a_sync_token() {
    let db = TestDb::new();
    let user = register(&db, "bad-since@example.com");
    let response = db
        .get("/api/meals?sync_token=0&since=%C2%AF")
        .token(&user.token)
        .send();
    response.expect(400, "VALIDATION_ERROR");
    let details = &response.body["error"]["details"];
    assert!(details["since"].is_string(), "{details}");
    assert!(details.get("sync_token").is_none(), "{details}");
    // Both well formed: the token wins, as before.
    db.get("/api/meals?sync_token=0&since=2999-01-01T00:00:00Z")
        .token(&user.token)
        .send()
        .ok();
    let bulk = db
        .post(
            "/api/sync/bulk",
            &json!({"sync_token": "0", "last_sync_at": "\u{af}"}),
        )
        .token(&user.token)
        .send();
    bulk.expect(400, "VALIDATION_ERROR");
    assert!(bulk.body["error"]["details"]["last_sync_at"].is_string());
}
