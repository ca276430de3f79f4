//! TLS for every listener: the `ssl.*` settings (librdkafka's names), the rustls `ServerConfig`
//! built from their PEM files once at start, and the bounded server handshake.
//!
//! The main thread builds one `Arc<ServerConfig>` (`server_config`) and every shard's TLS
//! listeners share it: it is read only at handshakes, never on the data path. A handshake runs
//! inside the accepted connection's task (so it holds its `max.connections` slot) and ends within
//! `weir.tls.handshake.timeout.ms`, whatever the client does: a plaintext client on a TLS port, a
//! missing or untrusted client certificate under `ssl.client.auth=required`, or silence.
//! Core module: imports no protocol.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::stream::Stream;

/// Default of `weir.tls.handshake.timeout.ms`: long enough for a slow client on a slow link,
/// short enough that idle sockets cannot hold connection slots for long.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A certificate is asked for; a client may send none, but one it sends must be trusted.
    Requested,
    /// Mutual TLS: a client without a trusted certificate is refused.
    Required,
}

impl ClientAuth {
    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Requested => "requested",
            ClientAuth::Required => "required",
        }
    }
}

/// The `ssl.*` settings; files are read by [`server_config`] at start.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// `ssl.certificate.location`: the broker's certificate chain, PEM.
    pub certificate: Option<PathBuf>,
    /// `ssl.key.location`: its private key, PEM.
    pub key: Option<PathBuf>,
    /// `ssl.ca.location`: the CAs client certificates must chain to, PEM.
    pub ca: Option<PathBuf>,
    /// `ssl.client.auth`.
    pub client_auth: ClientAuth,
    /// `weir.tls.handshake.timeout.ms`.
    pub handshake_timeout: Duration,
}

impl Default for TlsSettings {
    fn default() -> TlsSettings {
        TlsSettings {
            certificate: None,
            key: None,
            ca: None,
            client_auth: ClientAuth::None,
            handshake_timeout: Duration::from_millis(HANDSHAKE_TIMEOUT_MS_DEFAULT),
        }
    }
}

impl TlsSettings {
    /// The settings [`TlsSettings::set`] takes.
    pub const KEYS: &'static [&'static str] = &[
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.ca.location",
        "ssl.client.auth",
        "weir.tls.handshake.timeout.ms",
    ];

    /// One `ssl.*` or `weir.tls.*` setting (see `config.rs`'s help).
    pub fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = || -> anyhow::Result<Option<PathBuf>> {
            if value.is_empty() {
                bail!("{key}: expected a file name");
            }
            Ok(Some(PathBuf::from(value)))
        };
        match key {
            "ssl.certificate.location" => self.certificate = path()?,
            "ssl.key.location" => self.key = path()?,
            "ssl.ca.location" => self.ca = path()?,
            "ssl.client.auth" => {
                self.client_auth = match value.to_ascii_lowercase().as_str() {
                    "none" => ClientAuth::None,
                    "requested" => ClientAuth::Requested,
                    "required" => ClientAuth::Required,
                    _ => bail!("{key}={value}: must be required, requested or none"),
                }
            }
            "weir.tls.handshake.timeout.ms" => {
                let ms = value
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .with_context(|| format!("{key}={value}: must be an integer > 0"))?;
                self.handshake_timeout = Duration::from_millis(ms);
            }
            _ => bail!("unknown setting {key} (see weir --help)"),
        }
        Ok(())
    }
}

/// The broker's rustls configuration, from the PEM files the settings name; an error names the
/// setting and the file.
pub fn server_config(settings: &TlsSettings) -> anyhow::Result<Arc<ServerConfig>> {
    let (Some(certificate), Some(key)) = (&settings.certificate, &settings.key) else {
        bail!("TLS listeners need ssl.certificate.location and ssl.key.location");
    };
    let chain = certificates("ssl.certificate.location", certificate)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| anyhow::anyhow!("ssl.key.location {}: {error}", key.display()))?;
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match (settings.client_auth, &settings.ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => bail!("ssl.client.auth needs ssl.ca.location"),
        (mode, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates("ssl.ca.location", ca)? {
                roots
                    .add(certificate)
                    .with_context(|| format!("ssl.ca.location {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = match mode {
                ClientAuth::Requested => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .with_context(|| format!("ssl.ca.location {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .context("ssl.certificate.location and ssl.key.location do not make a valid pair")?;
    Ok(Arc::new(config))
}

/// rustls with *ring*: it builds with the C compiler glommio needs anyway (aws-lc-rs, the
/// provider rustls now prefers, needs cmake, absent here). rustls 0.23.48 deprecates ring's
/// provider for lacking post-quantum key exchange, which no Kafka or AMQP client asks for yet.
#[expect(deprecated, reason = "ring's provider: see above")]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Every certificate of a PEM file; none is an error.
fn certificates(setting: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|error| anyhow::anyhow!("{setting} {}: {error}", path.display()))?;
    if chain.is_empty() {
        bail!(
            "{setting} {}: no PEM certificate in the file",
            path.display()
        );
    }
    Ok(chain)
}

/// A listener's TLS side: the shared configuration and the handshake's time limit.
#[derive(Clone)]
pub struct TlsListener {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl TlsListener {
    pub fn new(config: Arc<ServerConfig>, handshake_timeout: Duration) -> TlsListener {
        TlsListener {
            acceptor: TlsAcceptor::from(config),
            handshake_timeout,
        }
    }

    /// The server handshake on an accepted socket, ended with an error after the timeout.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        let handshake = async {
            let stream = self.acceptor.accept(tcp).await?;
            Ok(Stream::Tls(Box::new(stream)))
        };
        let limit = self.handshake_timeout;
        futures_lite::future::or(handshake, async move {
            glommio::timer::sleep(limit).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "not done within weir.tls.handshake.timeout.ms={}",
                    limit.as_millis()
                ),
            ))
        })
        .await
        .map_err(|error| io::Error::new(error.kind(), format!("TLS handshake: {error}")))
    }
}
