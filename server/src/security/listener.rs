//! Listener syntax: Kafka's `PROTOCOL://HOST:PORT` for `--listen` and `amqp[s]://HOST:PORT` for
//! `--amqp-listen`, and the security protocol each listener carries into its connections.
//!
//! Parsed once on the main thread at start (`config.rs`); shards hold the result read-only.
//! Core module: imports no protocol.
//!
//! | text                       | Kafka listener                                |
//! |----------------------------|-----------------------------------------------|
//! | `127.0.0.1:9092`           | PLAINTEXT on 127.0.0.1:9092 (today's syntax)  |
//! | `PLAINTEXT://host:9092`    | PLAINTEXT                                     |
//! | `ssl://host:9093`          | SSL (protocol names are case-insensitive)     |
//! | `SASL_SSL://:9094`         | SASL_SSL on 0.0.0.0:9094 (empty host = all)   |
//! | `A://h:1,SSL://h:2`        | two listeners (Kafka's comma-separated list)  |
//! | `HTTP://h:1`, `SSL://h`    | error naming the listener and what is wrong   |

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// Kafka's `security.protocol` of a listener: what a client must speak on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    /// Whether clients must authenticate with SASL before other requests.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Whether the listener's connections are TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Kafka's name (`SASL_SSL`).
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    fn parse(text: &str) -> Option<SecurityProtocol> {
        SecurityProtocol::ALL
            .into_iter()
            .find(|protocol| protocol.name().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One Kafka listener: its bootstrap address (every shard, SO_REUSEPORT); shard i also listens on
/// port + 1 + i, advertised as broker i to the clients that connected through this listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaListener {
    pub protocol: SecurityProtocol,
    pub address: SocketAddr,
    /// The host as written (empty when the listener binds every interface): the default
    /// advertised host.
    pub host: String,
}

impl fmt::Display for KafkaListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.protocol, self.address)
    }
}

/// One AMQP listener (every shard, SO_REUSEPORT): `amqp://` or, with TLS, `amqps://`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmqpListener {
    pub tls: bool,
    pub address: SocketAddr,
}

impl fmt::Display for AmqpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        write!(f, "{scheme}://{}", self.address)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenerError {
    #[error("listener {text:?}: unknown security protocol {protocol:?} (expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)")]
    UnknownProtocol { text: String, protocol: String },
    #[error("listener {text:?}: unknown scheme {scheme:?} (expected amqp or amqps)")]
    UnknownScheme { text: String, scheme: String },
    #[error("listener {text:?}: expected HOST:PORT after the protocol")]
    NoPort { text: String },
    #[error("listener {text:?}: {reason}")]
    BadAddress { text: String, reason: String },
    #[error("no listener given")]
    Empty,
}

