//! The binary as CGI (environment + stdin, `Status:` line parsed), pointed
//! at whichever database a fault test set up, and the few requests the
//! fault tests make: register, push a batch, pull everything back.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_healthsync");
const SECRET: &str = "Kd8wQ3zT6nV1yR5hM9pB2xL7cF4jS0gA-fault-fixture";

/// The configuration one test gives the binary.
#[derive(Clone)]
pub struct App {
    pub env: HashMap<String, String>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub stderr: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The contract's answer to a database fault: 503
    /// `SERVICE_UNAVAILABLE` with an integer `Retry-After`.
    #[track_caller]
    pub fn assert_unavailable(&self) {
        assert_eq!(
            (self.status, self.body["error"]["code"].as_str()),
            (503, Some("SERVICE_UNAVAILABLE")),
            "expected 503: {}\nstderr: {}",
            self.body,
            self.stderr
        );
        let retry_after = self.header("Retry-After").unwrap_or("");
        assert!(
            retry_after.parse::<u32>().is_ok_and(|secs| secs > 0),
            "a 503 without a usable Retry-After: {retry_after:?}"
        );
    }

    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert!(
            (200..300).contains(&self.status) && self.body["success"] == Value::Bool(true),
            "expected success, got {}: {}\nstderr: {}",
            self.status,
            self.body,
            self.stderr
        );
        &self.body["data"]
    }
}

impl App {
    pub fn new(host: &str, port: u16, user: &str, password: &str, database: &str) -> App {
        let mut env = HashMap::new();
        for (key, value) in [
            ("DB_HOST", host),
            ("DB_PORT", &port.to_string()),
            ("DB_USER", user),
            ("DB_PASS", password),
            ("DB_NAME", database),
            ("JWT_SECRET_KEY", SECRET),
            ("REQUIRE_HTTPS", "false"),
            ("RATE_LIMIT_PER_MINUTE", "100000"),
            ("AUTH_RATE_LIMIT_PER_MINUTE", "100000"),
        ] {
            env.insert(key.to_owned(), value.to_owned());
        }
        App { env }
    }

