//! A PostgreSQL server of a test's own, for tests that stop and start the server itself: the
//! shared test server on 5432 serves every other test running beside them and must never
//! go down.
//!
//! It is a throwaway cluster (`initdb` into a temp dir, `pg_ctl` on a free loopback port)
//! from the PostgreSQL binaries `tests/postgres/setup.sh` installs. PostgreSQL refuses to run
//! as root, so under root the cluster belongs to the `postgres` user and every server
//! command runs as that user (`runuser`).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct PrivateServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivateServer {
    /// Makes a cluster and starts it, or says why it cannot.
    pub fn start() -> io::Result<Self> {
        let bin = binaries()?;
        let dir = tempfile::tempdir()?;
        if is_root() {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let server = Self { dir, bin, port };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        server.up()?;
        Ok(server)
    }

    /// A URL of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once, as a crash or a power cut would (`-m immediate`: no
    /// checkpoint, connections cut), and waits until it is down.
    pub fn crash(&self) -> io::Result<()> {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
        .map(drop)
    }

    /// Starts the server again after [`PrivateServer::crash`]; it recovers from its WAL.
    pub fn up(&self) -> io::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log.display().to_string(),
                "-w",
                "start",
            ],
        )
        .map(drop)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command.args(args).current_dir(self.dir.path()).output()?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(io::Error::other(format!(
                "{} {} failed: {}{}",
                program.display(),
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.crash();
    }
}

/// The newest installed PostgreSQL's server binaries (Debian keeps them out of `PATH`).
fn binaries() -> io::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        io::Error::other(
            "no PostgreSQL server binaries under /usr/lib/postgresql; run tests/postgres/setup.sh",
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn postgres_ids() -> io::Result<(u32, u32)> {
    let id = |flag: &str| -> io::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| io::Error::other("no `postgres` user; run tests/postgres/setup.sh"))
    };
    Ok((id("-u")?, id("-g")?))
}
