//! A private MariaDB for the fault tests: its own data directory under a
//! temporary directory, its own socket and a free port on 127.0.0.1, so a
//! test may kill it, restart it, exhaust its connections or change its
//! globals without touching the machine's server (port 3306) or another
//! test's. Dropping the [`Server`] kills it and removes the directory.
//!
//! The binary connects as `hs`, a user with every right on its database
//! and none of the global ones: without `SUPER`/`CONNECTION ADMIN` it gets
//! no reserved connection past `max_connections`, as on a shared host.
//! The test's own admin connections are root's.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

pub const APP_USER: &str = "hs";
pub const APP_PASSWORD: &str = "fault-test-password-7Qm2";

pub struct Server {
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

/// A free loopback port outside the ones other harnesses use (3306 is the
/// machine's server, 18100-18119 the local-server range).
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        if port != 3306 && !(18100..=18119).contains(&port) {
            return port;
        }
    }
}

impl Server {
    /// Installs a fresh data directory and starts the server on it.
    pub fn start() -> Server {
        for tool in ["/usr/bin/mariadb-install-db", "/usr/sbin/mariadbd"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: the fault tests start a private MariaDB \
                 (`apt-get install mariadb-server`)"
            );
        }
        let dir = std::env::temp_dir().join(format!(
            "healthsync-faults-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let mut server = Server {
            dir,
            port: free_port(),
            child: None,
        };
        server.install();
        server.spawn();
        let mut root = server.root();
        root.query_drop(format!(
            "CREATE USER '{APP_USER}'@'127.0.0.1' IDENTIFIED BY '{APP_PASSWORD}'"
        ))
        .expect("create the application user");
        server
    }

    /// `mariadb-install-db` into the data directory. Several at once fail
    /// now and then ("Installation of system tables failed"), so the tests
    /// of this binary run it one at a time.
    fn install(&self) {
        static INSTALLING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
        let output = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("run mariadb-install-db");
        assert!(
            output.status.success(),
            "mariadb-install-db failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn spawn(&mut self) {
        let log = self.dir.join("error.log");
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!(
                "--socket={}",
                self.dir.join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("mysqld.pid").display()
            ))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                // The default, named: a commit is on disk before its answer,
                // which is what "an acknowledged write survives a kill" needs.
                "--innodb-flush-log-at-trx-commit=1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        self.wait_ready(&log);
    }

    fn wait_ready(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "mariadbd exited ({status}) before answering:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
            let address = format!("127.0.0.1:{}", self.port);
            let listening = TcpStream::connect_timeout(
                &address.parse().expect("a socket address"),
                Duration::from_millis(200),
            )
            .is_ok();
            if listening && self.try_root().is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not answer on port {} within 60 s:\n{}",
                self.port,
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no shutdown, no flush beyond what each commit already did.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed server again on the same data and port (InnoDB
    /// recovers from its redo log) and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn opts(&self, user: &str, password: &str) -> mysql::OptsBuilder {
        mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(self.port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(3)))
    }

    fn try_root(&self) -> Result<mysql::Conn, mysql::Error> {
        mysql::Conn::new(self.opts("root", ""))
    }

    /// An admin connection (root, with the reserved connection past
    /// `max_connections`).
    pub fn root(&self) -> mysql::Conn {
        self.try_root()
            .unwrap_or_else(|e| panic!("root connection to port {}: {e}", self.port))
    }

    /// A connection as the binary's user, on `database`; an error when the
    /// server refuses it (e.g. `max_connections` reached).
    pub fn app_conn(&self, database: &str) -> Result<mysql::Conn, mysql::Error> {
        mysql::Conn::new(self.opts(APP_USER, APP_PASSWORD).db_name(Some(database)))
    }

    /// A fresh database the application user may use, not yet migrated.
    pub fn create_database(&self) -> String {
        let name = format!(
            "hs_fault_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut root = self.root();
        root.query_drop(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            .expect("create database");
        root.query_drop(format!(
            "GRANT ALL PRIVILEGES ON `{name}`.* TO '{APP_USER}'@'127.0.0.1'"
        ))
        .expect("grant on the database");
        name
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "faults: the private server's directory is kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
