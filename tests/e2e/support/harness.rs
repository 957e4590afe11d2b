//! Private Apache instances for the end-to-end tests, started and stopped
//! through `deploy/local-server` so the tests exercise the same harness (and
//! the same `.htaccess`) a developer uses by hand. Each instance gets a free
//! port and its own fresh database; dropping the [`Instance`] stops Apache
//! and drops the database, even when a scenario failed.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const BINARY: &str = env!("CARGO_BIN_EXE_healthsync");

/// How Apache runs the binary: the harness loads exactly one of mod_fcgid
/// and mod_cgid, and the `.htaccess` picks its branch from that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    FastCgi,
    Cgi,
}

impl Mode {
    /// The name the binary reports in `/api/__test/echo` (`data.mode`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::FastCgi => "fastcgi",
            Mode::Cgi => "cgi",
        }
    }

    fn apache_module(self) -> &'static str {
        match self {
            Mode::FastCgi => "mod_fcgid.so",
            Mode::Cgi => "mod_cgid.so",
        }
    }
}

/// Fails the test (never skips it) when the machine lacks what the harness
/// needs, with the command that installs or starts it.
pub fn require_local_services(mode: Mode) {
    let fix =
        "run `deploy/local-server deps` (installs apache2 + libapache2-mod-fcgid, starts MariaDB)";
    assert!(
        Path::new("/usr/sbin/apache2").exists(),
        "Apache is not installed (/usr/sbin/apache2 missing): {fix}"
    );
    let module = Path::new("/usr/lib/apache2/modules").join(mode.apache_module());
    assert!(
        module.exists(),
        "Apache module {} is missing: {fix}",
        module.display()
    );
    let address = "127.0.0.1:3306".parse().expect("a socket address");
    assert!(
        TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok(),
        "MariaDB does not answer on 127.0.0.1:3306: {fix}"
    );
    assert!(
        mysql_client().is_some(),
        "no `mariadb` or `mysql` client on PATH: {fix}"
    );
}

fn mysql_client() -> Option<&'static str> {
    ["mariadb", "mysql"].into_iter().find(|client| {
        Command::new(client)
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success())
    })
}

/// A port nobody listens on right now. The listener is closed before Apache
/// binds it; the window is small, and a lost race shows as a bind error in
/// the harness output.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1");
    listener
        .local_addr()
        .expect("local address of the listener")
        .port()
}

fn fresh_database_name() -> String {
    format!(
        "hs_e2e_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// One running Apache serving the binary under test.
pub struct Instance {
    pub mode: Mode,
    pub port: u16,
    database: String,
    state_dir: PathBuf,
}

impl Instance {
    /// Starts an instance on a free port with a fresh database. `overrides`
    /// (`KEY=VALUE`) are written to its `.env` after the migration, e.g.
    /// `DB_PORT=1` for a database that is down.
    pub fn start(mode: Mode, overrides: &[&str]) -> Instance {
        let port = free_port();
        // Built before the harness runs so that Drop cleans up whatever part
        // of the start succeeded.
        let instance = Instance {
            mode,
            port,
            database: fresh_database_name(),
            state_dir: Path::new(REPO)
                .join("target/local-server")
                .join(port.to_string()),
        };
        let mut command = Command::new(Path::new(REPO).join("deploy/local-server"));
        command
            .arg("start")
            .args(["--port", &port.to_string()])
            .args(["--db", &instance.database])
            .args(["--bin", BINARY]);
        // local-server refuses a build with the test-only routes unless told
        // it is one, and checks that it is when told.
        if cfg!(feature = "test-hooks") {
            command.arg("--test-hooks");
        }
        if mode == Mode::Cgi {
            command.arg("--cgi");
        }
        for pair in overrides {
            command.args(["--env", pair]);
        }
        let output = command.output().expect("run deploy/local-server");
        assert!(
            output.status.success(),
            "deploy/local-server start ({} mode, port {port}) failed:\n{}\n{}",
            mode.name(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        instance
    }

    /// The `.htaccess` this instance serves with (the repo's).
    pub fn htaccess(&self) -> String {
        let path = self.state_dir.join("htdocs").join(".htaccess");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
    }

    /// Adds lines to this instance's `.htaccess` (Apache reads it on every
    /// request): a host configured otherwise than the repo's file.
    pub fn append_to_htaccess(&self, lines: &str) {
        let path = self.state_dir.join("htdocs").join(".htaccess");
        let mut text = self.htaccess();
        text.push_str(lines);
        std::fs::write(&path, text)
            .unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
    }

    /// The `httpd.conf` deploy/local-server generated for this instance.
    pub fn httpd_conf(&self) -> String {
        let path = self.state_dir.join("httpd.conf");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
    }

    /// Rows left in the tables that hold a user's data (every table with a
    /// `user_id` column, and `users`), summed.
    pub fn user_rows(&self) -> u64 {
        let client = mysql_client().expect("a mysql client");
        let query = |sql: &str| {
            let output = Command::new(client)
                .args([
                    "-N",
                    "-B",
                    "-h127.0.0.1",
                    "-P3306",
                    "-uroot",
                    &self.database,
                    "-e",
                    sql,
                ])
                .output()
                .expect("run the mysql client");
            assert!(
                output.status.success(),
                "{sql}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let tables = query(
            "SELECT table_name FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND column_name = 'user_id'",
        );
        let mut counts = vec!["(SELECT COUNT(*) FROM users)".to_string()];
        counts.extend(
            tables
                .lines()
                .filter(|table| !table.trim().is_empty())
                .map(|table| format!("(SELECT COUNT(*) FROM `{}`)", table.trim())),
        );
        let total = query(&format!("SELECT {}", counts.join(" + ")));
        total.trim().parse().expect("a row count")
    }

    /// The last lines of this instance's Apache error log (where the binary's
    /// stderr lands), for failure reports.
    pub fn error_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.state_dir.join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let stopped = Command::new(Path::new(REPO).join("deploy/local-server"))
            .args(["stop", "--port", &self.port.to_string()])
            .output();
        if let Err(error) = stopped {
            eprintln!(
                "e2e: stopping the instance on port {} failed: {error}",
                self.port
            );
        }
        if let Some(client) = mysql_client() {
            let statement = format!("DROP DATABASE IF EXISTS `{}`", self.database);
            let dropped = Command::new(client)
                .args(["-h127.0.0.1", "-P3306", "-uroot", "-e", &statement])
                .output();
            if !dropped.is_ok_and(|output| output.status.success()) {
                eprintln!("e2e: could not drop database {}", self.database);
            }
        }
        // A failed run keeps the state (httpd.conf, logs) for a post-mortem.
        if std::thread::panicking() {
            eprintln!(
                "e2e: state of the failed instance kept in {}",
                self.state_dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}
