//! Exactly-once and verifiable sync (contract section 9) through the
//! binary: `Idempotency-Key` replays (9.1), state digests (9.2), repair by
//! prefix digests and fetch (9.3), the conflict log (9.4) and the purge
//! horizon (9.5). Digests are computed here from the rows themselves, so
//! each test fails if the server's bookkeeping drifts.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::support::{register, Resp, TestDb, User};

const T1: &str = "2024-03-01T10:00:00.000Z";
const T2: &str = "2024-03-01T11:00:00.000Z";
const T3: &str = "2024-03-01T12:00:00.000Z";

fn id(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

fn rec(id: &str, data: Value, updated_at: &str) -> Value {
    json!({"id": id, "data": data, "updated_at": updated_at})
}

/// The first 8 bytes of SHA-256("<id>:<version>"), big-endian.
fn hash(id: &str, version: u64) -> u64 {
    let full = Sha256::digest(format!("{id}:{version}").as_bytes());
    full[..8]
        .iter()
        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
}

fn digest_of<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let xor = pairs
        .into_iter()
        .fold(0u64, |acc, (id, version)| acc ^ hash(id, version));
    format!("{xor:016x}")
}

/// The digest of what the table holds for the user, tombstones included.
fn stored_digest(db: &TestDb, table: &str, user: &User) -> String {
    let rows: Vec<(String, u64)> = db.query(&format!(
        "SELECT id, version FROM {table} WHERE user_id = '{}'",
        user.id
    ));
    digest_of(rows.iter().map(|(id, version)| (id.as_str(), *version)))
}

fn keyed_push(db: &TestDb, user: &User, key: &str, body: &str) -> Resp {
    db.request("POST", "/api/meals/sync")
        .raw("application/json", body.as_bytes().to_vec())
        .var("HTTP_IDEMPOTENCY_KEY", key)
        .token(&user.token)
        .send()
}

fn status(db: &TestDb, user: &User) -> Value {
    db.get("/api/sync/status")
        .token(&user.token)
        .send()
        .ok()
        .clone()
}

fn change_counter(db: &TestDb, user: &User) -> u64 {
    db.count(&format!(
        "SELECT change_counter FROM users WHERE id = '{}'",
        user.id
    ))
}

/// Pushes `meals` as the user; the push must succeed.
fn push_meals(db: &TestDb, user: &User, meals: Value) {
    db.post("/api/meals/sync", &json!({ "meals": meals }))
        .token(&user.token)
        .send()
        .ok();
}

fn setup() -> (TestDb, User) {
    let db = TestDb::new();
    let user = register(&db, "once@example.com");
    (db, user)
}

// 9.1 Idempotency-Key

#[test]
fn a_keyed_push_replays_its_first_answer_byte_for_byte_whatever_happened_since() {
    let (db, user) = setup();
    push_meals(
        &db,
        &user,
        json!([rec(&id(1), json!({"date": "2024-03-01", "n": 1}), T1)]),
    );
    // A conflict and an insert, so the answer has every part.
    let body = json!({"meals": [
        rec(&id(1), json!({"date": "2024-03-01", "n": 2}), T2),
        rec(&id(2), json!({"date": "2024-03-02"}), T2),
    ]})
    .to_string();
    let first = keyed_push(&db, &user, "push-1", &body);
    first.ok();
    assert_eq!(first.header("Idempotent-Replayed"), None);
    let position = change_counter(&db, &user);

    // Another device writes in between; the replay does not see it.
    push_meals(
        &db,
        &user,
        json!([rec(&id(3), json!({"date": "2024-03-03"}), T3)]),
    );
    let after_other = change_counter(&db, &user);
    assert!(after_other > position);

    let again = keyed_push(&db, &user, "push-1", &body);
    again.ok();
    assert_eq!(again.header("Idempotent-Replayed"), Some("true"));
    assert_eq!(
        String::from_utf8_lossy(&again.raw_body),
        String::from_utf8_lossy(&first.raw_body)
    );
    // It wrote nothing and took no version.
    assert_eq!(change_counter(&db, &user), after_other);
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM conflict_log WHERE user_id = '{}'",
            user.id
        )),
        0
    );
    // Rate limits count replays like any request.
    let remaining = |response: &Resp| -> u64 {
        response
            .header("RateLimit-Remaining")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no RateLimit-Remaining: {:?}", response.headers))
    };
    let third = keyed_push(&db, &user, "push-1", &body);
    assert_eq!(remaining(&third) + 1, remaining(&again));
}

#[test]
fn a_large_answer_and_conflict_log_are_stored_and_replayed_too() {
    let (db, user) = setup();
    // Six conflicts the server wins, each carrying two records of ~40 KB:
    // the log and the answer pass what rides in the committing packet.
    let big = |tag: &str| json!({"date": "2024-03-01", "text": tag.repeat(40_000)});
    let stored: Vec<Value> = (1..=6).map(|n| rec(&id(n), big("s"), T2)).collect();
    push_meals(&db, &user, json!(stored));
    let older: Vec<Value> = (1..=6)
        .map(|n| json!({"id": id(n), "data": big("c"), "updated_at": T1, "base_version": 0}))
        .collect();
    let body = json!({ "meals": older }).to_string();
    let first = keyed_push(&db, &user, "big", &body);
    assert_eq!(first.ok()["conflicts"], 6);
    assert!(
        first.raw_body.len() > 256 * 1024,
        "{}",
        first.raw_body.len()
    );
    let again = keyed_push(&db, &user, "big", &body);
    assert_eq!(again.header("Idempotent-Replayed"), Some("true"));
    assert_eq!(again.raw_body, first.raw_body);
    let logged = db
        .get("/api/sync/conflicts")
        .token(&user.token)
        .send()
        .ok()
        .clone();
    assert_eq!(logged["conflicts"].as_array().map(Vec::len), Some(6));
    assert_eq!(
        logged["conflicts"][5]["client_version"],
        first.data()["conflict_details"][5]["client_version"]
    );
}

