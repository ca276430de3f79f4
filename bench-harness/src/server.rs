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
    /// How it was started, for `restart`: the binary, its arguments, the listeners to wait for.
    weir_bin: PathBuf,
    args: Vec<String>,
    listeners: Vec<String>,
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
    /// Starts weir with its Kafka listener on `listen` (`HOST:PORT` or `SSL://HOST:PORT`) and, with `amqp_listen`, its AMQP listener
    /// there (`--amqp-listen`); returns once every listener it was given accepts connections.
    pub fn start(
        weir_bin: &Path,
        listen: &str,
        cpus: &str,
        settings: &[String],
        amqp_listen: Option<&str>,
    ) -> Result<Self> {
        let shards = crate::workload::parse_cpus(cpus)?.len();
        // `SSL://HOST:PORT` (--tls) listens on HOST:PORT too.
        let address = listen
            .split_once("://")
            .map_or(listen, |(_, address)| address);
        check_ports_free(address, shards)?;
        if let Some(amqp) = amqp_listen {
            // One AMQP port, shared by every shard.
            check_ports_free(amqp, 0)?;
        }
        let data_dir = tempfile::Builder::new()
            .prefix("weir-bench-")
            .tempdir()
            .context("creating a temporary data dir")?;
        let log_path = data_dir.path().with_extension("log");
        let mut args: Vec<String> = vec!["--data-dir".into()];
        args.push(data_dir.path().join("data").display().to_string());
        args.extend(["--listen", listen, "--cpus", cpus].map(String::from));
        for setting in settings {
            // `metrics-listen=HOST:PORT` is the one setting that is a flag of its own.
            match setting.strip_prefix("metrics-listen=") {
                Some(address) => args.extend(["--metrics-listen".to_string(), address.into()]),
                None => args.extend(["--set".to_string(), setting.clone()]),
            }
        }
        match amqp_listen {
            Some(amqp) => args.extend(["--amqp-listen", amqp].map(String::from)),
            // A weir with AMQP listens on 5672 by default: a Kafka run turns that off, so that
            // brokers spawned side by side share no port (SO_REUSEPORT would let them).
            None if has_amqp_listener(weir_bin) => {
                args.extend(["--amqp-listen", "none"].map(String::from));
            }
            None => {}
        }
        // The same for the metrics endpoint (default 127.0.0.1:9644) of a weir that has one,
        // unless a setting asks for it (`--server-set metrics-listen=HOST:PORT`).
        let metrics_asked = settings.iter().any(|s| s.starts_with("metrics-listen="));
        if !metrics_asked && has_flag(weir_bin, "--metrics-listen") {
            args.extend(["--metrics-listen", "none"].map(String::from));
        }
        let listeners = std::iter::once(address)
            .chain(amqp_listen)
            .map(String::from);
        let mut server = SpawnedServer {
            child: launch(weir_bin, &args, &log_path, false)?,
            log_path,
            weir_bin: weir_bin.to_path_buf(),
            args,
            listeners: listeners.collect(),
            _data_dir: data_dir,
        };
        server.wait_all_listening()?;
        Ok(server)
    }

    fn wait_all_listening(&mut self) -> Result<()> {
        for listen in self.listeners.clone() {
            self.wait_listening(&listen)?;
        }
        Ok(())
    }

    /// The broker's process id (for its memory figures in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the broker as Ctrl-C does (SIGINT: a clean shutdown) and starts it again on the same
    /// data dir; answers how long the new one took from its start to every listener accepting.
    pub fn restart(&mut self) -> Result<Duration> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let status = self.child.wait().context("waiting for weir to stop")?;
        if !status.success() {
            bail!("weir stopped with {status}; its log:\n{}", self.log_tail());
        }
        let started = Instant::now();
        self.child = launch(&self.weir_bin, &self.args, &self.log_path, true)?;
        self.wait_all_listening()?;
        Ok(started.elapsed())
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

/// Starts weir with `args`, its output to `log_path` (appended to on a restart).
fn launch(weir_bin: &Path, args: &[String], log_path: &Path, append: bool) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    Command::new(weir_bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", weir_bin.display()))
}

/// Whether this weir has the `--amqp-listen` flag (builds from before AMQP do not).
fn has_amqp_listener(weir_bin: &Path) -> bool {
    has_flag(weir_bin, "--amqp-listen")
}

/// Whether this weir's `--help` names `flag` (older builds lack newer flags).
fn has_flag(weir_bin: &Path, flag: &str) -> bool {
    Command::new(weir_bin)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains(flag))
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
