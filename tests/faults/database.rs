//! Database faults, through the binary as CGI against a private MariaDB:
//! the server killed and restarted, the binary's connection killed, the
//! connection limit reached, a row lock held past the lock-wait timeout.
//! After each: a 503 with `Retry-After` (never a 500), every acknowledged
//! write pulled back, nothing stored twice, no half batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use serde_json::{json, Value};

use crate::client::{assert_all_or_nothing, App, Batches};
use crate::server::{Server, APP_PASSWORD, APP_USER};

struct Setup {
    server: Server,
    app: App,
    database: String,
    token: String,
    user_id: String,
}

fn setup(email: &str) -> Setup {
    let server = Server::start();
    let database = server.create_database();
    let app = App::new("127.0.0.1", server.port, APP_USER, APP_PASSWORD, &database);
    app.migrate();
    let token = app.register(email);
    let mut root = server.root();
    let user_id: String = root
        .exec_first(
            format!("SELECT id FROM `{database}`.users WHERE email = ?"),
            (email,),
        )
        .expect("read the user's id")
        .expect("the user's row");
    Setup {
        server,
        app,
        database,
        token,
        user_id,
    }
}

/// A root connection on the test's database.
fn admin(setup: &Setup) -> mysql::Conn {
    let mut conn = setup.server.root();
    conn.query_drop(format!("USE `{}`", setup.database))
        .expect("use the database");
    conn
}

/// The connection id of the binary's session while it runs a locking
/// read (the push waiting on the user's row), if it does.
fn lock_waiter(conn: &mut mysql::Conn) -> Option<u64> {
    conn.query_first(format!(
        "SELECT id FROM information_schema.processlist \
         WHERE user = '{APP_USER}' AND command = 'Query' AND info LIKE '%FOR UPDATE%'"
    ))
    .expect("read information_schema.processlist")
}

#[test]
#[ignore = "slow: starts, kills and restarts a private MariaDB"]
fn database_killed_during_pushes_loses_no_acknowledged_write() {
    let mut setup = setup("killed@example.com");
    let mut batches = Batches::new("killed");
    let acknowledged = Mutex::new(Vec::new());
    let refused = Mutex::new(Vec::new());
    let statuses = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let app = setup.app.clone();
    let token = setup.token.clone();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let batch = batches.next(25);
                let response = app.push(&token, &batch.records);
                statuses.lock().unwrap().push(response.status);
                match response.status {
                    200 => acknowledged.lock().unwrap().push(batch),
                    503 => {
                        response.assert_unavailable();
                        refused.lock().unwrap().push(batch);
                    }
                    other => panic!(
                        "a push during a database kill answered {other}: {}\nstderr: {}",
                        response.body, response.stderr
                    ),
                }
            }
        });
        std::thread::sleep(Duration::from_millis(800));
        setup.server.kill();
        std::thread::sleep(Duration::from_millis(1500));
        setup.server.restart();
        std::thread::sleep(Duration::from_millis(800));
        stop.store(true, Ordering::SeqCst);
    });
    let statuses = statuses.into_inner().unwrap();
    let acknowledged = acknowledged.into_inner().unwrap();
    let refused = refused.into_inner().unwrap();
    eprintln!(
        "killed: {} pushes, {} answered 200, {} answered 503 (Retry-After set)",
        statuses.len(),
        acknowledged.len(),
        refused.len()
    );
    assert!(!refused.is_empty(), "no push met the outage: {statuses:?}");
    let first_refusal = statuses.iter().position(|s| *s == 503).unwrap_or(0);
    assert!(
        statuses[first_refusal..].contains(&200),
        "no push succeeded after the restart: {statuses:?}"
    );
    let held = setup.app.pull_all(&setup.token);
    assert_all_or_nothing(&held, &acknowledged, &refused);
    let after = Batches::new("after").next(5);
    setup.app.push(&setup.token, &after.records).ok();
}

