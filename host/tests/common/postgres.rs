//! A real PostgreSQL server (Debian's `postgresql` package) for one test:
//! a copy of a cached, empty cluster in a temp dir, run as the `postgres`
//! user on a free loopback port, one database per call of
//! [`Postgres::database`]; stopped on drop. Durability against a lost
//! machine is traded for speed (`fsync=off`: writes reach the kernel, not
//! the disk), not against a killed server: commits still write the WAL,
//! so a test that crashes the server keeps every committed row.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// The server binaries' folder (`/usr/lib/postgresql/VERSION/bin`).
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/setup.sh")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").is_file())
        .collect();
    found.sort();
    found
        .pop()
        .expect("no PostgreSQL server binaries: run scripts/setup.sh")
}

fn as_postgres(program: &Path) -> Command {
    // setpriv execs in place: the child is the server itself, so killing
    // it kills the server.
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
    ])
    .arg(program);
    c
}

fn chown_postgres(path: &Path) {
    let ok = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown {}", path.display());
}

/// An empty cluster made by `initdb` once and kept beside the other test
/// environments (copied for each test: faster than `initdb` each time).
fn template() -> PathBuf {
    let root = super::env_dir();
    std::fs::create_dir_all(&root).unwrap();
    let dir = root.join("postgres-template");
    let lock = std::fs::File::create(root.join("postgres-template.lock")).unwrap();
    lock.lock().unwrap();
    if !dir.join(".ready").is_file() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        chown_postgres(&dir);
        let out = as_postgres(&bin_dir().join("initdb"))
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(dir.join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join(".ready"), "").unwrap();
    }
    dir.join("data")
}

/// A running server.
pub struct Postgres {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Starts a server on a fresh copy of the template cluster.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(dir.path().join("data"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "copying the template cluster");
        chown_postgres(dir.path());
        let mut pg = Postgres {
            child: None,
            port: free_port(),
            dir,
        };
        pg.run();
        pg
    }

    fn run(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.spawn();
            // A hang guard, not a timing check.
            while !self.ready() {
                assert!(Instant::now() < deadline, "PostgreSQL never became ready");
                // A postmaster started while a killed one's children still
                // hold its shared memory exits at once: try again.
                if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if self.ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn spawn(&mut self) {
        let child = as_postgres(&bin_dir().join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
    }

    fn ready(&self) -> bool {
        Command::new(bin_dir().join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs `sql` as the superuser.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-tAc",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new, empty database; its URL.
    pub fn database(&self) -> String {
        let name = format!("legion_{:08x}", rand::random::<u32>());
        self.psql(&format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Kills the server (SIGKILL to the postmaster, SIGQUIT to its
    /// backends: no shutdown), runs `while_down`, and starts it again on
    /// the same data and port.
    pub fn crash_and_restart_with(&mut self, while_down: impl FnOnce()) {
        if let Some(mut c) = self.child.take() {
            // The backends would serve their open connections on until
            // they notice; a crash takes them too. (Listed first: once the
            // postmaster is gone they belong to init.)
            let kids = Command::new("pgrep")
                .args(["-P", &c.id().to_string()])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let _ = c.kill();
            let _ = c.wait();
            for kid in kids.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", kid]).status();
            }
        }
        while_down();
        self.run();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT is PostgreSQL's fast shutdown: children go too.
            sigint(c.id());
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sigint(pid: u32) {
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}
