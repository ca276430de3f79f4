//! weir-tests: the harness of the real-binary, real-client suites in `tests/tests/`.
//!
//! Owns: starting the release `weir` binary on free ports with a temporary data dir, stopping,
//! restarting and crashing it, and running real Kafka clients (the venv's python, kcat, node) as
//! subprocesses, each under a timeout so that no test can hang. `rabbitmq` starts the reference
//! RabbitMQ node of the AMQP differential suite.
//!
//! Runs on the test's own thread; the broker is a separate process with its own shards.
//! Concurrency rule: at most one broker per test binary at a time. `Broker` holds a process-wide
//! lock for its whole life, because every broker pins its shards to the same few cores and the
//! client programs need CPU too; cargo already runs test binaries one after another.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

pub mod rabbitmq;

/// How long any client program may run unless a test says otherwise.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the broker may take to listen on every port after it is spawned.
pub const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the broker may take to exit after SIGTERM (the clean shutdown path).
pub const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Ports this suite may use (other parts of the project use other ranges).
const PORT_FIRST: u32 = 20000;
const PORT_LAST: u32 = 29999;
/// Port ranges are handed out in steps of this many ports: bootstrap + up to 19 shards.
const PORT_STEP: u32 = 20;

/// One broker at a time per test binary (see the module comment).
static BROKER_SLOT: Mutex<()> = Mutex::new(());
/// Next candidate port range of this process; 0 = not yet derived from the pid.
static NEXT_PORT_SLOT: AtomicU32 = AtomicU32::new(0);

/// How to start a broker. `Default` = every CPU of this process's affinity mask, no `--set`,
/// a fresh temporary data dir.
#[derive(Clone, Debug, Default)]
pub struct BrokerOptions {
    /// `--cpus` list (`0-3`, `0,2,5`); `None` = every CPU this process may run on.
    pub cpus: Option<String>,
    /// `--set key=value` pairs, in order.
    pub sets: Vec<(String, String)>,
    /// Data dir to use (kept by the test); `None` = a temporary dir removed at the end.
    pub data_dir: Option<PathBuf>,
    /// Broker executable; `None` = `broker_binary()` (the harness's own tests use a stand-in).
    pub binary: Option<PathBuf>,
    /// RLIMIT_NOFILE (soft and hard) to start it under; `None` = this process's.
    pub open_files: Option<u64>,
    /// Also listen with TLS: an `SSL://` Kafka listener (`Broker::ssl_bootstrap`) and an
    /// `amqps://` one (`Broker::amqps_port`); the test sets the `ssl.*` certificates.
    pub tls_listeners: bool,
    /// The TLS Kafka listener is `SASL_SSL://` rather than `SSL://` (with `tls_listeners`).
    pub sasl_ssl: bool,
    /// Host the AMQP listener binds (`0.0.0.0` for clients from a non-loopback address);
    /// `None` = 127.0.0.1.
    pub amqp_host: Option<String>,
}

impl BrokerOptions {
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.sets.push((key.to_string(), value.to_string()));
        self
    }

    pub fn cpus(mut self, cpus: &str) -> Self {
        self.cpus = Some(cpus.to_string());
        self
    }

    pub fn tls_listeners(mut self) -> Self {
        self.tls_listeners = true;
        self
    }

    /// As `tls_listeners`, with a `SASL_SSL://` Kafka listener instead of `SSL://`.
    pub fn sasl_ssl_listeners(mut self) -> Self {
        self.tls_listeners = true;
        self.sasl_ssl = true;
        self
    }

    pub fn open_files(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }
}

