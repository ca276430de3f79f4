//! `--spawn-server`: runs a `weir` broker for the length of one benchmark, with a temporary data
//! dir, pinned to `--server-cpus`, and stops it (by its own pid) when the run ends.
//!
//! Owned by the main thread; the child is killed and reaped on drop, so a failed run leaves no
//! broker behind.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct SpawnedServer {
    child: Child,
    log_path: PathBuf,
    // Dropped after the child is reaped (field order), removing the data dir.
    _data_dir: tempfile::TempDir,
}

/// The default `weir` binary: next to this executable (cargo puts both in target/<profile>/).
pub fn default_weir_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the weir-bench executable")?;
    let dir = exe
        .parent()
        .context("the weir-bench executable has no directory")?;
    // Test binaries live in target/<profile>/deps; the broker is one level up.
    let candidates = [dir.join("weir"), dir.join("../weir")];
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .with_context(|| format!("no weir binary next to {}: pass --weir-bin", exe.display()))
}

impl SpawnedServer {
    /// Starts weir with its Kafka listener on `listen` and, with `amqp_listen`, its AMQP listener
    /// there (`--amqp-listen`); returns once every listener it was given accepts connections.
    pub fn start(
        weir_bin: &Path,
        listen: &str,
        cpus: &str,
        settings: &[String],
        amqp_listen: Option<&str>,
    ) -> Result<Self> {
        let shards = crate::workload::parse_cpus(cpus)?.len();
        check_ports_free(listen, shards)?;
        if let Some(amqp) = amqp_listen {
            // One AMQP port, shared by every shard.
            check_ports_free(amqp, 0)?;
        }
        let data_dir = tempfile::Builder::new()
            .prefix("weir-bench-")
            .tempdir()
            .context("creating a temporary data dir")?;
        let log_path = data_dir.path().with_extension("log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(weir_bin);
        command
            .arg("--data-dir")
            .arg(data_dir.path().join("data"))
            .args(["--listen", listen, "--cpus", cpus])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for setting in settings {
            command.args(["--set", setting]);
        }
        match amqp_listen {
            Some(amqp) => {
                command.args(["--amqp-listen", amqp]);
            }
            // A weir with AMQP listens on 5672 by default: a Kafka run turns that off, so that
            // brokers spawned side by side share no port (SO_REUSEPORT would let them).
            None if has_amqp_listener(weir_bin) => {
                command.args(["--amqp-listen", "none"]);
            }
            None => {}
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", weir_bin.display()))?;
        let mut server = SpawnedServer {
            child,
            log_path,
            _data_dir: data_dir,
        };
        server.wait_listening(listen)?;
        if let Some(amqp) = amqp_listen {
            server.wait_listening(amqp)?;
        }
        Ok(server)
    }

    fn wait_listening(&mut self, listen: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "weir exited with {status} before listening on {listen}; its log:\n{}",
                    self.log_tail()
                );
            }
            if TcpStream::connect(listen).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "weir is not listening on {listen} after 30 s; its log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the broker's output, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Whether this weir has the `--amqp-listen` flag (builds from before AMQP do not).
fn has_amqp_listener(weir_bin: &Path) -> bool {
    Command::new(weir_bin)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("--amqp-listen"))
}

/// weir binds its ports with SO_REUSEPORT, so a second broker on the same ports would silently
/// share the connections: refuse to start when anything accepts connections on the bootstrap port
/// or the shard ports after it. (A trial bind is no test: connections a previous weir closed linger
/// in TIME-WAIT without SO_REUSEADDR and make any plain bind fail for a minute.)
fn check_ports_free(listen: &str, shards: usize) -> Result<()> {
    let address: SocketAddr = listen
        .parse()
        .with_context(|| format!("listener {listen} is not an IP:PORT address"))?;
    for offset in 0..=shards {
        let mut port_address = address;
        let port = u16::try_from(usize::from(address.port()) + offset)
            .with_context(|| format!("shard port {offset} past {listen} overflows"))?;
        port_address.set_port(port);
        if TcpStream::connect_timeout(&port_address, Duration::from_millis(200)).is_ok() {
            bail!("port {port} already has a listener: pick another port for --spawn-server");
        }
    }
    Ok(())
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log_path);
    }
}