#[test]
fn a_key_reused_with_another_body_or_route_is_422_and_changes_nothing() {
    let (db, user) = setup();
    let body = json!({"meals": [rec(&id(1), json!({"date": "2024-03-01"}), T1)]}).to_string();
    keyed_push(&db, &user, "k", &body).ok();
    let position = change_counter(&db, &user);

    // The same JSON with other whitespace is another body.
    let spaced = body.replacen(':', ": ", 1);
    let reused = keyed_push(&db, &user, "k", &spaced);
    // With its reason phrase, as every status the API answers has one.
    assert_eq!(reused.header("Status"), Some("422 Unprocessable Content"));
    reused.expect(422, "IDEMPOTENCY_KEY_REUSED");
    let other = json!({"meals": [rec(&id(2), json!({"date": "2024-03-02"}), T1)]}).to_string();
    keyed_push(&db, &user, "k", &other).expect(422, "IDEMPOTENCY_KEY_REUSED");
    // The same body on another route.
    db.request("POST", "/api/meal-plans/sync")
        .raw(
            "application/json",
            json!({"meal_plans": []}).to_string().into_bytes(),
        )
        .var("HTTP_IDEMPOTENCY_KEY", "k")
        .token(&user.token)
        .send()
        .expect(422, "IDEMPOTENCY_KEY_REUSED");
    db.request("POST", "/api/sync/bulk")
        .raw("application/json", body.clone().into_bytes())
        .var("HTTP_IDEMPOTENCY_KEY", "k")
        .token(&user.token)
        .send()
        .expect(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(change_counter(&db, &user), position);
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM meals WHERE user_id = '{}'",
            user.id
        )),
        1
    );
    // The original still replays.
    let replay = keyed_push(&db, &user, "k", &body);
    replay.ok();
    assert_eq!(replay.header("Idempotent-Replayed"), Some("true"));
}

#[test]
fn a_malformed_key_is_400_naming_the_header_after_the_token_is_checked() {
    let (db, user) = setup();
    let body = json!({"meals": []}).to_string();
    let long = "k".repeat(129);
    for bad in [
        &b""[..],
        b"has space",
        b"tab\t",
        long.as_bytes(),
        b"caf\xc3\xa9",
    ] {
        let response = db
            .request("POST", "/api/meals/sync")
            .raw("application/json", body.clone().into_bytes())
            .var("HTTP_IDEMPOTENCY_KEY", bad)
            .token(&user.token)
            .send();
        response.expect(400, "VALIDATION_ERROR");
        assert!(
            response.body["error"]["details"]["Idempotency-Key"].is_string(),
            "{}",
            response.body
        );
    }
    // 128 visible characters are fine; a bad token still answers first.
    keyed_push(&db, &user, &"~".repeat(128), &body).ok();
    db.request("POST", "/api/meals/sync")
        .raw("application/json", body.into_bytes())
        .var("HTTP_IDEMPOTENCY_KEY", "has space")
        .token("not-a-token")
        .send()
        .expect(401, "UNAUTHORIZED");
}

#[test]
fn only_successes_are_stored_so_a_key_runs_afresh_after_an_error() {
    let (db, user) = setup();
    let body = json!({"meals": [rec(&id(1), json!({"date": "2024-03-01"}), T1)]}).to_string();
    db.request("PATCH", "/api/account")
        .json(&json!({"sync_enabled": false}))
        .token(&user.token)
        .send()
        .ok();
    keyed_push(&db, &user, "after-error", &body).expect(403, "SYNC_DISABLED");
    db.request("PATCH", "/api/account")
        .json(&json!({"sync_enabled": true}))
        .token(&user.token)
        .send()
        .ok();
    let response = keyed_push(&db, &user, "after-error", &body);
    assert_eq!(response.ok()["synced"], 1);
    assert_eq!(response.header("Idempotent-Replayed"), None);
    // A bulk whose cursor is refused stores nothing either.
    let bulk = json!({"sync_token": "999"}).to_string();
    let send_bulk = || {
        db.request("POST", "/api/sync/bulk")
            .raw("application/json", bulk.clone().into_bytes())
            .var("HTTP_IDEMPOTENCY_KEY", "bulk-1")
            .token(&user.token)
            .send()
    };
    send_bulk().expect(410, "RESET_REQUIRED");
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM idempotency_keys WHERE user_id = '{}'",
            user.id
        )),
        1
    );
}

