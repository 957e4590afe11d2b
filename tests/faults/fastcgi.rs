//! A FastCGI worker killed (SIGKILL) in the middle of a push, behind a
//! real Apache with mod_fcgid (`deploy/local-server`, on the machine's
//! MariaDB at 127.0.0.1:3306 with a fresh database). The client sees an
//! error, the batch is stored whole or not at all, and Apache serves the
//! next request with a new worker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use serde_json::{json, Value};

use crate::client::{Batch, Batches, BIN};
use crate::http::Request;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// One Apache instance in FastCGI mode, stopped (and its database
/// dropped) on drop.
struct Instance {
    port: u16,
    database: String,
    htdocs: PathBuf,
}

impl Instance {
    fn start() -> Instance {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let instance = Instance {
            port,
            database: format!(
                "hs_fault_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            htdocs: Path::new(REPO)
                .join("target/local-server")
                .join(port.to_string())
                .join("htdocs"),
        };
        let mut command = Command::new(Path::new(REPO).join("deploy/local-server"));
        command
            .arg("start")
            .args([
                "--port",
                &port.to_string(),
                "--db",
                &instance.database,
                "--bin",
                BIN,
            ])
            .args(["--env", "RATE_LIMIT_PER_MINUTE=100000"])
            .args(["--env", "AUTH_RATE_LIMIT_PER_MINUTE=100000"]);
        if cfg!(feature = "test-hooks") {
            command.arg("--test-hooks");
        }
        let output = command.output().expect("run deploy/local-server");
        assert!(
            output.status.success(),
            "deploy/local-server start failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        instance
    }

    /// The FastCGI workers of this instance (the machine may run others):
    /// processes whose executable is this document root's binary.
    fn workers(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
                continue;
            };
            if exe.starts_with(&self.htdocs) {
                pids.push(pid);
            }
        }
        pids
    }

    fn kill_workers(&self) -> usize {
        let pids = self.workers();
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        pids.len()
    }

    fn root(&self) -> mysql::Conn {
        let opts = mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(3306)
            .user(Some("root"))
            .prefer_socket(false)
            .db_name(Some(&self.database));
        mysql::Conn::new(opts).expect("root on 127.0.0.1:3306")
    }

    fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Result<(u16, Value), String> {
        let mut request = Request::new("POST", path)
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(body).expect("a JSON body"));
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let response = request.send(self.port)?;
        Ok((response.status, response.json().unwrap_or(Value::Null)))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(REPO).join("deploy/local-server"))
            .args(["stop", "--port", &self.port.to_string()])
            .output();
        if let Ok(mut root) = mysql::Conn::new(
            mysql::OptsBuilder::new()
                .ip_or_hostname(Some("127.0.0.1"))
                .tcp_port(3306)
                .user(Some("root"))
                .prefer_socket(false),
        ) {
            let _ = root.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.database));
        }
        // A failed run keeps the state (httpd.conf, logs) for a post-mortem.
        if let Some(state_dir) = self.htdocs.parent() {
            if std::thread::panicking() {
                eprintln!(
                    "faults: the instance's state is kept in {}",
                    state_dir.display()
                );
            } else {
                let _ = std::fs::remove_dir_all(state_dir);
            }
        }
    }
}

/// How many of the batch's records are stored, each checked to be stored
/// once (the primary key says so; the count says it again).
fn stored_of(root: &mut mysql::Conn, user_id: &str, batch: &Batch) -> usize {
    let ids = batch.ids();
    let list = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let rows: Vec<(String, u64)> = root
        .exec(
            format!(
                "SELECT id, COUNT(*) FROM exercises WHERE user_id = ? AND id IN ({list}) GROUP BY id"
            ),
            (user_id,),
        )
        .expect("count the batch's rows");
    assert!(
        rows.iter().all(|(_, n)| *n == 1),
        "a record stored twice: {rows:?}"
    );
    rows.len()
}