/// A running `weir` process. Killed (SIGKILL) on drop, which also prints the broker's captured
/// stdout+stderr (libtest shows it only for failing tests) so that a failure explains itself.
pub struct Broker {
    child: Option<Child>,
    binary: PathBuf,
    cpus: String,
    shards: usize,
    sets: Vec<(String, String)>,
    open_files: Option<u64>,
    tls_listeners: bool,
    sasl_ssl: bool,
    amqp_host: Option<String>,
    data_dir: PathBuf,
    port: u16,
    log_path: PathBuf,
    launches: u32,
    /// Where the current launch's output starts in the log file.
    launch_log_offset: u64,
    // Field order matters for drop: the temp dir goes after the child is dead, the slot last.
    _temp: tempfile::TempDir,
    _slot: MutexGuard<'static, ()>,
}

impl Broker {
    /// Starts the release binary and returns once the bootstrap port and every shard port accept
    /// connections.
    pub fn start(options: BrokerOptions) -> Result<Broker> {
        let slot = BROKER_SLOT.lock().unwrap_or_else(PoisonError::into_inner);
        let binary = match options.binary {
            Some(binary) => binary,
            None => broker_binary()?,
        };
        let cpus = match options.cpus {
            Some(cpus) => cpus,
            None => default_cpus()?,
        };
        let shards = count_cpus(&cpus)?;
        // Bootstrap, one port per shard, AMQP's and the metrics endpoint's; with TLS, the SSL
        // listener's bootstrap and shard ports and amqps's.
        let port_count = if options.tls_listeners {
            2 * shards + 5
        } else {
            shards + 3
        };
        ensure!(
            port_count <= PORT_STEP as usize,
            "{shards} shards need more than {PORT_STEP} ports"
        );
        let temp = tempfile::Builder::new()
            .prefix("weir-test-")
            .tempdir()
            .context("creating the broker's temp dir")?;
        let data_dir = options.data_dir.unwrap_or_else(|| temp.path().join("data"));
        let port = free_port_range(port_count)?;
        let log_path = temp.path().join("broker.log");
        let mut broker = Broker {
            child: None,
            binary,
            cpus,
            shards,
            sets: options.sets,
            open_files: options.open_files,
            tls_listeners: options.tls_listeners,
            sasl_ssl: options.sasl_ssl,
            amqp_host: options.amqp_host,
            data_dir,
            port,
            log_path,
            launches: 0,
            launch_log_offset: 0,
            _temp: temp,
            _slot: slot,
        };
        broker.start_again()?;
        Ok(broker)
    }

    /// `127.0.0.1:P`, the bootstrap address every shard listens on.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The AMQP listener's port: the last of the broker's range, after the shard ports (so that
    /// parallel test brokers never share 5672).
    pub fn amqp_port(&self) -> u16 {
        self.port + 1 + self.shards as u16
    }

