//! rabbitmq: the one RabbitMQ node of a test run, the reference broker of the AMQP differential
//! suite (tests/tests/amqp_differential.rs) and of the client suites' RabbitMQ mode.
//!
//! Owns: starting Debian's `rabbitmq-server` as its own node (`weirtest<port>@localhost`) on
//! 127.0.0.1:5673 (never 5672, Weir's default AMQP port; `WEIR_RABBITMQ_PORT` moves it), its
//! Erlang distribution port at port + 20000, its database and logs under
//! `<tmp>/weir-rabbitmq-<port>/` (owned by the `rabbitmq` user, which the server drops to), and
//! stopping it (`tests/run.sh` stops it after the suite; the `weir-test-rabbitmq` binary).
//!
//! Concurrency rule: any number of test binaries (and threads) may call `ensure_running` at once.
//! An exclusive `flock` on `<tmp>/weir-rabbitmq-<port>.lock` serialises them; the first one starts
//! the node, the others find it answering and reuse it. The node outlives the test binaries (it
//! is a detached daemon), so a run pays its start (about 5-6 s here) once, not per binary.
//! `WEIR_RABBITMQ_URL` skips all of this and points the suites at a broker started elsewhere.
//!
//! `AmqpTarget` is the broker an AMQP client suite runs against: a fresh Weir (what CI runs), or,
//! with `WEIR_AMQP_TARGET=rabbitmq`, this RabbitMQ, to prove a suite itself right.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::{run, tail, Broker, BrokerOptions};

/// RabbitMQ's port unless `WEIR_RABBITMQ_PORT` says otherwise.
pub const RABBITMQ_PORT_DEFAULT: u16 = 5673;
/// How long the node may take from `rabbitmq-server -detached` to answering AMQP (measured here:
/// 5-6 s on an idle machine, 19 s while the 2 cores were busy building).
pub const RABBITMQ_START_TIMEOUT: Duration = Duration::from_secs(120);
/// The Erlang distribution port is the AMQP port plus this (5673 → 25673).
const DIST_PORT_OFFSET: u16 = 20000;
/// The AMQP 0-9-1 protocol header a client opens with.
const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// A RabbitMQ node that answers AMQP.
#[derive(Clone, Debug)]
pub struct RabbitMq {
    url: String,
}

impl RabbitMq {
    /// `amqp://guest:guest@127.0.0.1:PORT/%2F`, the form pika, kombu and amqplib all accept.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:PORT` (the host and port of the URL).
    pub fn addr(&self) -> String {
        let rest = self.url.split_once('@').map_or("", |(_, rest)| rest);
        rest.split('/').next().unwrap_or_default().to_string()
    }
}

/// The broker an AMQP client test talks to (see the module comment).
pub enum AmqpTarget {
    Weir(Box<Broker>),
    RabbitMq(RabbitMq),
}

impl AmqpTarget {
    /// A fresh Weir started with `options`, unless `WEIR_AMQP_TARGET=rabbitmq`.
    pub fn start(options: BrokerOptions) -> Result<AmqpTarget> {
        if aims_at_rabbitmq() {
            return Ok(AmqpTarget::RabbitMq(ensure_running()?));
        }
        Ok(AmqpTarget::Weir(Box::new(Broker::start(options)?)))
    }

    pub fn url(&self) -> String {
        match self {
            AmqpTarget::Weir(broker) => broker.amqp_url(),
            AmqpTarget::RabbitMq(node) => node.url().to_string(),
        }
    }

    /// `(host, port)` of the AMQP listener.
    pub fn host_port(&self) -> (String, u16) {
        match self {
            AmqpTarget::Weir(broker) => ("127.0.0.1".to_string(), broker.amqp_port()),
            AmqpTarget::RabbitMq(node) => {
                let addr = node.addr();
                let (host, port) = addr.rsplit_once(':').unwrap_or((&addr, "5672"));
                (host.to_string(), port.parse().unwrap_or(5672))
            }
        }
    }
}

/// `WEIR_AMQP_TARGET=rabbitmq`: the AMQP client suites run against RabbitMQ instead of Weir.
pub fn aims_at_rabbitmq() -> bool {
    std::env::var("WEIR_AMQP_TARGET").as_deref() == Ok("rabbitmq")
}

/// The configured AMQP port of the test node.
pub fn rabbitmq_port() -> Result<u16> {
    match std::env::var("WEIR_RABBITMQ_PORT") {
        Ok(port) => port
            .parse()
            .with_context(|| format!("WEIR_RABBITMQ_PORT={port} is not a port")),
        Err(_) => Ok(RABBITMQ_PORT_DEFAULT),
    }
}

/// The Erlang node name of the test node on `port`.
pub fn node_name(port: u16) -> String {
    format!("weirtest{port}@localhost")
}

fn base_dir(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("weir-rabbitmq-{port}"))
}