#[test]
fn keys_belong_to_one_user_and_expire_after_idempotency_hours() {
    let (mut db, user) = setup();
    let other = register(&db, "other@example.com");
    let body = json!({"meals": [rec(&id(1), json!({"date": "2024-03-01"}), T1)]}).to_string();
    keyed_push(&db, &user, "shared", &body).ok();
    let theirs = keyed_push(&db, &other, "shared", &body);
    assert_eq!(theirs.ok()["synced"], 1);
    assert_eq!(theirs.header("Idempotent-Replayed"), None);
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM meals WHERE user_id = '{}'",
            other.id
        )),
        1
    );

    // Past IDEMPOTENCY_HOURS the key is forgotten: the push runs again
    // (a retry by content, no conflict) and stores a fresh answer.
    db.set("IDEMPOTENCY_HOURS", "2");
    db.exec(&format!(
        "UPDATE idempotency_keys SET created_at = created_at - INTERVAL 3 HOUR WHERE user_id = '{}'",
        user.id
    ));
    let fresh = keyed_push(&db, &user, "shared", &body);
    assert_eq!(fresh.ok()["synced"], 1);
    assert_eq!(fresh.header("Idempotent-Replayed"), None);
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM idempotency_keys WHERE user_id = '{}' AND created_at > UTC_TIMESTAMP(3) - INTERVAL 1 HOUR",
            user.id
        )),
        1
    );
    // `healthsync purge` sweeps keys older than IDEMPOTENCY_HOURS.
    db.exec(&format!(
        "UPDATE idempotency_keys SET created_at = created_at - INTERVAL 3 HOUR WHERE user_id = '{}'",
        other.id
    ));
    let output = db.cli(&["purge"]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 idempotency keys"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM idempotency_keys"), 1);
}

/// Holds the user's row lock from another connection for `seconds`.
fn hold_user_lock(db: &TestDb, user_id: &str, seconds: f64) -> std::thread::JoinHandle<()> {
    use mysql::prelude::Queryable;
    let mut conn = db.conn();
    let user_id = user_id.to_owned();
    let locked = std::sync::mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        conn.query_drop("START TRANSACTION")
            .unwrap_or_else(|e| panic!("{e}"));
        conn.exec_drop("SELECT id FROM users WHERE id = ? FOR UPDATE", (user_id,))
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = locked.0.send(());
        std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
        conn.query_drop("COMMIT").unwrap_or_else(|e| panic!("{e}"));
    });
    let _ = locked.1.recv();
    handle
}

#[test]
fn concurrent_requests_with_one_key_serialize_and_all_but_one_replay() {
    let (db, user) = setup();
    let records: Vec<Value> = (1..=20)
        .map(|n| rec(&id(n), json!({"date": "2024-03-01", "n": n}), T1))
        .collect();
    let body = json!({ "meals": records }).to_string();
    // Every request is in flight, waiting on the user row, when it frees.
    let holder = hold_user_lock(&db, &user.id, 1.0);
    let responses: Vec<Resp> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| keyed_push(&db, &user, "race", &body)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| panic!("a pusher panicked"))
            })
            .collect()
    });
    let _ = holder.join();
    let fresh: Vec<&Resp> = responses
        .iter()
        .filter(|r| r.header("Idempotent-Replayed").is_none())
        .collect();
    assert_eq!(fresh.len(), 1, "exactly one ran");
    for response in &responses {
        assert_eq!(response.ok()["synced"], 20);
        assert_eq!(response.raw_body, fresh[0].raw_body);
    }
    assert_eq!(change_counter(&db, &user), 20);
}

// 9.2 State digest

#[test]
fn status_digests_are_the_xor_of_every_record_hash_after_every_kind_of_write() {
    let (db, user) = setup();
    let empty = status(&db, &user);
    for key in [
        "health_metrics",
        "medications",
        "meals",
        "exercises",
        "meal_plans",
    ] {
        assert_eq!(empty[key]["digest"], "0000000000000000", "{key}");
    }
    // Inserts, a plain update, a tombstone, a merged conflict, a kept-both
    // meal (a derived id), in push and bulk.
    push_meals(
        &db,
        &user,
        json!([
            rec(&id(1), json!({"date": "2024-03-01"}), T1),
            rec(&id(2), json!({"date": "2024-03-01"}), T1),
        ]),
    );
    db.post(
        "/api/sync/bulk",
        &json!({
            "meals": [
                {"id": id(1), "data": {"date": "2024-03-01", "x": 1}, "updated_at": T2, "base_version": 1},
                {"id": id(2), "data": {"date": "2024-03-01"}, "updated_at": T2, "deleted_at": T2},
            ],
            "health_metrics": [rec(&id(5), json!({"weight": 70, "notes": "a"}), T1)],
        }),
    )
    .token(&user.token)
    .send()
    .ok();
    let conflicted = db
        .post(
            "/api/sync/bulk",
            &json!({
                "meals": [{"id": id(1), "data": {"date": "2024-03-09"}, "updated_at": T3, "base_version": 1}],
                "health_metrics": [{"id": id(5), "data": {"height": 180, "notes": "b"}, "updated_at": T2, "base_version": 0}],
            }),
        )
        .token(&user.token)
        .send();
    let data = conflicted.ok();
    assert_eq!(
        data["meals"]["conflict_details"][0]["resolution"],
        "kept_both"
    );
    assert_eq!(
        data["health_metrics"]["conflict_details"][0]["resolution"],
        "merged"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM meals WHERE user_id = '{}'",
            user.id
        )),
        3
    );
    let now = status(&db, &user);
    for key in [
        "health_metrics",
        "medications",
        "meals",
        "exercises",
        "meal_plans",
    ] {
        assert_eq!(now[key]["digest"], stored_digest(&db, key, &user), "{key}");
    }
    // The bulk's last page carries the same digests, exact at its token.
    let pull_all = db
        .post("/api/sync/bulk", &json!({}))
        .token(&user.token)
        .send();
    let data = pull_all.ok();
    assert_eq!(data["has_more"], false);
    assert_eq!(data["sync_token"], now["sync_token"]);
    for key in [
        "health_metrics",
        "medications",
        "meals",
        "exercises",
        "meal_plans",
    ] {
        assert_eq!(data["digests"][key], now[key]["digest"], "{key}");
    }
}