#[test]
#[ignore = "slow: starts a private MariaDB and waits on row locks"]
fn push_whose_connection_is_killed_answers_503_and_stores_nothing() {
    let setup = setup("connkill@example.com");
    let mut batches = Batches::new("connkill");
    let before = batches.next(10);
    setup.app.push(&setup.token, &before.records).ok();

    let mut holder = admin(&setup);
    holder.query_drop("START TRANSACTION").unwrap();
    holder
        .exec_drop(
            "SELECT id FROM users WHERE id = ? FOR UPDATE",
            (&setup.user_id,),
        )
        .unwrap();
    let batch = batches.next(50);
    let response = std::thread::scope(|scope| {
        let push = scope.spawn(|| setup.app.push(&setup.token, &batch.records));
        let mut killer = admin(&setup);
        let deadline = Instant::now() + Duration::from_secs(10);
        let waiter = loop {
            if let Some(id) = lock_waiter(&mut killer) {
                break id;
            }
            if push.is_finished() {
                let response = push.join().unwrap();
                panic!(
                    "the push answered {} without waiting on the lock: {}\nstderr: {}",
                    response.status, response.body, response.stderr
                );
            }
            assert!(
                Instant::now() < deadline,
                "no push waited on the lock within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        killer
            .query_drop(format!("KILL CONNECTION {waiter}"))
            .expect("kill the push's connection");
        push.join().unwrap()
    });
    holder.query_drop("ROLLBACK").unwrap();
    eprintln!(
        "connection killed: the push answered {} Retry-After={:?}",
        response.status,
        response.header("Retry-After")
    );
    response.assert_unavailable();

    let held = setup.app.pull_all(&setup.token);
    assert_all_or_nothing(
        &held,
        std::slice::from_ref(&before),
        std::slice::from_ref(&batch),
    );
    assert!(
        !held.contains_key(&batch.ids()[0]),
        "a refused push was stored"
    );
    // The device retries, and the retry is stored.
    setup.app.push(&setup.token, &batch.records).ok();
    let held = setup.app.pull_all(&setup.token);
    assert_all_or_nothing(&held, &[before, batch], &[]);
}

#[test]
#[ignore = "slow: starts a private MariaDB"]
fn connection_limit_reached_answers_503_then_recovers() {
    let setup = setup("maxconn@example.com");
    let mut batches = Batches::new("maxconn");
    let before = batches.next(10);
    setup.app.push(&setup.token, &before.records).ok();

    let mut root = setup.server.root();
    root.query_drop("SET GLOBAL max_connections = 4").unwrap();
    let mut held_connections = Vec::new();
    let refusal = loop {
        match setup.server.app_conn(&setup.database) {
            Ok(conn) => held_connections.push(conn),
            Err(error) => break error,
        }
        assert!(
            held_connections.len() < 50,
            "max_connections is not enforced"
        );
    };
    assert!(
        refusal.to_string().contains("1040") || refusal.to_string().contains("Too many"),
        "unexpected refusal: {refusal}"
    );
    let refused = batches.next(10);
    let push = setup.app.push(&setup.token, &refused.records);
    let health = setup.app.send("GET", "/api/health", None, None);
    let pull = setup
        .app
        .send("GET", "/api/exercises", Some(&setup.token), None);
    eprintln!(
        "max_connections: {} held; push {} pull {} health {} (Retry-After {:?})",
        held_connections.len(),
        push.status,
        pull.status,
        health.status,
        push.header("Retry-After")
    );
    push.assert_unavailable();
    pull.assert_unavailable();
    health.assert_unavailable();

    drop(held_connections);
    root.query_drop("SET GLOBAL max_connections = 151").unwrap();
    let after = batches.next(10);
    setup.app.push(&setup.token, &after.records).ok();
    let held = setup.app.pull_all(&setup.token);
    assert_all_or_nothing(&held, &[before, after], std::slice::from_ref(&refused));
    assert!(
        !held.contains_key(&refused.ids()[0]),
        "a refused push was stored"
    );
}

#[test]
#[ignore = "slow: holds a row lock past four 2 s lock waits"]
fn row_lock_held_past_the_wait_timeout_answers_503_and_stores_nothing() {
    let setup = setup("rowlock@example.com");
    let mut batches = Batches::new("rowlock");
    let before = batches.next(10);
    setup.app.push(&setup.token, &before.records).ok();
    let locked_id = before.ids()[3].clone();

    // The batch: nine new records and an edit of the record held locked.
    let mut batch = batches.next(9);
    let mut edit = before.records[3].clone();
    edit["data"] = json!({"tag": "rowlock", "edited": true});
    edit["updated_at"] = Value::String(
        (time::OffsetDateTime::now_utc() + time::Duration::seconds(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    );
    batch.records.push(edit);

    let mut holder = admin(&setup);
    holder.query_drop("START TRANSACTION").unwrap();
    holder
        .exec_drop(
            "SELECT id FROM exercises WHERE user_id = ? AND id = ? FOR UPDATE",
            (&setup.user_id, &locked_id),
        )
        .unwrap();
    let started = Instant::now();
    let response = setup.app.push(&setup.token, &batch.records);
    let waited = started.elapsed();
    holder.query_drop("ROLLBACK").unwrap();
    eprintln!(
        "row lock: the push answered {} after {:.1} s, Retry-After={:?}",
        response.status,
        waited.as_secs_f64(),
        response.header("Retry-After")
    );
    response.assert_unavailable();
    assert!(
        waited >= Duration::from_secs(4),
        "answered after {waited:?}: the lock wait was not retried"
    );

    let held = setup.app.pull_all(&setup.token);
    assert_eq!(held[&locked_id]["data"], before.records[3]["data"]);
    let new_ids: Vec<String> = batch
        .ids()
        .into_iter()
        .filter(|id| *id != locked_id)
        .collect();
    assert!(
        new_ids.iter().all(|id| !held.contains_key(id)),
        "part of a refused batch was stored"
    );
    assert_eq!(held.len(), before.records.len());

    // Once the lock is gone, the same batch is stored whole.
    setup.app.push(&setup.token, &batch.records).ok();
    let held = setup.app.pull_all(&setup.token);
    assert_eq!(
        held[&locked_id]["data"],
        json!({"tag": "rowlock", "edited": true})
    );
    assert!(new_ids.iter().all(|id| held.contains_key(id)));
    assert_eq!(held.len(), before.records.len() + 9);
}