/// Waits until a session on this instance's database runs a locking read
/// (the push waiting on the user's row; the machine's server may run
/// other databases' sessions).
fn wait_for_lock_wait(root: &mut mysql::Conn, database: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: Option<u64> = root
            .exec_first(
                "SELECT id FROM information_schema.processlist \
                 WHERE db = ? AND id <> CONNECTION_ID() AND command = 'Query' \
                 AND info LIKE '%FOR UPDATE%'",
                (database,),
            )
            .expect("read information_schema.innodb_trx");
        if waiting.is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the push never waited on the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "slow: Apache end to end, kills FastCGI workers"]
fn fastcgi_worker_killed_mid_push_stores_the_batch_whole_or_not_at_all() {
    let instance = Instance::start();
    let email = "worker-kill@example.com";
    let (status, body) = instance
        .post(
            "/api/auth/register",
            None,
            &json!({"email": email, "password": "correct horse battery", "name": "W"}),
        )
        .expect("register");
    assert_eq!(status, 201, "register: {body}");
    let token = body["data"]["token"].as_str().expect("a token").to_owned();
    let mut root = instance.root();
    let user_id: String = root
        .exec_first("SELECT id FROM users WHERE email = ?", (email,))
        .expect("read the user")
        .expect("the user's row");
    let mut batches = Batches::new("worker-kill");
    let push = |batch: &Batch| {
        instance.post(
            "/api/exercises/sync",
            Some(&token),
            &json!({"exercises": batch.records}),
        )
    };

    // The push waits on the user's row (held here), so the kill lands
    // inside its transaction, after its inserts were sent.
    let batch = batches.next(1000);
    let mut holder = instance.root();
    holder.query_drop("START TRANSACTION").unwrap();
    holder
        .exec_drop("SELECT id FROM users WHERE id = ? FOR UPDATE", (&user_id,))
        .unwrap();
    let answer = std::thread::scope(|scope| {
        let in_flight = scope.spawn(|| push(&batch));
        wait_for_lock_wait(&mut root, &instance.database);
        let killed = instance.kill_workers();
        assert!(killed > 0, "no FastCGI worker to kill");
        in_flight.join().unwrap()
    });
    holder.query_drop("ROLLBACK").unwrap();
    eprintln!("worker killed while the push waited on a lock: {answer:?}");
    if let Ok((status, _)) = &answer {
        assert!(
            *status >= 500,
            "a push whose worker was killed answered {status}"
        );
    }
    // The kill dropped the connection: MariaDB rolls its transaction back.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        stored_of(&mut root, &user_id, &batch),
        0,
        "a killed push was stored"
    );

    // Kills at varying points of a large push, without a lock: before the
    // body reached the worker, during the transaction or after the commit.
    for delay_ms in [0u64, 40, 80, 120, 160, 240] {
        let batch = batches.next(1000);
        let answer = std::thread::scope(|scope| {
            let in_flight = scope.spawn(|| push(&batch));
            std::thread::sleep(Duration::from_millis(delay_ms));
            let killed = instance.kill_workers();
            (in_flight.join().unwrap(), killed)
        });
        std::thread::sleep(Duration::from_millis(200));
        let stored = stored_of(&mut root, &user_id, &batch);
        let status = answer.0.as_ref().map(|(status, _)| *status);
        eprintln!(
            "worker killed {delay_ms} ms into a push of 1000 ({} killed): {status:?}, {stored} of 1000 stored",
            answer.1
        );
        assert!(
            stored == 0 || stored == 1000,
            "half a batch: {stored} of 1000 stored"
        );
        match status {
            Ok(200) => assert_eq!(stored, 1000, "an acknowledged push lost records"),
            Ok(status) => assert!(status >= 500, "a killed push answered {status}"),
            Err(_) => {}
        }
        // The next request is served, by a new worker.
        let next = batches.next(3);
        let (status, body) = push(&next).expect("the request after a kill");
        assert_eq!(status, 200, "the request after a kill: {body}");
    }
}