#[test]
fn only_the_last_page_of_a_pull_or_bulk_carries_digests_matching_what_it_sent() {
    let (db, user) = setup();
    let records: Vec<Value> = (1..=7)
        .map(|n| rec(&id(n), json!({"date": "2024-03-01"}), T1))
        .collect();
    push_meals(&db, &user, json!(records));
    // Pages of 3: the device's copy is what the pages sent.
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    let mut cursor = String::new();
    let last = loop {
        let query = match cursor.as_str() {
            "" => "limit=3".to_owned(),
            token => format!("limit=3&sync_token={token}"),
        };
        let page = db
            .get(&format!("/api/meals?{query}"))
            .token(&user.token)
            .send()
            .ok()
            .clone();
        for record in page["meals"].as_array().unwrap_or(&Vec::new()) {
            held.insert(
                record["id"].as_str().unwrap_or_default().to_owned(),
                record["version"].as_u64().unwrap_or(0),
            );
        }
        cursor = page["next_sync_token"].as_str().unwrap_or("").to_owned();
        if page["has_more"] == false {
            break page;
        }
        assert!(page.get("digest").is_none(), "{page}");
    };
    assert_eq!(
        last["digest"],
        digest_of(held.iter().map(|(id, v)| (id.as_str(), *v)))
    );
    assert_eq!(last["oldest_sync_token"], Value::Null);

    let bulk = |token: &str| {
        db.post("/api/sync/bulk", &json!({"limit": 4, "sync_token": token}))
            .token(&user.token)
            .send()
            .ok()
            .clone()
    };
    let first = bulk("0");
    assert_eq!(first["has_more"], true);
    assert!(first.get("digests").is_none(), "{first}");
    let second = bulk(first["sync_token"].as_str().unwrap_or(""));
    assert_eq!(second["has_more"], false);
    assert_eq!(second["digests"]["meals"], last["digest"]);
    assert_eq!(second["digests"]["medications"], "0000000000000000");
}

#[test]
fn purge_takes_purged_tombstones_out_of_the_digest_and_sets_the_oldest_sync_token() {
    let (db, user) = setup();
    push_meals(
        &db,
        &user,
        json!([
            rec(&id(1), json!({"date": "2024-03-01"}), T1),
            {"id": id(2), "data": {}, "updated_at": T1, "deleted_at": T1},
        ]),
    );
    let before = status(&db, &user);
    assert_eq!(before["oldest_sync_token"], Value::Null);
    db.exec(&format!(
        "UPDATE meals SET server_updated_at = server_updated_at - INTERVAL 200 DAY WHERE user_id = '{}'",
        user.id
    ));
    let output = db.cli(&["purge"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM meals WHERE user_id = '{}'",
            user.id
        )),
        1,
        "the tombstone was purged"
    );
    let after = status(&db, &user);
    // 9.2: the digest is over the records the user holds; the purged
    // tombstone has left it.
    assert_ne!(after["meals"]["digest"], before["meals"]["digest"]);
    assert_eq!(after["meals"]["digest"], stored_digest(&db, "meals", &user));

    // A device that pulls from scratch after the purge holds what the
    // digest says, and the token it is given is one the server accepts:
    // the page ends at the live record (version 1), below the watermark.
    let fresh = db.get("/api/meals").token(&user.token).send();
    let fresh = fresh.ok();
    assert_eq!(fresh["has_more"], false);
    assert_eq!(fresh["digest"], after["meals"]["digest"]);
    assert_eq!(fresh["next_sync_token"], "2");
    let again = db.get("/api/meals?sync_token=2").token(&user.token).send();
    assert_eq!(again.ok()["meals"], json!([]));

    // 9.5: the oldest cursor accepted, on status, pull and bulk alike.
    assert_eq!(after["oldest_sync_token"], "2");
    let pull = db.get("/api/meals?sync_token=2").token(&user.token).send();
    assert_eq!(pull.ok()["oldest_sync_token"], "2");
    db.get("/api/meals?sync_token=1")
        .token(&user.token)
        .send()
        .expect(410, "RESET_REQUIRED");
    let bulk = db
        .post("/api/sync/bulk", &json!({"sync_token": "2"}))
        .token(&user.token)
        .send();
    assert_eq!(bulk.ok()["oldest_sync_token"], "2");
}

