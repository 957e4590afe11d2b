//! Test support: a throwaway database per test (created, migrated by the
//! binary's own `migrate`, dropped on `Drop`), and requests sent to the
//! real binary as CGI (environment + stdin, `Status:` line parsed).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use mysql::prelude::Queryable;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_healthsync");
pub const SECRET: &str = "Xq7vR2mK9pL4wN8tB3yH6jD1fG5sZ0cA-it-fixture";

fn server_url() -> String {
    std::env::var("HEALTHSYNC_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

fn admin() -> mysql::Conn {
    let url = server_url();
    let opts = match mysql::Opts::from_url(&url) {
        Ok(opts) => opts,
        Err(e) => panic!("HEALTHSYNC_TEST_MYSQL={url} is not a MySQL URL: {e}"),
    };
    let opts = mysql::OptsBuilder::from_opts(opts)
        .prefer_socket(false)
        .tcp_connect_timeout(Some(std::time::Duration::from_secs(3)));
    match mysql::Conn::new(opts) {
        Ok(conn) => conn,
        Err(e) => panic!(
            "\n\nThe integration tests need MySQL/MariaDB at {url} (root, empty password): {e}\n\
             Start it with `deploy/local-server deps` (or: mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld \
             && start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd),\n\
             or point HEALTHSYNC_TEST_MYSQL at another server.\n"
        ),
    }
}

/// A fresh, migrated database, dropped when the value is.
pub struct TestDb {
    pub name: String,
    pub env: HashMap<String, String>,
}

impl TestDb {
    pub fn new() -> TestDb {
        let name = format!("hs_it_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin();
        conn.query_drop(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            .unwrap_or_else(|e| panic!("create database: {e}"));
        let url = server_url();
        let opts = mysql::Opts::from_url(&url).unwrap_or_else(|e| panic!("{e}"));
        let mut env = HashMap::new();
        env.insert("DB_HOST".into(), opts.get_ip_or_hostname().to_string());
        env.insert("DB_PORT".into(), opts.get_tcp_port().to_string());
        env.insert(
            "DB_USER".into(),
            opts.get_user().unwrap_or("root").to_string(),
        );
        env.insert("DB_PASS".into(), opts.get_pass().unwrap_or("").to_string());
        env.insert("DB_NAME".into(), name.clone());
        env.insert("JWT_SECRET_KEY".into(), SECRET.into());
        env.insert("REQUIRE_HTTPS".into(), "false".into());
        env.insert("RATE_LIMIT_PER_MINUTE".into(), "100000".into());
        env.insert("AUTH_RATE_LIMIT_PER_MINUTE".into(), "100000".into());
        let db = TestDb { name, env };
        let output = db.cli(&["migrate"]);
        assert!(
            output.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        db
    }

    pub fn set(&mut self, key: &str, value: &str) -> &mut TestDb {
        self.env.insert(key.into(), value.into());
        self
    }

    /// The binary as a command-line tool with this database's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(BIN);
        command.env_clear().envs(&self.env).args(args);
        command
            .output()
            .unwrap_or_else(|e| panic!("run {BIN}: {e}"))
    }

    /// The binary as a command-line tool, with some variables changed.
    pub fn cli_with(&self, overrides: &[(&str, &str)], args: &[&str]) -> std::process::Output {
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .envs(&self.env)
            .envs(overrides.iter().copied())
            .args(args);
        command
            .output()
            .unwrap_or_else(|e| panic!("run {BIN}: {e}"))
    }

    pub fn conn(&self) -> mysql::Conn {
        let mut conn = admin();
        conn.query_drop(format!("USE `{}`", self.name))
            .unwrap_or_else(|e| panic!("{e}"));
        conn
    }

    pub fn query<T: mysql::prelude::FromRow>(&self, sql: &str) -> Vec<T> {
        self.conn()
            .query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub fn count(&self, sql: &str) -> u64 {
        self.query::<u64>(sql)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("{sql}: no row"))
    }

    pub fn exec(&self, sql: &str) {
        self.conn()
            .query_drop(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn request(&self, method: &str, path: &str) -> Req<'_> {
        Req::new(self, method, path)
    }

    pub fn get(&self, path: &str) -> Req<'_> {
        self.request("GET", path)
    }

    pub fn post(&self, path: &str, body: &Value) -> Req<'_> {
        self.request("POST", path).json(body)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = admin().query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

/// One CGI request to the binary.
pub struct Req<'a> {
    db: &'a TestDb,
    vars: HashMap<String, Vec<u8>>,
    body: Vec<u8>,
    args: Vec<String>,
}

impl<'a> Req<'a> {
    fn new(db: &'a TestDb, method: &str, path: &str) -> Req<'a> {
        let mut vars: HashMap<String, Vec<u8>> = HashMap::new();
        vars.insert("GATEWAY_INTERFACE".into(), b"CGI/1.1".to_vec());
        vars.insert("REQUEST_METHOD".into(), method.as_bytes().to_vec());
        vars.insert("REQUEST_URI".into(), path.as_bytes().to_vec());
        let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
        vars.insert("QUERY_STRING".into(), query.as_bytes().to_vec());
        vars.insert("SERVER_PROTOCOL".into(), b"HTTP/1.1".to_vec());
        vars.insert("REMOTE_ADDR".into(), b"192.0.2.10".to_vec());
        Req {
            db,
            vars,
            body: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn var(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.vars.insert(key.into(), value.as_ref().to_vec());
        self
    }

    pub fn without(mut self, key: &str) -> Self {
        self.vars.remove(key);
        self
    }

    pub fn token(self, token: &str) -> Self {
        self.var("HTTP_AUTHORIZATION", format!("Bearer {token}"))
    }

    pub fn json(self, body: &Value) -> Self {
        self.raw(
            "application/json",
            serde_json::to_vec(body).unwrap_or_default(),
        )
    }

    pub fn raw(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        if !content_type.is_empty() {
            self.vars
                .insert("CONTENT_TYPE".into(), content_type.as_bytes().to_vec());
        }
        self.vars.insert(
            "CONTENT_LENGTH".into(),
            self.body.len().to_string().into_bytes(),
        );
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn send(self) -> Resp {
        self.send_measured().0
    }

    /// Sends the request and also returns the peak resident memory of the
    /// process that answered it, in KiB (its own rusage, not the test's).
    // Reaped by wait4 below, which std's Child cannot see.
    #[allow(unsafe_code, clippy::zombie_processes)]
    pub fn send_measured(self) -> (Resp, u64) {
        use std::io::Read;
        use std::os::unix::ffi::OsStrExt;
        let mut command = Command::new(BIN);
        command.env_clear().envs(&self.db.env).args(&self.args);
        for (key, value) in &self.vars {
            command.env(key, std::ffi::OsStr::from_bytes(value));
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let (mut stdin, mut stdout, mut stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => panic!("child pipes missing"),
            };
        let body = self.body.clone();
        let (out, err) = std::thread::scope(|scope| {
            // The binary may answer before reading everything (it must not,
            // but a broken pipe here would hide that as a test error).
            scope.spawn(move || {
                let _ = stdin.write_all(&body);
            });
            let err = scope.spawn(move || {
                let mut err = Vec::new();
                let _ = stderr.read_to_end(&mut err);
                err
            });
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            (out, err.join().unwrap_or_default())
        });
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of that plain C struct,
        // and wait4 writes only into the two locals it is handed.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(reaped, pid, "wait4 on the binary");
        let peak_kib = u64::try_from(usage.ru_maxrss).unwrap_or(0);
        (
            Resp::parse(&out, String::from_utf8_lossy(&err).into_owned()),
            peak_kib,
        )
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub raw_body: Vec<u8>,
    pub stderr: String,
}

impl Resp {
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
        let raw_body = stdout[split + 4..].to_vec();
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
        let body = if raw_body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw_body).unwrap_or_else(|e| {
                panic!(
                    "body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&raw_body)
                )
            })
        };
        Resp {
            status,
            headers,
            body,
            raw_body,
            stderr,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// Asserts the status and, for errors, the contract's code.
    #[track_caller]
    pub fn expect(&self, status: u16, code: &str) -> &Self {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "unexpected response: {}\nstderr: {}",
            self.body,
            self.stderr
        );
        self
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
        self.data()
    }
}

/// A registered user with a working pair of tokens.
pub struct User {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
    pub refresh: String,
}

pub fn register(db: &TestDb, email: &str) -> User {
    let password = "correct horse battery staple";
    let response = db
        .post(
            "/api/auth/register",
            &serde_json::json!({"email": email, "password": password, "name": "Test"}),
        )
        .send();
    let data = response.ok().clone();
    assert_eq!(response.status, 201);
    User {
        id: data["user"]["id"].as_str().unwrap_or_default().into(),
        email: data["user"]["email"].as_str().unwrap_or_default().into(),
        password: password.into(),
        token: data["token"].as_str().unwrap_or_default().into(),
        refresh: data["refresh_token"].as_str().unwrap_or_default().into(),
    }
}

/// `(URL slug, list key, bulk key = table)`, in the contract's order.
pub const ENTITIES: [(&str, &str, &str); 5] = [
    ("health-metrics", "metrics", "health_metrics"),
    ("medications", "medications", "medications"),
    ("meals", "meals", "meals"),
    ("exercises", "exercises", "exercises"),
    ("meal-plans", "meal_plans", "meal_plans"),
];

/// SplitMix64: small and seeded, so a failing seed can be run again.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn uuid(&mut self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string()
    }
}

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339, UTC, exactly three fractional digits, `Z`.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or_else(|e| panic!("timestamp {ms}: {e}"));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

pub fn parse_ms(text: &str) -> i64 {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not RFC 3339: {text:?}: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Rate limits count in fixed one-minute windows: a test that counts
/// requests against a limit starts early in a window, so a window that
/// ends midway cannot reset its count.
pub fn start_of_a_rate_limit_window() {
    let second = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .rem_euclid(60);
    if second > 45 {
        std::thread::sleep(std::time::Duration::from_secs((61 - second) as u64));
    }
}