/// Returns the test run's RabbitMQ, starting it first if nothing answers AMQP on its port.
pub fn ensure_running() -> Result<RabbitMq> {
    if let Ok(url) = std::env::var("WEIR_RABBITMQ_URL") {
        return Ok(RabbitMq { url });
    }
    let port = rabbitmq_port()?;
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2F");
    let _lock = lock(port)?;
    if speaks_amqp(port) {
        return Ok(RabbitMq { url });
    }
    let started = Instant::now();
    start_node(port)?;
    wait_answering(port, started)?;
    eprintln!(
        "rabbitmq: {} answered AMQP on 127.0.0.1:{port} {:.1} s after start",
        node_name(port),
        started.elapsed().as_secs_f64()
    );
    Ok(RabbitMq { url })
}

/// Stops the test node if it runs (`rabbitmqctl stop`, which waits for the node to exit).
pub fn stop() -> Result<()> {
    let port = rabbitmq_port()?;
    let _lock = lock(port)?;
    if !speaks_amqp(port) {
        return Ok(());
    }
    let output = run(
        rabbitmq_command("rabbitmqctl", port)
            .arg("-n")
            .arg(node_name(port))
            .arg("stop"),
        None,
        RABBITMQ_START_TIMEOUT,
    )?;
    ensure!(
        output.status.success(),
        "rabbitmqctl stop failed with {}\n{}\n{}",
        output.status,
        tail(&output.stdout),
        tail(&output.stderr)
    );
    Ok(())
}

/// Holds an exclusive flock on the node's lock file until dropped (the file closes).
fn lock(port: u16) -> Result<File> {
    let path = std::env::temp_dir().join(format!("weir-rabbitmq-{port}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor this function owns; no memory is shared with the kernel.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    ensure!(
        result == 0,
        "flock {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    Ok(file)
}

/// The RabbitMQ scripts with the test node's environment. Debian's wrappers in /usr/sbin switch
/// to the `rabbitmq` user with `su` (not a login shell), which keeps these variables.
fn rabbitmq_command(program: &str, port: u16) -> Command {
    let base = base_dir(port);
    let mut command = Command::new(PathBuf::from("/usr/sbin").join(program));
    command
        .current_dir(std::env::temp_dir())
        .env("RABBITMQ_NODENAME", node_name(port))
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", (port + DIST_PORT_OFFSET).to_string())
        .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", base.join("log"));
    command
}

fn start_node(port: u16) -> Result<()> {
    ensure!(
        PathBuf::from("/usr/sbin/rabbitmq-server").is_file(),
        "/usr/sbin/rabbitmq-server not found: run tests/install-clients.sh (apt rabbitmq-server)"
    );
    let base = base_dir(port);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    // The server drops to the `rabbitmq` user and must write its database and logs here.
    let chown = run(
        Command::new("chown")
            .arg("-R")
            .arg("rabbitmq:rabbitmq")
            .arg(&base),
        None,
        Duration::from_secs(30),
    )?;
    ensure!(
        chown.status.success(),
        "chown rabbitmq {}: {}",
        base.display(),
        tail(&chown.stderr)
    );
    let output = run(
        rabbitmq_command("rabbitmq-server", port).arg("-detached"),
        None,
        RABBITMQ_START_TIMEOUT,
    )?;
    ensure!(
        output.status.success(),
        "rabbitmq-server -detached failed with {}\n{}\n{}",
        output.status,
        tail(&output.stdout),
        tail(&output.stderr)
    );
    Ok(())
}

fn wait_answering(port: u16, started: Instant) -> Result<()> {
    while !speaks_amqp(port) {
        if started.elapsed() > RABBITMQ_START_TIMEOUT {
            let log = base_dir(port)
                .join("log")
                .join(format!("{}.log", node_name(port)));
            let text = std::fs::read(&log).unwrap_or_default();
            bail!(
                "RabbitMQ did not answer AMQP on port {port} within {RABBITMQ_START_TIMEOUT:?}\n\
                 --- {} ---\n{}",
                log.display(),
                tail(&text)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// True when 127.0.0.1:`port` answers the AMQP 0-9-1 protocol header with connection.start (a
/// method frame on channel 0, class 10 method 10): a port that merely accepts is not enough.
pub fn speaks_amqp(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(PROTOCOL_HEADER).is_err() {
        return false;
    }
    let mut frame_start = [0_u8; 11];
    if stream.read_exact(&mut frame_start).is_err() {
        return false;
    }
    is_connection_start(&frame_start)
}

/// Frame type 1 (method), channel 0, then (after the 4-byte size) class 10, method 10.
fn is_connection_start(frame_start: &[u8; 11]) -> bool {
    frame_start[0] == 1 && frame_start[1..3] == [0, 0] && frame_start[7..11] == [0, 10, 0, 10]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_start_is_recognised() {
        let start = [1, 0, 0, 0, 0, 1, 0xf4, 0, 10, 0, 10];
        assert!(is_connection_start(&start));
        let mut header_echo = [0_u8; 11];
        header_echo[..8].copy_from_slice(PROTOCOL_HEADER);
        assert!(!is_connection_start(&header_echo));
        let mut other_channel = start;
        other_channel[2] = 1;
        assert!(!is_connection_start(&other_channel));
    }

    #[test]
    fn url_and_addr() {
        let node = RabbitMq {
            url: "amqp://guest:guest@127.0.0.1:5673/%2F".to_string(),
        };
        assert_eq!(node.addr(), "127.0.0.1:5673");
        assert_eq!(node_name(5673), "weirtest5673@localhost");
    }
}