    /// `127.0.0.1:PORT` of the AMQP listener.
    pub fn amqp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.amqp_port())
    }

    /// The metrics endpoint's port: after AMQP's.
    pub fn metrics_port(&self) -> u16 {
        self.port + 2 + self.shards as u16
    }

    /// `127.0.0.1:PORT` of the metrics endpoint (`GET /metrics`).
    pub fn metrics_addr(&self) -> String {
        format!("127.0.0.1:{}", self.metrics_port())
    }

    /// The AMQP URL clients connect with: guest/guest on vhost `/`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2F", self.amqp_port())
    }

    /// Shard i is advertised as broker id i on port P+1+i.
    pub fn shard_ports(&self) -> Vec<u16> {
        (0..self.shards)
            .map(|shard| self.port + 1 + shard as u16)
            .collect()
    }

    /// The `SSL://` Kafka listener's bootstrap port (after the metrics port), with
    /// `BrokerOptions::tls_listeners`; its shard i is on port + 1 + i.
    pub fn ssl_port(&self) -> u16 {
        self.port + 3 + self.shards as u16
    }

    /// `127.0.0.1:PORT` of the SSL listener.
    pub fn ssl_bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ssl_port())
    }

    /// The `amqps://` listener's port, after the SSL listener's shard ports.
    pub fn amqps_port(&self) -> u16 {
        self.ssl_port() + 1 + self.shards as u16
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The running broker's process id (the scale tests read its /proc/PID/status and fd/).
    pub fn pid(&self) -> Result<u32> {
        Ok(self
            .child
            .as_ref()
            .context("the broker is not running")?
            .id())
    }

    /// Bytes the broker process has read from storage so far (`read_bytes` of /proc/PID/io;
    /// direct-I/O reads count).
    pub fn storage_read_bytes(&self) -> Result<u64> {
        let child = self.child.as_ref().context("the broker is not running")?;
        let io = std::fs::read_to_string(format!("/proc/{}/io", child.id()))?;
        io.lines()
            .find_map(|line| line.strip_prefix("read_bytes:"))
            .and_then(|value| value.trim().parse().ok())
            .context("read_bytes in /proc/PID/io")
    }

    /// Everything the broker printed so far (all launches).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM, then waits for the process to exit (the clean shutdown path).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("broker is not running");
        };
        signal(child.id() as i32, libc::SIGTERM);
        match wait_until(&mut child, Instant::now() + BROKER_STOP_TIMEOUT)? {
            Some(status) => {
                self.wait_ports_closed()?;
                Ok(status)
            }
            None => {
                signal(child.id() as i32, libc::SIGKILL);
                let _ = child.wait();
                bail!(
                    "broker did not exit within {BROKER_STOP_TIMEOUT:?} of SIGTERM\n{}",
                    self.log_tail()
                )
            }
        }
    }

    /// Clean restart on the same data dir and ports: SIGTERM, wait, require exit status 0, start.
    pub fn restart(&mut self) -> Result<()> {
        let status = self.stop()?;
        ensure!(
            status.success(),
            "broker exited with {status} after SIGTERM (clean shutdown must exit 0)\n{}",
            self.log_tail()
        );
        self.start_again()
    }

    /// Crash: SIGKILL and wait. Call `start_again` to recover from the same data dir.
    pub fn kill9(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("broker is not running");
        };
        signal(child.id() as i32, libc::SIGKILL);
        child.wait().context("waiting for the killed broker")?;
        self.wait_ports_closed()
    }

    /// A reaped broker's listening sockets keep accepting for a few milliseconds (measured 5-8 ms
    /// here): io_uring tears a dead process's ring, and the sockets it holds, down asynchronously.
    /// The next launch must not mistake them for a live broker, so wait until every port refuses.
    fn wait_ports_closed(&self) -> Result<()> {
        let deadline = Instant::now() + BROKER_STOP_TIMEOUT;
        let mut ports = vec![self.port];
        ports.extend(self.shard_ports());
        ports.push(self.amqp_port());
        while ports.iter().any(|&port| accepts(port)) {
            ensure!(
                Instant::now() < deadline,
                "ports {ports:?} still accept {BROKER_STOP_TIMEOUT:?} after the broker exited"
            );
            thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Starts the binary (again) on the same data dir and ports, and waits until it listens.
    pub fn start_again(&mut self) -> Result<()> {
        self.launch()?;
        self.wait_ready()
    }

    /// Starts the binary (again) on the same data dir and ports without waiting: for tests that
    /// watch the ports while it starts. `wait_ready` then waits for the ready line.
    pub fn launch(&mut self) -> Result<()> {
        ensure!(self.child.is_none(), "broker is already running");
        self.launches += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        writeln!(log, "=== harness: launch {} ===", self.launches)?;
        self.launch_log_offset = log.metadata()?.len();
        let mut command = Command::new(&self.binary);
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--amqp-listen")
            .arg(match &self.amqp_host {
                Some(host) => format!("{host}:{}", self.amqp_port()),
                None => self.amqp_addr(),
            })
            .arg("--metrics-listen")
            .arg(self.metrics_addr())
            .arg("--cpus")
            .arg(&self.cpus);
        if self.tls_listeners {
            command
                .arg("--listen")
                .arg(match self.sasl_ssl {
                    true => format!("SASL_SSL://{}", self.ssl_bootstrap()),
                    false => format!("SSL://{}", self.ssl_bootstrap()),
                })
                .arg("--amqp-listen")
                .arg(format!("amqps://127.0.0.1:{}", self.amqps_port()));
        }
        for (key, value) in &self.sets {
            command.arg("--set").arg(format!("{key}={value}"));
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        if let Some(limit) = self.open_files {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe and
            // touches nothing but the child's own limit.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the launched broker has printed its ready line and all its ports accept.
    pub fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + BROKER_READY_TIMEOUT;
        let mut ports = vec![self.port];
        ports.extend(self.shard_ports());
        ports.push(self.amqp_port());
        if self.tls_listeners {
            ports.extend((0..=self.shards as u16).map(|i| self.ssl_port() + i));
            ports.push(self.amqps_port());
        }
        loop {
            let child = self.child.as_mut().context("broker is not running")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "broker exited with {status} before listening\n{}",
                    self.log_tail()
                );
            }
            // The broker's own word (`weir ready: ...`, printed once every shard listens) and
            // then the ports: either alone could be fooled (a stale listener, a log line format).
            let ready = self.log_since_launch().contains("weir ready");
            if ready && ports.iter().all(|&port| accepts(port)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "broker did not listen on ports {ports:?} within {BROKER_READY_TIMEOUT:?}\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the broker printed since its latest launch.
    pub fn log_since_launch(&self) -> String {
        let log = std::fs::read(&self.log_path).unwrap_or_default();
        let start = (self.launch_log_offset as usize).min(log.len());
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    /// The last part of the log, for error messages.
    fn log_tail(&self) -> String {
        let log = self.log();
        let keep = 16 * 1024;
        let start = log.len().saturating_sub(keep);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        format!(
            "--- broker log {} (last {} bytes) ---\n{}\n--- end of broker log ---",
            self.log_path.display(),
            log.len() - start,
            &log[start..]
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
        }
        // Always printed: libtest captures a test's output and shows it only when the test fails
        // (a test returning `Err` has already dropped its broker, so `panicking()` cannot tell).
        eprintln!(
            "broker: {} --cpus {} {:?}, data dir {}\n{}",
            self.bootstrap(),
            self.cpus,
            self.sets,
            self.data_dir.display(),
            self.log_tail()
        );
    }
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory effects; a stale pid only yields ESRCH, which is ignored
    // because the process being gone already is what the caller wants.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn accepts(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}

/// Polls `child` until it exits or `deadline` passes (`None`).
fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `$WEIR_BIN`, else `<target dir>/release/weir` (built by `tests/run.sh`).
pub fn broker_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WEIR_BIN") {
        return Ok(PathBuf::from(path));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join("release").join("weir");
    ensure!(
        path.is_file(),
        "{} not found: build it with `cargo build --release --bin weir` or set WEIR_BIN",
        path.display()
    );
    Ok(path)
}

/// Every CPU this process may run on, as a `--cpus` list (`0,1`).
fn default_cpus() -> Result<String> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most size_of::<cpu_set_t>().
    let cpus: Vec<usize> = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let result = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        ensure!(result == 0, "sched_getaffinity failed");
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    };
    ensure!(!cpus.is_empty(), "no CPU in this process's affinity mask");
    Ok(cpus
        .iter()
        .map(|cpu| cpu.to_string())
        .collect::<Vec<_>>()
        .join(","))
}

/// Number of CPUs in a `--cpus` list: `0-3` = 4, `0,2,5` = 3, `0-1,4` = 3.
pub fn count_cpus(list: &str) -> Result<usize> {
    let mut count = 0;
    for part in list.split(',') {
        let part = part.trim();
        count += match part.split_once('-') {
            Some((first, last)) => {
                let first: usize = first
                    .parse()
                    .with_context(|| format!("bad cpu list {list}"))?;
                let last: usize = last
                    .parse()
                    .with_context(|| format!("bad cpu list {list}"))?;
                ensure!(first <= last, "bad cpu range {part}");
                last - first + 1
            }
            None => {
                part.parse::<usize>()
                    .with_context(|| format!("bad cpu list {list}"))?;
                1
            }
        };
    }
    Ok(count)
}

/// A run of `count` consecutive free ports in 20000..=29999 (or `$WEIR_TEST_PORTS`, `FIRST-LAST`,
/// for runs that were handed a range of their own), starting from a pid-derived slot so that test
/// binaries running at the same time (other worktrees) rarely try the same ports.
pub fn free_port_range(count: usize) -> Result<u16> {
    let (port_first, port_last) = port_bounds()?;
    let slots = (port_last + 1 - port_first) / PORT_STEP;
    ensure!(
        slots > 0,
        "port range {port_first}-{port_last} is too small"
    );
    let _ = NEXT_PORT_SLOT.compare_exchange(
        0,
        1 + std::process::id() % slots,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..slots {
        let slot = NEXT_PORT_SLOT.fetch_add(1, Ordering::SeqCst) % slots;
        let first = port_first + slot * PORT_STEP;
        let ports = (first..first + count as u32).map(|port| port as u16);
        // Holding every listener until all are bound proves the whole run is free right now.
        let listeners: Vec<_> = ports
            .map(|port| TcpListener::bind(("127.0.0.1", port)))
            .collect();
        if listeners.iter().all(|listener| listener.is_ok()) {
            return Ok(first as u16);
        }
    }
    bail!("no {count} consecutive free ports in {port_first}..={port_last}")
}

/// `$WEIR_TEST_PORTS` (`FIRST-LAST`), else `PORT_FIRST..=PORT_LAST`.
fn port_bounds() -> Result<(u32, u32)> {
    let Ok(range) = std::env::var("WEIR_TEST_PORTS") else {
        return Ok((PORT_FIRST, PORT_LAST));
    };
    let (first, last) = range
        .split_once('-')
        .context("WEIR_TEST_PORTS is FIRST-LAST")?;
    let (first, last): (u32, u32) = (first.trim().parse()?, last.trim().parse()?);
    ensure!(
        first < last && last <= u16::MAX as u32,
        "WEIR_TEST_PORTS {range}"
    );
    Ok((first, last))
}

/// `tests/clients/<name>`.
pub fn client_path(name: &str) -> PathBuf {
    workspace_root().join("tests").join("clients").join(name)
}

/// `$WEIR_PYTHON`, else the venv that `tests/run.sh` creates in `tests/.venv`.
pub fn python_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WEIR_PYTHON") {
        return Ok(PathBuf::from(path));
    }
    let path = workspace_root().join("tests/.venv/bin/python");
    ensure!(
        path.is_file(),
        "{} not found: run ./tests/run.sh once (it installs the clients) or set WEIR_PYTHON",
        path.display()
    );
    Ok(path)
}

/// Runs `tests/clients/<script>` with the venv's python, with `CLIENT_TIMEOUT`.
pub fn python(script: &str, args: &[&str]) -> Result<Output> {
    python_with_timeout(script, args, CLIENT_TIMEOUT)
}

pub fn python_with_timeout(script: &str, args: &[&str], timeout: Duration) -> Result<Output> {
    let mut command = Command::new(python_binary()?);
    command
        .arg(client_path(script))
        .args(args)
        .env("PYTHONUNBUFFERED", "1");
    run(&mut command, None, timeout)
}

/// Runs `kcat` with `input` on its stdin, with `CLIENT_TIMEOUT`.
pub fn kcat(args: &[&str], input: &[u8]) -> Result<Output> {
    run(Command::new("kcat").args(args), Some(input), CLIENT_TIMEOUT)
}

/// `$WEIR_NODE_MODULES`, else `tests/node_modules` (installed by `tests/run.sh`).
pub fn node_modules() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WEIR_NODE_MODULES") {
        return Ok(PathBuf::from(path));
    }
    let path = workspace_root().join("tests/node_modules");
    ensure!(
        path.join("kafkajs").is_dir(),
        "{}/kafkajs not found: run ./tests/run.sh once or set WEIR_NODE_MODULES",
        path.display()
    );
    Ok(path)
}