    /// `healthsync migrate` with this configuration.
    pub fn migrate(&self) {
        let output = Command::new(BIN)
            .env_clear()
            .envs(&self.env)
            .arg("migrate")
            .output()
            .expect("run healthsync migrate");
        assert!(
            output.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// One request through the binary as CGI.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let body = body.map(|b| serde_json::to_vec(b).expect("a JSON body"));
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .envs(&self.env)
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("REQUEST_METHOD", method)
            .env("REQUEST_URI", path)
            .env(
                "QUERY_STRING",
                path.split_once('?').map(|(_, q)| q).unwrap_or(""),
            )
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("REMOTE_ADDR", "192.0.2.20");
        if let Some(token) = token {
            command.env("HTTP_AUTHORIZATION", format!("Bearer {token}"));
        }
        if let Some(body) = &body {
            command
                .env("CONTENT_TYPE", "application/json")
                .env("CONTENT_LENGTH", body.len().to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the binary");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stderr = child.stderr.take().expect("stderr");
        let body = body.unwrap_or_default();
        let (out, err) = std::thread::scope(|scope| {
            scope.spawn(move || {
                let _ = stdin.write_all(&body);
            });
            let err = scope.spawn(move || {
                let mut err = Vec::new();
                let _ = stderr.read_to_end(&mut err);
                err
            });
            let mut out = Vec::new();
            let _ = child.stdout.take().expect("stdout").read_to_end(&mut out);
            (out, err.join().unwrap_or_default())
        });
        let _ = child.wait();
        parse(&out, String::from_utf8_lossy(&err).into_owned())
    }

    /// Registers `email` and returns its access token.
    pub fn register(&self, email: &str) -> String {
        let response = self.send(
            "POST",
            "/api/auth/register",
            None,
            Some(&json!({"email": email, "password": "correct horse battery", "name": "F"})),
        );
        response.ok()["token"].as_str().expect("a token").to_owned()
    }

    pub fn push(&self, token: &str, batch: &[Value]) -> Resp {
        self.send(
            "POST",
            "/api/exercises/sync",
            Some(token),
            Some(&json!({ "exercises": batch })),
        )
    }

    /// Every exercise the user holds (tombstones included), by id, paged
    /// by `sync_token` to the end. Panics on a repeated id: a pager that
    /// returns a record twice, or a record stored twice.
    pub fn pull_all(&self, token: &str) -> BTreeMap<String, Value> {
        let mut held = BTreeMap::new();
        let mut cursor = String::new();
        loop {
            let path = if cursor.is_empty() {
                "/api/exercises?limit=1000".to_owned()
            } else {
                format!("/api/exercises?limit=1000&sync_token={cursor}")
            };
            let response = self.send("GET", &path, Some(token), None);
            let data = response.ok().clone();
            for record in data["exercises"].as_array().expect("a list of records") {
                let id = record["id"].as_str().expect("an id").to_owned();
                assert!(
                    held.insert(id.clone(), record.clone()).is_none(),
                    "record {id} came back twice"
                );
            }
            cursor = data["next_sync_token"]
                .as_str()
                .expect("a cursor")
                .to_owned();
            if data["has_more"] != Value::Bool(true) {
                return held;
            }
        }
    }
}

fn parse(stdout: &[u8], stderr: String) -> Resp {
    let split = stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no header end in CGI output: {:?}\nstderr: {stderr}",
                String::from_utf8_lossy(stdout)
            )
        });
    let head = String::from_utf8_lossy(&stdout[..split]).into_owned();
    let mut status = 0;
    let mut headers = Vec::new();
    for line in head.split("\r\n") {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        if name == "Status" {
            status = value
                .split(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    let raw = &stdout[split + 4..];
    let body = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(raw).unwrap_or_else(|e| {
            panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(raw))
        })
    };
    Resp {
        status,
        headers,
        body,
        stderr,
    }
}

/// Batches of new exercises, each record naming its batch, so a check can
/// tell a whole batch from part of one.
pub struct Batches {
    next: u64,
    tag: String,
}

impl Batches {
    pub fn new(tag: &str) -> Batches {
        Batches {
            next: 0,
            tag: tag.to_owned(),
        }
    }

    pub fn next(&mut self, size: usize) -> Batch {
        self.next += 1;
        let number = self.next;
        let updated_at = now_rfc3339();
        let records = (0..size)
            .map(|index| {
                json!({
                    "id": uuid::Uuid::new_v4().to_string(),
                    "data": {"tag": self.tag, "batch": number, "index": index,
                             "notes": "x".repeat(200)},
                    "updated_at": updated_at,
                })
            })
            .collect();
        Batch { number, records }
    }
}

pub struct Batch {
    pub number: u64,
    pub records: Vec<Value>,
}

impl Batch {
    pub fn ids(&self) -> Vec<String> {
        self.records
            .iter()
            .map(|r| r["id"].as_str().expect("an id").to_owned())
            .collect()
    }
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .expect("ms");
    now.format(&time::format_description::well_known::Rfc3339)
        .expect("format a timestamp")
}

/// What every fault must leave: every acknowledged batch stored whole and
/// exactly as sent, every other batch stored whole or not at all, and no
/// record the test never sent.
#[track_caller]
pub fn assert_all_or_nothing(
    held: &BTreeMap<String, Value>,
    acknowledged: &[Batch],
    unacknowledged: &[Batch],
) {
    let mut known = 0;
    for batch in acknowledged {
        for record in &batch.records {
            let id = record["id"].as_str().expect("an id");
            let stored = held.get(id).unwrap_or_else(|| {
                panic!("acknowledged record {id} (batch {}) is lost", batch.number)
            });
            assert_eq!(stored["data"], record["data"], "record {id} changed");
            known += 1;
        }
    }
    for batch in unacknowledged {
        let stored = batch
            .ids()
            .iter()
            .filter(|id| held.contains_key(*id))
            .count();
        assert!(
            stored == 0 || stored == batch.records.len(),
            "half a batch: {stored} of {} records of batch {} are stored",
            batch.records.len(),
            batch.number
        );
        known += stored;
    }
    assert_eq!(
        held.len(),
        known,
        "records stored that no acknowledged or refused batch sent"
    );
}