/// A `--listen` value (or the config file's `listen`): one listener or a comma-separated list.
pub fn parse_kafka_listeners(text: &str) -> Result<Vec<KafkaListener>, ListenerError> {
    split_list(text)
        .map(|item| {
            let (protocol, rest) = match item.split_once("://") {
                Some((name, rest)) => {
                    let protocol = SecurityProtocol::parse(name).ok_or_else(|| {
                        ListenerError::UnknownProtocol {
                            text: item.to_string(),
                            protocol: name.to_string(),
                        }
                    })?;
                    (protocol, rest)
                }
                None => (SecurityProtocol::Plaintext, item),
            };
            let (address, host) = resolve(item, rest)?;
            Ok(KafkaListener {
                protocol,
                address,
                host,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(non_empty)
}

/// An `--amqp-listen` value: `amqp://HOST:PORT`, `amqps://HOST:PORT`, a bare `HOST:PORT`
/// (amqp), or a comma-separated list; `none` (no AMQP) is the caller's.
pub fn parse_amqp_listeners(text: &str) -> Result<Vec<AmqpListener>, ListenerError> {
    split_list(text)
        .map(|item| {
            let (tls, rest) = match item.split_once("://") {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("amqp") => (false, rest),
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("amqps") => (true, rest),
                Some((scheme, _)) => {
                    return Err(ListenerError::UnknownScheme {
                        text: item.to_string(),
                        scheme: scheme.to_string(),
                    })
                }
                None => (false, item),
            };
            let (address, _) = resolve(item, rest.trim_end_matches('/'))?;
            Ok(AmqpListener { tls, address })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(non_empty)
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn non_empty<T>(listeners: Vec<T>) -> Result<Vec<T>, ListenerError> {
    if listeners.is_empty() {
        Err(ListenerError::Empty)
    } else {
        Ok(listeners)
    }
}

/// `HOST:PORT` (an empty host binds every interface, as in Kafka's `listeners`) → the address
/// and the host as written.
fn resolve(text: &str, host_port: &str) -> Result<(SocketAddr, String), ListenerError> {
    let Some((host, port)) = host_port.rsplit_once(':') else {
        return Err(ListenerError::NoPort {
            text: text.to_string(),
        });
    };
    let bad = |reason: String| ListenerError::BadAddress {
        text: text.to_string(),
        reason,
    };
    let port: u16 = port
        .parse()
        .map_err(|_| bad(format!("port {port:?} is not a number 0-65535")))?;
    let bind_host = if host.is_empty() { "0.0.0.0" } else { host };
    let address = (
        bind_host.trim_start_matches('[').trim_end_matches(']'),
        port,
    )
        .to_socket_addrs()
        .map_err(|error| bad(format!("host {host:?}: {error}")))?
        .next()
        .ok_or_else(|| bad(format!("host {host:?} resolves to no address")))?;
    Ok((address, host.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<Vec<(SecurityProtocol, &str)>, &str>) {
        let parsed = parse_kafka_listeners(text).map(|listeners| {
            listeners
                .into_iter()
                .map(|l| (l.protocol, l.address.to_string()))
                .collect::<Vec<_>>()
        });
        match (parsed, expected) {
            (Ok(got), Ok(want)) => {
                let want: Vec<_> = want.into_iter().map(|(p, a)| (p, a.to_string())).collect();
                assert_eq!(got, want, "{text}");
            }
            (Err(error), Err(fragment)) => {
                let message = error.to_string();
                assert!(message.contains(fragment), "{text}: {message}");
            }
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn kafka_listener_syntax() {
        use SecurityProtocol::*;
        check("127.0.0.1:9092", Ok(vec![(Plaintext, "127.0.0.1:9092")]));
        check(
            "PLAINTEXT://127.0.0.1:9092",
            Ok(vec![(Plaintext, "127.0.0.1:9092")]),
        );
        check("ssl://127.0.0.1:9093", Ok(vec![(Ssl, "127.0.0.1:9093")]));
        check("SASL_SSL://:9094", Ok(vec![(SaslSsl, "0.0.0.0:9094")]));
        check(
            "SASL_PLAINTEXT://[::1]:9095",
            Ok(vec![(SaslPlaintext, "[::1]:9095")]),
        );
        check(
            "PLAINTEXT://127.0.0.1:1, SSL://127.0.0.1:2",
            Ok(vec![(Plaintext, "127.0.0.1:1"), (Ssl, "127.0.0.1:2")]),
        );
        check(
            "HTTP://127.0.0.1:1",
            Err("unknown security protocol \"HTTP\""),
        );
        check("SSL://127.0.0.1", Err("expected HOST:PORT"));
        check("127.0.0.1:99999", Err("port \"99999\" is not a number"));
        check(
            "SSL://no.such.host.invalid:1",
            Err("host \"no.such.host.invalid\""),
        );
        check(" , ", Err("no listener given"));
    }

    #[test]
    fn amqp_listener_syntax() {
        let parse = |text: &str| {
            parse_amqp_listeners(text)
                .map(|ls| ls.iter().map(|l| l.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(parse("127.0.0.1:5672").unwrap(), ["amqp://127.0.0.1:5672"]);
        assert_eq!(
            parse("amqp://127.0.0.1:5672,AMQPS://127.0.0.1:5671/").unwrap(),
            ["amqp://127.0.0.1:5672", "amqps://127.0.0.1:5671"]
        );
        let error = parse("https://127.0.0.1:5671").unwrap_err().to_string();
        assert!(error.contains("unknown scheme \"https\""), "{error}");
    }

    #[test]
    fn protocols_know_tls_and_sasl() {
        use SecurityProtocol::*;
        let table = [
            (Plaintext, false, false),
            (Ssl, true, false),
            (SaslPlaintext, false, true),
            (SaslSsl, true, true),
        ];
        for (protocol, tls, sasl) in table {
            assert_eq!((protocol.tls(), protocol.sasl()), (tls, sasl), "{protocol}");
        }
    }
}