#[test]
fn the_migration_fills_the_digests_of_existing_accounts() {
    let (db, user) = setup();
    db.post(
        "/api/sync/bulk",
        &json!({
            "meals": [
                rec(&id(1), json!({"date": "2024-03-01"}), T1),
                {"id": id(2), "data": {}, "updated_at": T1, "deleted_at": T1},
            ],
            "exercises": [rec(&id(3), json!({"kind": "run"}), T1)],
        }),
    )
    .token(&user.token)
    .send()
    .ok();
    push_meals(
        &db,
        &user,
        json!([{"id": id(1), "data": {"date": "2024-03-01", "v": 2}, "updated_at": T2, "base_version": 1}]),
    );
    let expected = status(&db, &user);
    // Back to a database before 0003, with the records in place.
    db.exec(
        "ALTER TABLE users DROP COLUMN health_metrics_digest, DROP COLUMN health_metrics_version, \
         DROP COLUMN medications_digest, DROP COLUMN medications_version, \
         DROP COLUMN meals_digest, DROP COLUMN meals_version, \
         DROP COLUMN exercises_digest, DROP COLUMN exercises_version, \
         DROP COLUMN meal_plans_digest, DROP COLUMN meal_plans_version, DROP COLUMN conflict_seq",
    );
    db.exec("DROP TABLE idempotency_keys, conflict_log");
    db.exec("DELETE FROM schema_migrations WHERE version = 3");
    let output = db.cli(&["migrate"]);
    assert!(output.status.success(), "{output:?}");
    let migrated = status(&db, &user);
    for key in [
        "health_metrics",
        "medications",
        "meals",
        "exercises",
        "meal_plans",
    ] {
        assert_eq!(migrated[key]["digest"], expected[key]["digest"], "{key}");
    }
    assert_ne!(migrated["meals"]["digest"], "0000000000000000");
    // And pulls from there on are exact: the highest versions were filled.
    let pull = db.get("/api/meals").token(&user.token).send();
    assert_eq!(pull.ok()["digest"], expected["meals"]["digest"]);
}

// 9.3 Repair

fn prefix_digest(db: &TestDb, user: &User, prefix: &str) -> Value {
    db.get(&format!("/api/meals/digest?prefix={prefix}"))
        .token(&user.token)
        .send()
        .ok()
        .clone()
}

