//! The broker's ports are its own. Every shard listens on the bootstrap port and on its broker
//! port with SO_REUSEPORT, which lets any process of the same user bind beside it and receive a
//! share of its connections. Two checks keep that from happening silently, both on the main
//! thread at start: a connect probe before the shards bind (`check_ports_free`), and, once they
//! have bound, a scan of the kernel's listening sockets for any on our ports that are not ours
//! (`check_ports_exclusive`): two brokers started at the same moment both pass the probe, and
//! then both refuse. When the probe finds a port taken, the error names what holds it (another
//! Weir broker, or which other process), from `/proc`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::BrokerConfig;

/// A broker killed a moment ago keeps its listeners for a few ms while the kernel tears down its
/// io_uring; a port counts as taken only if it stays taken this long.
const SETTLE: Duration = Duration::from_secs(1);

/// Every address the broker binds, each with what it is for errors: each Kafka listener's
/// bootstrap address and every shard's broker port above it, the AMQP listeners, the metrics
/// endpoint.
fn labelled_addresses(config: &BrokerConfig) -> Vec<(SocketAddr, String)> {
    let mut out = Vec::new();
    for listener in &config.listeners {
        out.push((listener.address, format!("{listener} (bootstrap port)")));
        for shard in 0..config.cpus.len() {
            let mut address = listener.address;
            address.set_port(listener.address.port() + 1 + shard as u16);
            out.push((address, format!("{listener} (shard {shard}'s broker port)")));
        }
    }
    for listener in &config.amqp_listeners {
        out.push((listener.address, listener.to_string()));
    }
    if let Some(metrics) = config.metrics_listen {
        out.push((metrics, format!("metrics http://{metrics}")));
    }
    out
}

/// The addresses of `labelled_addresses`.
fn addresses(config: &BrokerConfig) -> Vec<SocketAddr> {
    labelled_addresses(config)
        .into_iter()
        .map(|(address, _)| address)
        .collect()
}

/// No two of the broker's own listeners may share a port (a Kafka listener takes its port and
/// the next one per shard): checked when the configuration is read, before anything binds.
pub fn check_listeners_distinct(config: &BrokerConfig) -> anyhow::Result<()> {
    let all = labelled_addresses(config);
    for (index, (address, label)) in all.iter().enumerate() {
        let clash = all[..index].iter().find(|(other, _)| {
            other.port() == address.port() && overlaps(other.ip(), address.ip())
        });
        if let Some((_, other_label)) = clash {
            bail!(
                "listeners clash on port {}: {other_label} and {label} (a Kafka listener uses \
                 its port and the next one per shard)",
                address.port()
            );
        }
    }
    Ok(())
}

/// Every shard binds its ports with SO_REUSEPORT, which would let a second broker share them
/// silently. A test bind cannot tell (our own TIME_WAIT sockets from a previous run make a plain
/// bind fail, and a SO_REUSEPORT bind succeeds next to a live broker), so probe with a connect:
/// anything that accepts means the port is taken.
pub fn check_ports_free(config: &BrokerConfig) -> anyhow::Result<()> {
    for wanted in addresses(config) {
        let port = wanted.port();
        let mut address = wanted;
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        // A broker killed a moment ago still accepts for a few ms while io_uring tears its
        // sockets down (5-8 ms measured): taken only if it keeps accepting for `SETTLE`.
        let listening =
            || std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok();
        let deadline = Instant::now() + SETTLE;
        while listening() {
            if Instant::now() >= deadline {
                bail!("port {port} is in use: {address} {}", holder(wanted));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// After the shards have bound: fails when a listening socket on one of our ports (on our address,
/// or where either side is the wildcard address) belongs to another process, for longer than
/// `SETTLE`. Linux only (`/proc/net/tcp`, `/proc/net/tcp6`, `/proc/self/fd`); where those cannot
/// be read, the check is skipped.
pub fn check_ports_exclusive(config: &BrokerConfig) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let Some(foreign) = foreign_listener(config)? else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            bail!(
                "port {} is in use: another process listens on {foreign} too (SO_REUSEPORT would \
                 share connections between two brokers)",
                foreign.port()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn foreign_listener(config: &BrokerConfig) -> anyhow::Result<Option<SocketAddr>> {
    let ours =
        socket_inodes(Path::new("/proc/self/fd")).context("listing this process's sockets")?;
    let wanted = addresses(config);
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for listener in text.lines().skip(1).filter_map(parse_listener) {
            let (address, inode) = listener;
            let collides = wanted
                .iter()
                .any(|ours| ours.port() == address.port() && overlaps(address.ip(), ours.ip()));
            if collides && !ours.contains(&inode) {
                return Ok(Some(address));
            }
        }
    }
    Ok(None)
}

/// Two listeners on one port collide when their addresses are the same or either is the
/// wildcard address.
fn overlaps(one: IpAddr, other: IpAddr) -> bool {
    one == other || one.is_unspecified() || other.is_unspecified()
}

/// What holds a port that the connect probe found taken, as far as this process can see.
#[derive(Debug, PartialEq)]
enum Holder {
    /// A process named `weir`: another broker, most likely on another data dir.
    WeirBroker { pid: u32 },
    /// Any other process, by pid and name (`/proc/PID/comm`).
    Process { pid: u32, name: String },
    /// A listener that no visible process holds: another user's (whose `/proc/PID/fd` this user
    /// cannot read), or one that a process killed a moment ago still has while the kernel tears
    /// it down.
    Unseen,
}

/// Completes "port P is in use: ADDRESS ...".
impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::WeirBroker { pid } => {
                write!(f, "is held by another Weir broker (pid {pid})")
            }
            Holder::Process { pid, name } => write!(
                f,
                "is already in use by another process (pid {pid}, `{name}`), not a Weir broker"
            ),
            Holder::Unseen => write!(
                f,
                "is already in use by a socket that no process visible here holds (another \
                 user's, or one still closing)"
            ),
        }
    }
}

/// Names what listens on `address`, a port the probe found taken: `/proc/net/tcp{,6}` gives the
/// inodes of the listening sockets on it, and the process whose `/proc/PID/fd` holds one of
/// them is the holder.
fn holder(address: SocketAddr) -> Holder {
    let inodes = listener_inodes(address);
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Holder::Unseen;
    };
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|pid| pid.parse().ok())
        else {
            continue;
        };
        let Ok(sockets) = socket_inodes(&process.path().join("fd")) else {
            continue; // gone meanwhile, or not ours to read
        };
        if !sockets.iter().any(|inode| inodes.contains(inode)) {
            continue;
        }
        let name = std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
        let name = name.trim_end().to_string();
        return if name == "weir" {
            Holder::WeirBroker { pid }
        } else {
            Holder::Process { pid, name }
        };
    }
    Holder::Unseen
}

