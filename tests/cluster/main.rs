//! healthsync on a three-node MariaDB Galera cluster behind two Apache
//! front ends (FastCGI): front end A on node 1, B on node 2, node 3 for the
//! quorum. The cluster is `deploy/cluster`'s; these tests only use it, so
//! they run through `deploy/cluster test` (which starts one, runs them and
//! stops it), never by plain `cargo test` (`test = false` in Cargo.toml).
//!
//! `HEALTHSYNC_CLUSTER_FACTS` names the cluster's facts file (default
//! `target/cluster/facts`); `HEALTHSYNC_CLUSTER_SHORT=1` runs the loads for
//! seconds (CI), else for `HEALTHSYNC_CLUSTER_SECONDS` (default 120).
//! Each load test prints one summary line: requests, answers by status,
//! certification conflicts the nodes counted, records checked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The end-to-end tests' minimal client (one request per connection).
#[path = "../e2e/support/http.rs"]
#[allow(dead_code)]
mod http;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use serde_json::{json, Value};

use crate::http::{Request, Response};

const SLUG: &str = "health-metrics";
const LIST_KEY: &str = "metrics";

struct Cluster {
    facts: HashMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Front {
    A,
    B,
}

impl Cluster {
    fn load() -> Cluster {
        let path = std::env::var_os("HEALTHSYNC_CLUSTER_FACTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cluster/facts"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "\n\nThe cluster tests need a running cluster: {} ({e}).\n\
                 Run them with `deploy/cluster test` (it starts and stops one), or\n\
                 `deploy/cluster start` first.\n",
                path.display()
            )
        });
        let facts = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Cluster { facts }
    }

    fn fact(&self, key: &str) -> &str {
        self.facts
            .get(key)
            .unwrap_or_else(|| panic!("{key} is not in the facts file"))
    }

    fn port(&self, front: Front) -> u16 {
        let key = match front {
            Front::A => "FRONT_A_PORT",
            Front::B => "FRONT_B_PORT",
        };
        self.fact(key).parse().unwrap()
    }

    /// A connection to node `n` as the application's user.
    fn node(&self, n: u8) -> mysql::Conn {
        let opts = mysql::OptsBuilder::new()
            .ip_or_hostname(Some(self.fact(&format!("NODE{n}_ADDR"))))
            .tcp_port(self.fact(&format!("NODE{n}_PORT")).parse().unwrap())
            .user(Some(self.fact("DB_USER")))
            .pass(Some(self.fact("DB_PASS")))
            .db_name(Some(self.fact("DB_NAME")))
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(3)));
        mysql::Conn::new(opts).unwrap_or_else(|e| panic!("node {n}: {e}"))
    }

    fn status(&self, n: u8, name: &str) -> u64 {
        let row: Option<(String, String)> = self
            .node(n)
            .query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
            .unwrap();
        row.and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
    }

    /// Transactions of node `n` that lost to another node's: failed
    /// certification at commit, or aborted by a replicated write. Each one
    /// is a 1213 the binary retried.
    fn conflicts(&self, n: u8) -> u64 {
        self.status(n, "wsrep_local_cert_failures") + self.status(n, "wsrep_local_bf_aborts")
    }

    fn script(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/cluster");
        let output = Command::new(&script).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "deploy/cluster {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The binary's command line against node `n`, with a private env file.
    fn cli(&self, n: u8, database: &str, args: &[&str]) -> std::process::Output {
        let env_file = std::env::temp_dir().join(format!(
            "healthsync-cluster-{}.env",
            uuid::Uuid::new_v4().simple()
        ));
        let env = format!(
            "DB_HOST={}\nDB_PORT={}\nDB_NAME={database}\nDB_USER={}\nDB_PASS={}\n\
             JWT_SECRET_KEY=Xq7vR2mK9pL4wN8tB3yH6jD1fG5sZ0cA-cluster-cli\nREQUIRE_HTTPS=false\n",
            self.fact(&format!("NODE{n}_ADDR")),
            self.fact(&format!("NODE{n}_PORT")),
            self.fact("DB_USER"),
            self.fact("DB_PASS"),
        );
        std::fs::write(&env_file, env).unwrap();
        let mut permissions = std::fs::metadata(&env_file).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
        std::fs::set_permissions(&env_file, permissions).unwrap();
        let output = Command::new(self.fact("BIN"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HEALTHSYNC_ENV_FILE", &env_file)
            .args(args)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&env_file);
        output
    }
}

fn short() -> bool {
    std::env::var("HEALTHSYNC_CLUSTER_SHORT").is_ok_and(|v| v == "1")
}

/// How long a load runs.
fn load_seconds() -> u64 {
    if short() {
        return 10;
    }
    std::env::var("HEALTHSYNC_CLUSTER_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
}

fn call(port: u16, method: &str, path: &str, token: &str, body: Option<&Value>) -> Response {
    try_call(port, method, path, token, body)
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

fn try_call(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<Response, String> {
    let mut request = Request::new(method, path);
    if !token.is_empty() {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    request.send(port)
}

struct User {
    token: String,
}

fn register(port: u16, label: &str) -> User {
    let email = format!("{label}-{}@example.com", uuid::Uuid::new_v4().simple());
    let body = json!({"email": email, "password": "correct horse battery staple", "name": "C"});
    let response = call(port, "POST", "/api/auth/register", "", Some(&body));
    assert_eq!(response.status, 201, "register: {response}");
    let data = response.json().unwrap()["data"].clone();
    User {
        token: data["token"].as_str().unwrap().to_owned(),
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn new_records(count: usize) -> Vec<Value> {
    (0..count)
        .map(|n| {
            json!({
                "id": uuid::Uuid::new_v4().to_string(),
                "data": {"type": "steps", "value": n, "unit": "count"},
                "updated_at": now_rfc3339(),
                "deleted_at": null,
            })
        })
        .collect()
}

/// Every record of the user's metrics, paged with `sync_token` through
/// `port`: id -> version, asserting no id comes twice and versions rise.
fn full_pull(port: u16, token: &str, limit: u32) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    let mut cursor = "0".to_owned();
    let mut last = 0;
    loop {
        let path = format!("/api/{SLUG}?sync_token={cursor}&limit={limit}");
        let response = call(port, "GET", &path, token, None);
        assert_eq!(response.status, 200, "{path}: {response}");
        let data = response.json().unwrap()["data"].clone();
        for record in data[LIST_KEY].as_array().unwrap() {
            let id = record["id"].as_str().unwrap().to_owned();
            let version = record["version"].as_u64().unwrap();
            assert!(version > last, "version {version} after {last} in a pull");
            last = version;
            assert!(all.insert(id.clone(), version).is_none(), "{id} twice");
        }
        cursor = data["next_sync_token"].as_str().unwrap().to_owned();
        if data["has_more"] != json!(true) {
            return all;
        }
    }
}

/// What a pager saw: `(id, version)` in the order it saw them.
type Paged = Vec<(String, u64)>;

/// What the writers of a load saw.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    ok: AtomicU64,
    unavailable: AtomicU64,
    /// Anything else: a 500, another status, no answer; with its text.
    failures: Mutex<Vec<String>>,
    /// id -> version, from `applied` of every 200.
    acknowledged: Mutex<BTreeMap<String, u64>>,
    /// Records of batches answered 503: stored or not, never half.
    unanswered: Mutex<Vec<String>>,
}

impl Tally {
    fn push(&self, port: u16, token: &str, batch: usize) {
        let records = new_records(batch);
        let body = json!({ LIST_KEY: records });
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = format!("/api/{SLUG}/sync");
        let response = match try_call(port, "POST", &path, token, Some(&body)) {
            Ok(response) => response,
            Err(error) => {
                self.failures.lock().unwrap().push(error);
                return;
            }
        };
        match response.status {
            200 => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                let data = response.json().unwrap()["data"].clone();
                let applied = data["applied"].as_array().cloned().unwrap_or_default();
                if applied.len() != batch {
                    self.failures
                        .lock()
                        .unwrap()
                        .push(format!("{} of {batch} applied: {response}", applied.len()));
                }
                let mut acknowledged = self.acknowledged.lock().unwrap();
                for entry in applied {
                    acknowledged.insert(
                        entry["id"].as_str().unwrap().to_owned(),
                        entry["version"].as_u64().unwrap(),
                    );
                }
            }
            503 if response.header("Retry-After").is_some() => {
                self.unavailable.fetch_add(1, Ordering::Relaxed);
                let mut unanswered = self.unanswered.lock().unwrap();
                for record in &records {
                    unanswered.push(record["id"].as_str().unwrap().to_owned());
                }
                drop(unanswered);
                // A device waits before it sends again (a shorter wait than
                // the advised Retry-After, to keep the load up).
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => self.failures.lock().unwrap().push(response.to_string()),
        }
    }
}

/// A pager that follows one user's changes through `port` while they are
/// written, as a device would: it must see every version once, in order.
fn pager(port: u16, token: &str, stop: &AtomicBool) -> Paged {
    let mut seen = Vec::new();
    let mut cursor = 0u64;
    let mut last_round = false;
    loop {
        let finished = stop.load(Ordering::Relaxed);
        loop {
            let path = format!("/api/{SLUG}?sync_token={cursor}&limit=7");
            let Ok(response) = try_call(port, "GET", &path, token, None) else {
                break;
            };
            if response.status == 503 {
                break;
            }
            assert_eq!(response.status, 200, "pager {path}: {response}");
            let data = response.json().unwrap()["data"].clone();
            for record in data[LIST_KEY].as_array().unwrap() {
                let version = record["version"].as_u64().unwrap();
                let last = seen.last().map_or(cursor, |(_, v): &(String, u64)| *v);
                assert!(
                    version > last,
                    "the pager saw version {version} after {last}"
                );
                seen.push((record["id"].as_str().unwrap().to_owned(), version));
            }
            cursor = data["next_sync_token"].as_str().unwrap().parse().unwrap();
            if data["has_more"] != json!(true) {
                break;
            }
        }
        if last_round {
            return seen;
        }
        last_round = finished;
        std::thread::sleep(Duration::from_millis(if finished { 0 } else { 30 }));
    }
}

/// The whole user, pulled through both front ends, against what the
/// writers and pagers saw. Returns the number of records checked.
fn check_user(cluster: &Cluster, token: &str, tally: &Tally, pages: &[(Front, Paged)]) -> usize {
    let through_a = full_pull(cluster.port(Front::A), token, 500);
    let through_b = full_pull(cluster.port(Front::B), token, 333);
    assert_eq!(through_a, through_b, "the two front ends disagree");
    let acknowledged = tally.acknowledged.lock().unwrap();
    let mut lost = Vec::new();
    for (id, version) in acknowledged.iter() {
        if through_a.get(id) != Some(version) {
            lost.push(format!("{id} v{version}: {:?}", through_a.get(id)));
        }
    }
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // Every other record came from a batch answered 503 (stored whole or
    // not at all, which the client cannot tell, so it sends it again).
    let unanswered: std::collections::HashSet<String> =
        tally.unanswered.lock().unwrap().iter().cloned().collect();
    for id in through_a.keys() {
        assert!(
            acknowledged.contains_key(id) || unanswered.contains(id),
            "{id} is stored but no writer sent it"
        );
    }
    // Each record was written once: its versions are 1..=n, each once.
    let mut versions: Vec<u64> = through_a.values().copied().collect();
    versions.sort_unstable();
    let expected: Vec<u64> = (1..=versions.len() as u64).collect();
    assert!(
        versions == expected,
        "versions are not 1..={}: first gap near {:?}",
        versions.len(),
        versions
            .iter()
            .zip(&expected)
            .find(|(a, b)| a != b)
            .map(|(a, _)| a)
    );
    for (front, seen) in pages {
        let paged: BTreeMap<String, u64> = seen.iter().cloned().collect();
        assert_eq!(paged.len(), seen.len(), "pager {front:?} saw an id twice");
        assert!(
            paged == through_a,
            "pager {front:?} saw {} records, the user has {}",
            paged.len(),
            through_a.len()
        );
    }
    through_a.len()
}

/// Writers on both front ends push new records for one user until `stop`;
/// a pager on each front end follows along. `during` runs meanwhile.
fn run_load(
    cluster: &Cluster,
    user: &User,
    writers_per_front: usize,
    batch: usize,
    during: impl FnOnce(&AtomicBool),
) -> (Arc<Tally>, Vec<(Front, Paged)>) {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let pagers_stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    let mut pagers = Vec::new();
    for front in [Front::A, Front::B] {
        let port = cluster.port(front);
        for _ in 0..writers_per_front {
            let (tally, stop, token) = (tally.clone(), stop.clone(), user.token.clone());
            writers.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    tally.push(port, &token, batch);
                }
            }));
        }
        let (stop, token) = (pagers_stop.clone(), user.token.clone());
        pagers.push((
            front,
            std::thread::spawn(move || pager(port, &token, &stop)),
        ));
    }
    during(&stop);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    pagers_stop.store(true, Ordering::Relaxed);
    let pages = pagers
        .into_iter()
        .map(|(front, handle)| (front, handle.join().unwrap()))
        .collect();
    (tally, pages)
}

#[test]
#[ignore = "slow: needs deploy/cluster; run by `deploy/cluster test`"]
fn concurrent_pushes_of_one_user_through_both_front_ends_keep_versions_exact() {
    let cluster = Cluster::load();
    let user = register(cluster.port(Front::A), "concurrent");
    let conflicts_before = [cluster.conflicts(1), cluster.conflicts(2)];
    let seconds = load_seconds();
    let started = Instant::now();
    let (tally, pages) = run_load(&cluster, &user, 3, 5, |_| {
        std::thread::sleep(Duration::from_secs(seconds));
    });
    let elapsed = started.elapsed();
    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let checked = check_user(&cluster, &user.token, &tally, &pages);
    let conflicts = [
        cluster.conflicts(1) - conflicts_before[0],
        cluster.conflicts(2) - conflicts_before[1],
    ];
    let requests = tally.requests.load(Ordering::Relaxed);
    eprintln!(
        "concurrent pushes, one user, 3 writers per front end, 5 records a push, {:.0} s: \
         {requests} requests ({:.0}/s), {} ok, {} answered 503, certification conflicts \
         retried: node 1 {}, node 2 {}; {checked} records checked (versions 1..={checked}, \
         both pagers exact)",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        tally.ok.load(Ordering::Relaxed),
        tally.unavailable.load(Ordering::Relaxed),
        conflicts[0],
        conflicts[1],
    );
    assert!(
        conflicts[0] + conflicts[1] > 0,
        "no certification conflict happened: the test did not test the retry"
    );
    assert!(tally.ok.load(Ordering::Relaxed) > 0);
}

#[test]
#[ignore = "slow: needs deploy/cluster; run by `deploy/cluster test`"]
fn a_write_through_one_front_end_is_read_at_once_through_the_other() {
    let cluster = Cluster::load();
    let user = register(cluster.port(Front::A), "read-your-writes");
    let rounds = if short() { 100 } else { 500 };
    let causal_before =
        cluster.status(1, "wsrep_causal_reads") + cluster.status(2, "wsrep_causal_reads");
    for round in 0..rounds {
        let (to, from) = if round % 2 == 0 {
            (Front::A, Front::B)
        } else {
            (Front::B, Front::A)
        };
        let records = new_records(1);
        let id = records[0]["id"].as_str().unwrap().to_owned();
        let response = call(
            cluster.port(to),
            "POST",
            &format!("/api/{SLUG}/sync"),
            &user.token,
            Some(&json!({ LIST_KEY: records })),
        );
        assert_eq!(response.status, 200, "{response}");
        let data = response.json().unwrap()["data"].clone();
        let previous = data["previous_sync_token"].as_str().unwrap().to_owned();
        let path = format!("/api/{SLUG}?sync_token={previous}&limit=10");
        let pulled = call(cluster.port(from), "GET", &path, &user.token, None);
        assert_eq!(pulled.status, 200, "{pulled}");
        let pulled = pulled.json().unwrap()["data"].clone();
        let ids: Vec<&str> = pulled[LIST_KEY]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert!(
            ids.contains(&id.as_str()),
            "round {round}: pushed {id} through {to:?}, a pull through {from:?} right after returned {ids:?}"
        );
    }
    let causal = cluster.status(1, "wsrep_causal_reads") + cluster.status(2, "wsrep_causal_reads")
        - causal_before;
    eprintln!(
        "read your writes: {rounds} pushes each pulled at once through the other front end, \
         all seen; causal reads on nodes 1 and 2: {causal}"
    );
    // One causal read per request (the status line's own probes add a few).
    assert!(
        causal >= 2 * rounds,
        "{causal} causal reads for {rounds} rounds"
    );
}

#[test]
#[ignore = "slow: needs deploy/cluster; run by `deploy/cluster test`"]
fn a_node_killed_under_load_loses_no_acknowledged_write() {
    let cluster = Cluster::load();
    let user = register(cluster.port(Front::B), "node-kill");
    let seconds = load_seconds().max(10);
    let started = Instant::now();
    let b_ok_while_down = Arc::new(AtomicU64::new(0));
    let (tally, pages) = run_load(&cluster, &user, 2, 5, |_| {
        std::thread::sleep(Duration::from_secs(seconds / 3));
        cluster.script(&["node-kill", "1"]);
        // Front end B must keep answering while node 1 is gone, and store
        // again once the other nodes have declared it gone (after Galera's
        // evs.suspect_timeout, 5 s by default).
        let down_until = Instant::now() + Duration::from_secs((seconds / 3).max(12));
        let probe = register(cluster.port(Front::B), "while-down");
        while Instant::now() < down_until {
            let response = call(
                cluster.port(Front::B),
                "POST",
                &format!("/api/{SLUG}/sync"),
                &probe.token,
                Some(&json!({ LIST_KEY: new_records(1) })),
            );
            match response.status {
                200 => {
                    b_ok_while_down.fetch_add(1, Ordering::Relaxed);
                }
                503 => assert!(response.header("Retry-After").is_some(), "{response}"),
                _ => panic!("front end B while node 1 is down: {response}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster.script(&["node-start", "1"]);
        std::thread::sleep(Duration::from_secs(seconds / 3));
    });
    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let checked = check_user(&cluster, &user.token, &tally, &pages);
    let requests = tally.requests.load(Ordering::Relaxed);
    eprintln!(
        "node 1 killed under load and rejoined, {:.0} s: {requests} requests, {} ok, {} answered \
         503 with Retry-After, 0 other; front end B stored {} probe writes while node 1 was down; \
         {checked} records checked on both front ends",
        started.elapsed().as_secs_f64(),
        tally.ok.load(Ordering::Relaxed),
        tally.unavailable.load(Ordering::Relaxed),
        b_ok_while_down.load(Ordering::Relaxed),
    );
    assert!(
        b_ok_while_down.load(Ordering::Relaxed) > 0,
        "front end B stored nothing while node 1 was down"
    );
    assert!(
        tally.unavailable.load(Ordering::Relaxed) > 0,
        "front end A never answered 503 while its node was down"
    );
}

#[test]
#[ignore = "slow: needs deploy/cluster; run by `deploy/cluster test`"]
fn migrate_started_on_two_nodes_at_once_runs_once() {
    let cluster = Cluster::load();
    let database = format!(
        "hs_cluster_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    // Root over TCP from 127.0.0.1: the nodes' own administrator.
    let root = |n: u8| {
        mysql::Conn::new(
            mysql::OptsBuilder::new()
                .ip_or_hostname(Some(cluster.fact(&format!("NODE{n}_ADDR"))))
                .tcp_port(cluster.fact(&format!("NODE{n}_PORT")).parse().unwrap())
                .user(Some("root"))
                .prefer_socket(false),
        )
        .unwrap()
    };
    root(1)
        .query_drop(format!(
            "CREATE DATABASE `{database}` CHARACTER SET utf8mb4; \
             GRANT ALL PRIVILEGES ON `{database}`.* TO '{}'@'127.%'",
            cluster.fact("DB_USER")
        ))
        .unwrap();
    let outputs: Vec<std::process::Output> = std::thread::scope(|scope| {
        let first = scope.spawn(|| cluster.cli(1, &database, &["migrate"]));
        let second = scope.spawn(|| cluster.cli(3, &database, &["migrate"]));
        vec![first.join().unwrap(), second.join().unwrap()]
    });
    let mut applied_lines = 0;
    for output in &outputs {
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "migrate failed:\n{text}");
        applied_lines += text.lines().filter(|l| l.starts_with("applied ")).count();
    }
    let latest = healthsync::store::migrate::latest_version() as usize;
    assert_eq!(applied_lines, latest, "each migration applied once in all");
    // Every node holds the schema once.
    for n in [1u8, 2, 3] {
        let versions: Vec<u32> = root(n)
            .query(format!(
                "SELECT version FROM `{database}`.schema_migrations ORDER BY version"
            ))
            .unwrap();
        assert_eq!(
            versions,
            (1..=latest as u32).collect::<Vec<_>>(),
            "node {n}"
        );
    }
    let check = cluster.cli(2, &database, &["check"]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "check failed:\n{text}");
    assert!(
        text.contains("Galera cluster: size 3, this node Synced (Primary), wsrep_ready ON"),
        "check does not report the cluster:\n{text}"
    );
    root(1)
        .query_drop(format!("DROP DATABASE `{database}`"))
        .unwrap();
    eprintln!(
        "migrate on nodes 1 and 3 at once: {applied_lines} migrations applied once; check:\n{text}"
    );
}