/// Runs `node tests/clients/<script>` with `NODE_PATH` at the suite's node_modules.
pub fn node(script: &str, args: &[&str]) -> Result<Output> {
    let mut command = Command::new("node");
    command
        .arg(client_path(script))
        .args(args)
        .env("NODE_PATH", node_modules()?);
    run(&mut command, None, CLIENT_TIMEOUT)
}

/// Runs `command` in its own process group, feeding `input` and capturing stdout and stderr.
/// After `timeout` the whole group is killed and the run is an error carrying what it printed.
pub fn run(command: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let description = format!("{command:?}");
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("spawning {description}"))?;
    let group = child.id() as i32;
    let writer = match (child.stdin.take(), input) {
        (Some(mut stdin), Some(input)) => {
            let input = input.to_vec();
            // A client that exits early closes the pipe; the resulting error is not the test's.
            Some(thread::spawn(move || {
                let _ = stdin.write_all(&input);
            }))
        }
        _ => None,
    };
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status = wait_until(&mut child, Instant::now() + timeout)?;
    // Kill the whole group either way: a leftover grandchild would hold the pipes open.
    signal(-group, libc::SIGKILL);
    let status = match status {
        Some(status) => Some(status),
        None => {
            let _ = child.wait();
            None
        }
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = stdout.map(join_drain).unwrap_or_default();
    let stderr = stderr.map(join_drain).unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "{description} timed out after {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&stdout),
            tail(&stderr)
        ),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