/// The inodes of the listening sockets on `address`'s port that collide with it.
fn listener_inodes(address: SocketAddr) -> Vec<u64> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for (listener, inode) in text.lines().skip(1).filter_map(parse_listener) {
            if listener.port() == address.port() && overlaps(listener.ip(), address.ip()) {
                inodes.push(inode);
            }
        }
    }
    inodes
}

/// The inodes of the sockets in a process's descriptor table (`fd` is `/proc/PID/fd`, whose
/// entries link to `socket:[inode]`).
fn socket_inodes(fd: &Path) -> std::io::Result<Vec<u64>> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(fd)? {
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue; // closed meanwhile
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|inode| inode.parse().ok())
        {
            inodes.push(inode);
        }
    }
    Ok(inodes)
}

/// One line of `/proc/net/tcp{,6}`: the local address and inode of a socket in LISTEN state
/// (`st` 0A). Addresses are hex, each 32-bit word in host byte order (little-endian here).
fn parse_listener(line: &str) -> Option<(SocketAddr, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 10 || fields[3] != "0A" {
        return None;
    }
    let (ip_hex, port_hex) = fields[1].split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in 0..ip_hex.len() / 8 {
        let word = u32::from_str_radix(ip_hex.get(word * 8..word * 8 + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    let inode = fields[9].parse().ok()?;
    Some((SocketAddr::new(ip, port), inode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_in_proc_net_tcp() {
        let check = |line: &str, want: Option<(&str, u64)>| {
            let want = want.map(|(address, inode)| (address.parse().unwrap(), inode));
            assert_eq!(parse_listener(line), want, "{line}");
        };
        check(
            "   0: 0100007F:52D0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1120 1 0000000000000000 100 0 0 10 0",
            Some(("127.0.0.1:21200", 1120)),
        );
        check(
            "   1: 00000000:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0",
            Some(("0.0.0.0:9092", 77)),
        );
        // Established, not listening.
        check(
            "   2: 0100007F:52D0 0100007F:D3A2 01 00000000:00000000 00:00000000 00000000     0        0 991 1 0000000000000000 20 4 30 10 -1",
            None,
        );
        check(
            "   0: 00000000000000000000000001000000:2384 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0",
            Some(("[::1]:9092", 4242)),
        );
        check("  sl  local_address rem_address   st tx_queue", None);
    }

    #[test]
    fn this_process_sees_its_own_listener_as_its_own() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ours = socket_inodes(Path::new("/proc/self/fd")).unwrap();
        let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let (_, inode) = text
            .lines()
            .filter_map(parse_listener)
            .find(|(address, _)| address.port() == port)
            .expect("the listener is in /proc/net/tcp");
        assert!(ours.contains(&inode));
    }

    #[test]
    fn a_listener_of_this_process_is_named_by_pid_and_name() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let name = std::fs::read_to_string("/proc/self/comm").unwrap();
        let want = Holder::Process {
            pid: std::process::id(),
            name: name.trim_end().to_string(),
        };
        assert_eq!(holder(address), want);
        // The wildcard address collides with every address on the port.
        let wildcard = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), address.port());
        assert_eq!(holder(wildcard), want);
        drop(listener);
        assert_eq!(holder(address), Holder::Unseen);
    }
}