#[test]
fn prefix_digests_have_sixteen_children_or_at_most_64_records() {
    let (db, user) = setup();
    // 70 ids under "a", a few elsewhere: the root and "a" have children.
    let mut ids: Vec<String> = (0..70u32)
        .map(|n| format!("a{:x}{n:06x}-0000-4000-8000-000000000000", n % 16))
        .collect();
    ids.extend((0..5u32).map(|n| format!("{n:08x}-0000-4000-8000-000000000000")));
    let records: Vec<Value> = ids
        .iter()
        .map(|id| rec(id, json!({"date": "2024-03-01"}), T1))
        .collect();
    push_meals(&db, &user, json!(records));
    let root = prefix_digest(&db, &user, "");
    assert_eq!(root["prefix"], "");
    assert_eq!(root["count"], 75);
    assert_eq!(root["digest"], status(&db, &user)["meals"]["digest"]);
    assert_eq!(root["sync_token"], "75");
    assert!(root.get("records").is_none());
    let children = root["children"].as_object().cloned().unwrap_or_default();
    assert_eq!(children.len(), 16);
    assert_eq!(children["a"]["count"], 70, "{root}");
    assert_eq!(children["0"]["count"], 5);
    assert_eq!(
        children["5"],
        json!({"count": 0, "digest": "0000000000000000"})
    );

    let a = prefix_digest(&db, &user, "a");
    assert_eq!(a["count"], 70);
    assert_eq!(a["digest"], children["a"]["digest"]);
    let a_children = a["children"].as_object().cloned().unwrap_or_default();
    assert!(a_children
        .keys()
        .all(|k| k.len() == 2 && k.starts_with('a')));
    let leaf_key = a_children
        .iter()
        .find(|(_, child)| child["count"].as_u64().unwrap_or(0) > 1)
        .map(|(key, _)| key.clone())
        .unwrap_or_else(|| panic!("a child with records: {a}"));
    let leaf = prefix_digest(&db, &user, &leaf_key);
    let listed = leaf["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(Some(listed.len() as u64), leaf["count"].as_u64());
    let listed_ids: Vec<&str> = listed.iter().filter_map(|r| r["id"].as_str()).collect();
    let mut sorted = listed_ids.clone();
    sorted.sort_unstable();
    assert_eq!(listed_ids, sorted, "ascending id");
    assert_eq!(
        leaf["digest"],
        digest_of(listed.iter().map(|r| (
            r["id"].as_str().unwrap_or(""),
            r["version"].as_u64().unwrap_or(0)
        )))
    );
    assert_eq!(leaf["digest"], a_children[&leaf_key]["digest"]);
    // An empty prefix of 8 digits: a leaf with nothing in it.
    let none = prefix_digest(&db, &user, "ffffffff");
    assert_eq!(none["count"], 0);
    assert_eq!(none["records"], json!([]));

    for bad in ["A", "g", "123456789", "a-"] {
        db.get(&format!("/api/meals/digest?prefix={bad}"))
            .token(&user.token)
            .send()
            .expect(400, "VALIDATION_ERROR");
    }
}

#[test]
fn fetch_returns_current_records_in_the_order_asked_each_once() {
    let (db, user) = setup();
    push_meals(
        &db,
        &user,
        json!([
            rec(&id(1), json!({"date": "2024-03-01"}), T1),
            {"id": id(2), "data": {}, "updated_at": T1, "deleted_at": T1},
        ]),
    );
    let fetch = |ids: Value| {
        db.post("/api/meals/fetch", &json!({ "ids": ids }))
            .token(&user.token)
            .send()
    };
    let response = fetch(json!([id(2), id(9), id(1).to_uppercase(), id(2)]));
    let data = response.ok();
    let got: Vec<&str> = data["meals"]
        .as_array()
        .map(|list| list.iter().filter_map(|r| r["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(got, vec![id(2).as_str(), id(1).as_str()]);
    assert_eq!(data["meals"][0]["deleted_at"], T1);
    assert_eq!(data["meals"][1]["version"], 1);
    assert_eq!(data["sync_token"], "2");
    // Another user's record is not theirs to fetch.
    let other = register(&db, "other@example.com");
    let theirs = db
        .post("/api/meals/fetch", &json!({"ids": [id(1)]}))
        .token(&other.token)
        .send();
    assert_eq!(theirs.ok()["meals"], json!([]));

    let too_many: Vec<String> = (1..=101).map(id).collect();
    for bad in [
        json!([]),
        json!(too_many),
        json!(["00000000-0000-0000-0000-000000000000"]),
        json!(["not-a-uuid"]),
        json!([1]),
        json!("x"),
    ] {
        fetch(bad).expect(400, "VALIDATION_ERROR");
    }
}

#[test]
fn a_corrupted_device_copy_is_found_and_repaired_fetching_only_what_differs() {
    let (db, user) = setup();
    let mut rng = crate::support::Rng(7);
    let ids: Vec<String> = (0..300).map(|_| rng.uuid()).collect();
    let records: Vec<Value> = ids
        .iter()
        .map(|id| rec(id, json!({"date": "2024-03-01"}), T1))
        .collect();
    push_meals(&db, &user, json!(records));
    let edited = json!({"meals": [
        {"id": ids[10], "data": {"date": "2024-03-01", "e": 1}, "updated_at": T2, "base_version": 11},
    ]});
    db.post("/api/meals/sync", &edited)
        .token(&user.token)
        .send()
        .ok();
    // The device pulled everything, then lost one record and kept an old
    // version of the edited one.
    let mut device: BTreeMap<String, u64> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (id.clone(), n as u64 + 1))
        .collect();
    device.remove(&ids[200]);
    let server = status(&db, &user)["meals"]["digest"].clone();
    assert_ne!(
        digest_of(device.iter().map(|(id, v)| (id.as_str(), *v))),
        server
    );

    let mut to_fetch: Vec<String> = Vec::new();
    let mut prefixes = vec![String::new()];
    let mut requests = 0;
    while let Some(prefix) = prefixes.pop() {
        requests += 1;
        let answer = prefix_digest(&db, &user, &prefix);
        let mine = |device: &BTreeMap<String, u64>, p: &str| {
            device
                .iter()
                .filter(|(id, _)| id.replace('-', "").starts_with(p))
                .map(|(id, v)| (id.clone(), *v))
                .collect::<Vec<_>>()
        };
        if let Some(children) = answer["children"].as_object() {
            for (child, value) in children {
                let held = mine(&device, child);
                if value["digest"] != digest_of(held.iter().map(|(id, v)| (id.as_str(), *v))) {
                    prefixes.push(child.clone());
                }
            }
            continue;
        }
        let theirs: BTreeMap<String, u64> = answer["records"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap_or("").to_owned(),
                    r["version"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        for (id, version) in &theirs {
            if device.get(id) != Some(version) {
                to_fetch.push(id.clone());
            }
        }
        for (id, _) in mine(&device, &prefix) {
            if !theirs.contains_key(&id) {
                device.remove(&id);
            }
        }
    }
    to_fetch.sort_unstable();
    let mut expected = vec![ids[10].clone(), ids[200].clone()];
    expected.sort_unstable();
    assert_eq!(to_fetch, expected, "only the records that differ");
    assert!(requests < 40, "{requests} digest requests");
    let fetched = db
        .post("/api/meals/fetch", &json!({ "ids": to_fetch }))
        .token(&user.token)
        .send();
    for record in fetched.ok()["meals"].as_array().unwrap_or(&Vec::new()) {
        device.insert(
            record["id"].as_str().unwrap_or("").to_owned(),
            record["version"].as_u64().unwrap_or(0),
        );
    }
    assert_eq!(
        digest_of(device.iter().map(|(id, v)| (id.as_str(), *v))),
        server
    );
}

// 9.4 Conflict log

#[test]
fn conflicts_are_logged_with_seq_time_and_device_and_paged_by_seq() {
    let (db, user) = setup();
    push_meals(
        &db,
        &user,
        json!([
            rec(&id(1), json!({"date": "2024-03-01"}), T2),
            rec(&id(2), json!({"date": "2024-03-01"}), T2),
            rec(&id(3), json!({"date": "2024-03-01"}), T2),
        ]),
    );
    // Three conflicts: the server wins two (older edits), kept-both one.
    let pushed = db
        .post(
            "/api/meals/sync",
            &json!({"meals": [
                {"id": id(1), "data": {"date": "2024-03-01", "old": 1}, "updated_at": T1, "base_version": 0},
                {"id": id(2), "data": {"date": "2024-03-01", "old": 2}, "updated_at": T1, "base_version": 0},
                {"id": id(3), "data": {"date": "2024-04-01"}, "updated_at": T3, "base_version": 0},
            ]}),
        )
        .token(&user.token)
        .var("HTTP_X_DEVICE_ID", "phone-7")
        .send();
    let details = pushed.ok()["conflict_details"].clone();
    assert_eq!(details.as_array().map(Vec::len), Some(3));

    let page = |query: &str| {
        db.get(&format!("/api/sync/conflicts{query}"))
            .token(&user.token)
            .send()
            .ok()
            .clone()
    };
    let first = page("?limit=2");
    assert_eq!(first["has_more"], true);
    assert_eq!(first["next_after"], 2);
    let second = page("?after=2&limit=2");
    assert_eq!(second["has_more"], false);
    assert_eq!(second["next_after"], 3);
    let mut entries = first["conflicts"].as_array().cloned().unwrap_or_default();
    entries.extend(second["conflicts"].as_array().cloned().unwrap_or_default());
    for (n, (entry, detail)) in entries
        .iter()
        .zip(details.as_array().unwrap_or(&Vec::new()))
        .enumerate()
    {
        assert_eq!(entry["seq"], n as u64 + 1);
        assert_eq!(entry["device_id"], "phone-7");
        for field in [
            "entity_id",
            "entity_type",
            "client_version",
            "server_version",
            "resolution",
        ] {
            assert_eq!(entry[field], detail[field], "{field}");
        }
        let at = crate::support::parse_ms(entry["at"].as_str().unwrap_or(""));
        assert!((crate::support::now_ms() - at).abs() < 60_000);
    }
    let empty = page("?after=3");
    assert_eq!(empty["conflicts"], json!([]));
    assert_eq!(empty["next_after"], 3);
    assert_eq!(page("")["conflicts"].as_array().map(Vec::len), Some(3));
    for bad in ["?after=-1", "?after=x", "?limit=0", "?limit=1001"] {
        db.get(&format!("/api/sync/conflicts{bad}"))
            .token(&user.token)
            .send()
            .expect(400, "VALIDATION_ERROR");
    }
}

#[test]
fn a_replay_or_a_retry_by_content_logs_nothing_new() {
    let (db, user) = setup();
    push_meals(
        &db,
        &user,
        json!([rec(&id(1), json!({"date": "2024-03-01", "n": 1}), T2)]),
    );
    let conflicting = json!({"meals": [
        {"id": id(1), "data": {"date": "2024-03-01", "n": 2}, "updated_at": T3, "base_version": 0},
    ]})
    .to_string();
    keyed_push(&db, &user, "c-1", &conflicting).ok();
    let logged = || {
        db.count(&format!(
            "SELECT COUNT(*) FROM conflict_log WHERE user_id = '{}'",
            user.id
        ))
    };
    assert_eq!(logged(), 1);
    keyed_push(&db, &user, "c-1", &conflicting).ok();
    assert_eq!(logged(), 1);
    // The client won: the same record again is a retry, no conflict.
    let retry = db
        .request("POST", "/api/meals/sync")
        .raw("application/json", conflicting.into_bytes())
        .token(&user.token)
        .send();
    assert_eq!(retry.ok()["conflicts"], 0);
    assert_eq!(logged(), 1);
}

#[test]
fn conflicts_are_exported_purged_after_tombstone_days_and_erased_with_the_account() {
    let (db, user) = setup();
    let conflict = |n: u32| {
        db.post(
            "/api/meals/sync",
            &json!({"meals": [{"id": id(1), "data": {"date": "2024-03-01", "n": n}, "updated_at": T1, "base_version": 0}]}),
        )
        .token(&user.token)
        .send()
        .ok()
        .clone()
    };
    push_meals(
        &db,
        &user,
        json!([rec(&id(1), json!({"date": "2024-03-01"}), T2)]),
    );
    assert_eq!(conflict(1)["conflicts"], 1);
    let export = db.get("/api/account/export").token(&user.token).send();
    let exported = export.ok()["conflicts"].clone();
    assert_eq!(exported.as_array().map(Vec::len), Some(1));
    assert_eq!(exported[0]["seq"], 1);
    assert_eq!(exported[0]["resolution"], "server_wins");

    db.exec(&format!(
        "UPDATE conflict_log SET at = at - INTERVAL 181 DAY WHERE user_id = '{}'",
        user.id
    ));
    let output = db.cli(&["purge"]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 conflict-log entries"));
    let listed = db.get("/api/sync/conflicts").token(&user.token).send();
    assert_eq!(listed.ok()["conflicts"], json!([]));
    // `seq` never goes back, even after the log was emptied.
    conflict(2);
    let listed = db.get("/api/sync/conflicts").token(&user.token).send();
    assert_eq!(listed.ok()["conflicts"][0]["seq"], 2);

    keyed_push(&db, &user, "erase-me", &json!({"meals": []}).to_string()).ok();
    db.request("DELETE", "/api/account")
        .json(&json!({"password": user.password}))
        .token(&user.token)
        .send()
        .ok();
    for table in ["conflict_log", "idempotency_keys"] {
        assert_eq!(
            db.count(&format!(
                "SELECT COUNT(*) FROM {table} WHERE user_id = '{}'",
                user.id
            )),
            0,
            "{table}"
        );
    }
}

#[test]
fn sync_disabled_applies_to_digest_fetch_and_conflicts() {
    let (db, user) = setup();
    db.request("PATCH", "/api/account")
        .json(&json!({"sync_enabled": false}))
        .token(&user.token)
        .send()
        .ok();
    db.get("/api/meals/digest")
        .token(&user.token)
        .send()
        .expect(403, "SYNC_DISABLED");
    db.post("/api/meals/fetch", &json!({"ids": [id(1)]}))
        .token(&user.token)
        .send()
        .expect(403, "SYNC_DISABLED");
    db.get("/api/sync/conflicts")
        .token(&user.token)
        .send()
        .expect(403, "SYNC_DISABLED");
    // 400 comes before SYNC_DISABLED, 401 before everything.
    db.get("/api/meals/digest?prefix=G")
        .token(&user.token)
        .send()
        .expect(400, "VALIDATION_ERROR");
    db.get("/api/sync/conflicts")
        .send()
        .expect(401, "UNAUTHORIZED");
}

// Concurrency

/// A device's copy, paged in with `sync_token`: `(id -> version)`.
struct Copy {
    held: BTreeMap<String, u64>,
    cursor: String,
}

impl Copy {
    fn digest(&self) -> String {
        digest_of(self.held.iter().map(|(id, v)| (id.as_str(), *v)))
    }

    fn apply(&mut self, records: &Value) {
        for record in records.as_array().unwrap_or(&Vec::new()) {
            self.held.insert(
                record["id"].as_str().unwrap_or_default().to_owned(),
                record["version"].as_u64().unwrap_or(0),
            );
        }
    }
}

/// Pushes per pusher: enough that pullers land between a push's commit
/// and their own reads many times.
const PUSHES: usize = 40;

#[test]
fn digests_stay_exact_while_four_pushers_and_four_pullers_share_one_user() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let (db, user) = setup();
    let pushing = AtomicBool::new(true);
    let verified = AtomicUsize::new(0);
    let pool: Vec<String> = (0..40).map(|n| id(n + 1)).collect();
    std::thread::scope(|scope| {
        let pushers: Vec<_> = (0..4u64)
            .map(|seed| {
                let (db, user, pool) = (&db, &user, &pool);
                scope.spawn(move || {
                    let mut rng = crate::support::Rng(seed + 100);
                    for _ in 0..PUSHES {
                        let mut ids: Vec<&String> = (0..5).map(|_| rng.pick(pool)).collect();
                        ids.sort_unstable();
                        ids.dedup();
                        let records: Vec<Value> = ids
                            .iter()
                            .map(|id| {
                                let at = crate::support::rfc3339(
                                    crate::support::now_ms() - rng.below(60_000) as i64,
                                );
                                let deleted = rng.chance(15).then(|| at.clone());
                                json!({"id": id, "data": {"date": "2024-03-01", "n": rng.next() % 1000},
                                       "updated_at": at, "deleted_at": deleted})
                            })
                            .collect();
                        push_meals(db, user, json!(records));
                    }
                })
            })
            .collect();
        for puller in 0..4 {
            let (db, user, pushing, verified) = (&db, &user, &pushing, &verified);
            scope.spawn(move || {
                let mut copy = Copy {
                    held: BTreeMap::new(),
                    cursor: "0".into(),
                };
                loop {
                    let done = !pushing.load(Ordering::SeqCst);
                    // Two pull per entity, two use bulk.
                    let (records, has_more, next, digest) = if puller % 2 == 0 {
                        let page = db
                            .get(&format!("/api/meals?limit=7&sync_token={}", copy.cursor))
                            .token(&user.token)
                            .send()
                            .ok()
                            .clone();
                        (
                            page["meals"].clone(),
                            page["has_more"].clone(),
                            page["next_sync_token"].clone(),
                            page["digest"].clone(),
                        )
                    } else {
                        let page = db
                            .post(
                                "/api/sync/bulk",
                                &json!({"limit": 7, "sync_token": copy.cursor}),
                            )
                            .token(&user.token)
                            .send()
                            .ok()
                            .clone();
                        (
                            page["meals"]["server_updates"].clone(),
                            page["has_more"].clone(),
                            page["sync_token"].clone(),
                            page["digests"]["meals"].clone(),
                        )
                    };
                    copy.apply(&records);
                    copy.cursor = next.as_str().unwrap_or_default().to_owned();
                    if has_more == false {
                        assert_eq!(
                            digest,
                            Value::String(copy.digest()),
                            "puller {puller} at {}",
                            copy.cursor
                        );
                        verified.fetch_add(1, Ordering::SeqCst);
                        if done {
                            break;
                        }
                    }
                }
            });
        }
        for pusher in pushers {
            pusher.join().unwrap_or_else(|_| panic!("a pusher failed"));
        }
        pushing.store(false, Ordering::SeqCst);
    });
    assert!(verified.load(Ordering::SeqCst) >= 8, "digests checked");
    let now = status(&db, &user);
    assert_eq!(now["meals"]["digest"], stored_digest(&db, "meals", &user));
}