fn join_drain(handle: thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    handle.join().unwrap_or_default()
}

/// The last 8 KiB of a client's output: the end says why it failed; chatty clients (kafkajs
/// retrying) would otherwise bury it.
pub fn tail(bytes: &[u8]) -> String {
    const KEEP_BYTES: usize = 8 * 1024;
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= KEEP_BYTES {
        return text.into_owned();
    }
    let start = (text.len() - KEEP_BYTES..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    format!("[... {start} bytes cut ...]\n{}", &text[start..])
}

/// Requires a successful exit and returns the JSON summary: the last non-empty stdout line.
pub fn summary(output: &Output) -> Result<serde_json::Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "client failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        tail(&output.stdout),
        tail(&output.stderr)
    );
    let stderr = tail(&output.stderr);
    let line = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .with_context(|| format!("client printed no summary\n--- stderr ---\n{stderr}"))?;
    serde_json::from_str(line).with_context(|| format!("summary is not JSON: {line}"))
}

/// A summary's list of `[partition, offset]` pairs (share-group clients print the records they
/// hold or settled so), as a set; an absent list is empty.
pub fn offset_pairs(value: &serde_json::Value) -> std::collections::BTreeSet<(i64, i64)> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| Some((pair[0].as_i64()?, pair[1].as_i64()?)))
        .collect()
}

