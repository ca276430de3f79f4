//! `--tls`: the harness's Kafka connections over TLS (rustls, *ring*, as the broker), so that a
//! run can measure what TLS costs; and, for `--spawn-server --tls` without `--tls-ca`, a CA and a
//! server certificate made for the run (rcgen), so no key is ever kept on disk past it.
//!
//! Every connection the harness opens goes through [`connect`]: plaintext, or TLS when
//! [`install`] was called once at start (a process-wide client configuration: the connections
//! are opened from many threads and plans, and all of one run speak the same protocol).
//!
//! A producer writes requests on one thread and reads acknowledgements on another, over one
//! socket (`try_clone`). Over TLS both halves share the rustls connection behind a mutex, and
//! neither holds it across a socket call: the writer encrypts under the lock and sends after, the
//! reader receives first and decrypts under the lock. A blocked send therefore never stops the
//! reader from draining the broker's answers (which would deadlock both). Only one thread writes
//! to a connection, so records go out in the order they were encrypted.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

static CLIENT_CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// Makes every later [`connect`] speak TLS, trusting the CAs in the PEM file `ca`.
pub fn install(ca: &Path) -> Result<()> {
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|error| anyhow!("--tls-ca {}: {error}", ca.display()))?;
    for certificate in certificates {
        roots
            .add(certificate)
            .with_context(|| format!("--tls-ca {}", ca.display()))?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    CLIENT_CONFIG
        .set(Arc::new(config))
        .map_err(|_| anyhow!("TLS was already set up"))
}

/// The broker's provider (server/src/security/tls.rs says why *ring*).
#[expect(deprecated, reason = "ring's provider, as the broker's")]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A connection to the broker, plaintext or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(TlsStream),
}

/// Wraps a connected socket in TLS if [`install`] was called, finishing the handshake here
/// (with the socket's timeouts) so that the data path never sees it.
pub fn wrap(socket: TcpStream, address: &str) -> Result<Stream> {
    let Some(config) = CLIENT_CONFIG.get() else {
        return Ok(Stream::Plain(socket));
    };
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_matches(['[', ']']);
    let name = ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host} is not a TLS server name"))?;
    let mut connection = ClientConnection::new(config.clone(), name)?;
    let mut handshake_socket = &socket;
    while connection.is_handshaking() {
        connection
            .complete_io(&mut handshake_socket)
            .with_context(|| format!("TLS handshake with {address}"))?;
    }
    Ok(Stream::Tls(TlsStream {
        socket,
        connection: Arc::new(Mutex::new(connection)),
        received: Vec::new(),
        received_start: 0,
        encrypted: Vec::new(),
    }))
}

impl Stream {
    /// Another handle on the same connection, for a second thread (one reads, one writes).
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Plain(socket) => Stream::Plain(socket.try_clone()?),
            Stream::Tls(tls) => Stream::Tls(TlsStream {
                socket: tls.socket.try_clone()?,
                connection: tls.connection.clone(),
                received: Vec::new(),
                received_start: 0,
                encrypted: Vec::new(),
            }),
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(buffer),
            Stream::Tls(tls) => tls.read(buffer),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(buffer),
            Stream::Tls(tls) => tls.write(buffer),
        }
    }

    /// The socket's own `writev`: `Write`'s default writes only the first slice, and a produce
    /// request is sent as one slice per partition batch, so 1,000 partitions made 1,000 syscalls
    /// a request (`--preset many-partitions` fell from 1.3-1.7 M to 0.4-0.8 M msgs/s).
    fn write_vectored(&mut self, buffers: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write_vectored(buffers),
            Stream::Tls(tls) => tls.write_vectored(buffers),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// One handle on a TLS connection: its own socket handle and buffers, the shared rustls state.
pub struct TlsStream {
    socket: TcpStream,
    connection: Arc<Mutex<ClientConnection>>,
    /// Bytes received from the socket and not yet handed to rustls, from `received_start`.
    received: Vec<u8>,
    received_start: usize,
    /// Records encrypted under the lock, sent after it.
    encrypted: Vec<u8>,
}

/// Socket read size: a few TLS records (16 KiB each at most).
const RECEIVE_BYTES: usize = 64 * 1024;

fn poisoned<T>(_: T) -> io::Error {
    io::Error::other("a thread failed while holding the TLS connection")
}

impl TlsStream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut connection = self.connection.lock().map_err(poisoned)?;
                match connection.reader().read(buffer) {
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    answer => return answer,
                }
                // No plaintext is buffered, so rustls takes received bytes until it has a record.
                if self.received_start < self.received.len() {
                    let mut unread = &self.received[self.received_start..];
                    self.received_start += connection.read_tls(&mut unread)?;
                    connection.process_new_packets().map_err(io::Error::other)?;
                    continue;
                }
            }
            self.received.resize(RECEIVE_BYTES, 0);
            let count = self.socket.read(&mut self.received)?;
            self.received.truncate(count);
            self.received_start = 0;
            if count == 0 {
                return Ok(0);
            }
        }
    }

    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buffer)])
    }

    /// Every slice rustls takes, encrypted and sent with one socket write.
    fn write_vectored(&mut self, buffers: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let accepted = {
            let mut connection = self.connection.lock().map_err(poisoned)?;
            let accepted = connection.writer().write_vectored(buffers)?;
            self.encrypted.clear();
            while connection.wants_write() {
                connection.write_tls(&mut self.encrypted)?;
            }
            accepted
        };
        self.socket.write_all(&self.encrypted)?;
        Ok(accepted)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

/// `--spawn-server --tls` without `--tls-ca`: a CA and a certificate for 127.0.0.1 and
/// localhost signed by it, in a temporary directory removed with the value.
pub struct RunCertificates {
    pub ca: PathBuf,
    pub certificate: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl RunCertificates {
    /// The spawned broker's `--set`s for its certificate.
    pub fn server_settings(&self) -> [String; 2] {
        [
            format!("ssl.certificate.location={}", self.certificate.display()),
            format!("ssl.key.location={}", self.key.display()),
        ]
    }
}

pub fn run_certificates() -> Result<RunCertificates> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::Builder::new()
        .prefix("weir-bench-tls-")
        .tempdir()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "weir-bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, &ca, &ca_key)?;
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ca.pem"), ca.pem())?;
    std::fs::write(path("server.pem"), certificate.pem())?;
    std::fs::write(path("server.key"), key.serialize_pem())?;
    Ok(RunCertificates {
        ca: path("ca.pem"),
        certificate: path("server.pem"),
        key: path("server.key"),
        _dir: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_plain_stream_writes_every_slice_in_one_call() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut stream = Stream::Plain(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        let (mut peer, _) = listener.accept().unwrap();
        let slices: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 100]).collect();
        let io_slices: Vec<io::IoSlice<'_>> = slices.iter().map(|s| io::IoSlice::new(s)).collect();
        // 10,000 bytes fit in any socket buffer: one writev takes them all.
        assert_eq!(stream.write_vectored(&io_slices).unwrap(), 10_000);
        let mut got = vec![0u8; 10_000];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, slices.concat());
    }
}