/// Requires a successful exit and returns stdout as text.
pub fn stdout_of(output: &Output) -> Result<String> {
    ensure!(
        output.status.success(),
        "command failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        tail(&output.stdout),
        tail(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).context("stdout is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_count() {
        for (list, count) in [("0", 1), ("0-3", 4), ("0,2,5", 3), ("0-1,4", 3), ("3-3", 1)] {
            assert_eq!(count_cpus(list).unwrap(), count, "{list}");
        }
        for bad in ["", "a", "3-1", "1-", "0,,1"] {
            assert!(count_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_ranges_are_free_and_in_range() {
        // Checking a range and binding it again is a race with anything else on the machine, so
        // take the first range that can still be bound (bounded tries); what is under test is that
        // a range we hold is never handed out again.
        let (first, listeners) = (0..5)
            .find_map(|_| {
                let first = free_port_range(3).unwrap();
                assert!((20000..=29997).contains(&first));
                let bound: Result<Vec<_>, _> = (first..first + 3)
                    .map(|port| TcpListener::bind(("127.0.0.1", port)))
                    .collect();
                bound.ok().map(|listeners| (first, listeners))
            })
            .expect("five free port ranges in a row were taken before they could be bound");
        let second = free_port_range(3).unwrap();
        assert_ne!(first, second, "a held range must not be handed out again");
        drop(listeners);
    }

    #[test]
    fn run_captures_output_and_kills_on_timeout() {
        let output = run(
            Command::new("sh").args(["-c", "cat; echo err >&2"]),
            Some(b"hello"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(output.status.success());
        assert_eq!(output.stdout, b"hello");
        assert_eq!(output.stderr, b"err\n");

        let started = Instant::now();
        let error = run(
            Command::new("sh").args(["-c", "echo partial; sleep 30 & wait"]),
            None,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        let message = format!("{error:#}");
        assert!(message.contains("timed out"), "{message}");
        assert!(message.contains("partial"), "{message}");
    }

    /// A stand-in broker with weir's command line and port scheme, to test the harness alone.
    const FAKE_BROKER: &str = r#"#!/usr/bin/env python3
import signal, socket, sys, time
args = sys.argv[1:]
host, port = args[args.index("--listen") + 1].rsplit(":", 1)
shards = len(args[args.index("--cpus") + 1].split(","))
listeners = []
amqp = [int(args[args.index("--amqp-listen") + 1].rsplit(":", 1)[1])]
for p in [int(port)] + [int(port) + 1 + i for i in range(shards)] + amqp:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, p))
    s.listen()
    listeners.append(s)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("weir ready: fake", args, flush=True)
while True:
    time.sleep(1)
"#;

    #[test]
    fn broker_starts_restarts_survives_kill9_and_frees_its_ports() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-weir");
        std::fs::write(&fake, FAKE_BROKER).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let options = BrokerOptions {
            binary: Some(fake),
            ..BrokerOptions::default()
        };
        let mut broker = Broker::start(options.cpus("0,1").set("num.partitions", "3")).unwrap();
        assert_eq!(broker.shards(), 2);
        let port = broker.port();
        assert_eq!(broker.shard_ports(), vec![port + 1, port + 2]);
        assert_eq!(broker.bootstrap(), format!("127.0.0.1:{port}"));
        assert_eq!(broker.amqp_addr(), format!("127.0.0.1:{}", port + 3));
        assert_eq!(
            broker.amqp_url(),
            format!("amqp://guest:guest@127.0.0.1:{}/%2F", port + 3)
        );
        assert!(accepts(port) && accepts(port + 1) && accepts(port + 2) && accepts(port + 3));

        broker.restart().unwrap();
        assert!(accepts(port + 2));
        broker.kill9().unwrap();
        assert!(!accepts(port));
        broker.start_again().unwrap();
        let log = broker.log();
        assert_eq!(log.matches("weir ready: fake").count(), 3, "{log}");
        assert!(log.contains("num.partitions=3"), "{log}");
        assert!(
            log.contains(&broker.data_dir().display().to_string()),
            "{log}"
        );

        drop(broker);
        assert!(!accepts(port), "drop must kill the broker");
    }

    #[test]
    fn a_broker_that_exits_at_start_is_an_error_with_its_output() {
        let options = BrokerOptions {
            binary: Some(PathBuf::from("/bin/false")),
            ..BrokerOptions::default()
        };
        let error = Broker::start(options).err().expect("must fail");
        let message = format!("{error:#}");
        assert!(message.contains("exited"), "{message}");
    }

    #[test]
    fn summary_reads_the_last_json_line_and_rejects_failures() {
        let ok = run(
            Command::new("sh").args(["-c", "echo noise; echo '{\"n\": 3}'; echo"]),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(summary(&ok).unwrap()["n"], 3);
        let failed = run(
            Command::new("sh").args(["-c", "echo '{\"n\": 3}'; exit 2"]),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(summary(&failed).is_err());
    }
}
