//! Exchange and binding declarations, their limits and validation, and the one place routing
//! errors get their kind of refusal ([`RoutingErrorKind`]); each protocol maps kinds to codes.
//! Core module: imports no protocol.
//!
//! Plain data, no I/O: built from admin requests on whichever shard receives them, validated
//! there and again by the controller shard's table before anything is applied. The declaration
//! types are archived by `store` (rkyv), so changing a field here changes the file format.

use std::collections::BTreeMap;

use super::headers_matcher::{HeadersMatcher, InvalidMatchMode};
use super::topic_matcher;

/// Longest exchange name, as for Kafka topics.
pub const NAME_BYTES_MAX: usize = 249;
/// Longest binding key, as AMQP's short string.
pub const BINDING_KEY_BYTES_MAX: usize = 255;
/// Most `#` words in one topic binding key; matching cost grows with this.
pub const BINDING_HASH_WORDS_MAX: usize = 8;
/// Most binding arguments on one headers binding.
pub const BINDING_ARGUMENTS_MAX: usize = 64;
/// Most bindings in the whole table, so that one admin client cannot exhaust memory on every
/// shard (each holds a copy).
pub const BINDINGS_MAX: usize = 1_000_000;
/// Most exchanges in the whole table.
pub const EXCHANGES_MAX: usize = 100_000;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
    // RabbitMQ's `x-delayed-message` exchange (the delayed-message plugin), one variant per
    // `x-delayed-type`: the type that routes a held message once it is due. Unit variants added
    // after the others keep the archived tags of the four above, so saved tables still load.
    DelayedDirect,
    DelayedFanout,
    DelayedTopic,
    DelayedHeaders,
}

impl ExchangeType {
    pub fn parse(text: &str) -> Result<ExchangeType, RoutingError> {
        match text {
            "direct" => Ok(ExchangeType::Direct),
            "fanout" => Ok(ExchangeType::Fanout),
            "topic" => Ok(ExchangeType::Topic),
            "headers" => Ok(ExchangeType::Headers),
            other => Err(RoutingError::UnknownExchangeType {
                value: other.to_string(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
            ExchangeType::Headers => "headers",
            ExchangeType::DelayedDirect
            | ExchangeType::DelayedFanout
            | ExchangeType::DelayedTopic
            | ExchangeType::DelayedHeaders => DELAYED_TYPE_NAME,
        }
    }

    /// The delayed exchange that routes as `self` once a message is due; `None` for a type that
    /// is itself delayed.
    pub fn delayed(self) -> Option<ExchangeType> {
        match self {
            ExchangeType::Direct => Some(ExchangeType::DelayedDirect),
            ExchangeType::Fanout => Some(ExchangeType::DelayedFanout),
            ExchangeType::Topic => Some(ExchangeType::DelayedTopic),
            ExchangeType::Headers => Some(ExchangeType::DelayedHeaders),
            _ => None,
        }
    }

    /// The type whose matching routes this exchange's messages: itself, or a delayed
    /// exchange's `x-delayed-type`.
    pub fn routing(self) -> ExchangeType {
        match self {
            ExchangeType::DelayedDirect => ExchangeType::Direct,
            ExchangeType::DelayedFanout => ExchangeType::Fanout,
            ExchangeType::DelayedTopic => ExchangeType::Topic,
            ExchangeType::DelayedHeaders => ExchangeType::Headers,
            plain => plain,
        }
    }

    pub fn is_delayed(self) -> bool {
        self.routing() != self
    }
}

/// The AMQP type name of a delayed exchange (the plugin's).
pub const DELAYED_TYPE_NAME: &str = "x-delayed-message";

/// A declared exchange.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeType,
    /// Where records go that this exchange's own bindings match nothing for (RabbitMQ's
    /// `alternate-exchange`). It may name an exchange that does not exist (yet); then such
    /// records are unroutable, as in RabbitMQ.
    pub alternate: Option<String>,
}

impl Exchange {
    pub fn new(name: &str, kind: ExchangeType) -> Exchange {
        Exchange {
            name: name.to_string(),
            kind,
            alternate: None,
        }
    }

    pub fn validate(&self) -> Result<(), RoutingError> {
        validate_name(&self.name)?;
        if let Some(alternate) = &self.alternate {
            validate_name(alternate)?;
        }
        Ok(())
    }
}

/// Where a binding sends what it matches.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum Destination {
    Topic(String),
    Exchange(String),
}

impl Destination {
    pub fn name(&self) -> &str {
        match self {
            Destination::Topic(name) | Destination::Exchange(name) => name,
        }
    }
}

/// A binding from a source exchange to a destination. `key` is the binding key for direct and
/// topic exchanges (ignored by fanout and headers); `arguments` are the headers exchange's
/// criteria and `x-match` (ignored by the other types, as RabbitMQ does).
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Binding {
    pub source: String,
    pub destination: Destination,
    pub key: String,
    pub arguments: BTreeMap<String, String>,
}

impl Binding {
    pub fn new(source: &str, destination: Destination, key: &str) -> Binding {
        Binding {
            source: source.to_string(),
            destination,
            key: key.to_string(),
            arguments: BTreeMap::new(),
        }
    }

    /// Checks what can be checked without the table: names, key length, `#` count, `x-match`.
    pub fn validate_for(&self, kind: ExchangeType) -> Result<(), RoutingError> {
        validate_name(&self.source)?;
        validate_name(self.destination.name())?;
        if self.key.len() > BINDING_KEY_BYTES_MAX {
            return Err(RoutingError::BindingKeyTooLong {
                bytes: self.key.len(),
            });
        }
        if self.arguments.len() > BINDING_ARGUMENTS_MAX {
            return Err(RoutingError::TooManyArguments {
                count: self.arguments.len(),
            });
        }
        match kind.routing() {
            ExchangeType::Topic => {
                let hashes = topic_matcher::hash_count(&self.key);
                if hashes > BINDING_HASH_WORDS_MAX {
                    return Err(RoutingError::TooManyHashWords {
                        key: self.key.clone(),
                        count: hashes,
                    });
                }
            }
            ExchangeType::Headers => {
                HeadersMatcher::new(&self.arguments)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Kafka's topic name rule, which exchange names follow because clients produce to them as
/// topics: 1 to 249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), RoutingError> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name.len() > NAME_BYTES_MAX {
        Some("is longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("cannot be '.' or '..'")
    } else if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        Some("may hold only ASCII letters, digits, '.', '_' and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RoutingError::InvalidName {
            name: name.chars().take(NAME_BYTES_MAX + 1).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Why a declaration or a route was refused. Every variant has one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("unknown exchange type {value:?}: expected direct, fanout, topic or headers")]
    UnknownExchangeType { value: String },
    #[error(transparent)]
    InvalidMatchMode(#[from] InvalidMatchMode),
    #[error("binding key {key:?} has {count} '#' words; at most {max} are allowed", max = BINDING_HASH_WORDS_MAX)]
    TooManyHashWords { key: String, count: usize },
    #[error("binding key is {bytes} bytes; at most {max} are allowed", max = BINDING_KEY_BYTES_MAX)]
    BindingKeyTooLong { bytes: usize },
    #[error("binding has {count} arguments; at most {max} are allowed", max = BINDING_ARGUMENTS_MAX)]
    TooManyArguments { count: usize },
    #[error("exchange {name:?} does not exist")]
    UnknownExchange { name: String },
    #[error("exchange {name:?} already exists as a {existing} exchange")]
    ExchangeExists {
        name: String,
        existing: &'static str,
    },
    #[error("the table already holds the most {what} allowed ({max})")]
    TableFull { what: &'static str, max: usize },
    #[error("invalid config {name:?}: {reason}")]
    InvalidConfig { name: String, reason: String },
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error("{name:?} is an exchange: produce to it, consume from the topics bound to it")]
    FetchFromExchange { name: String },
}

/// The kind of refusal a routing error is. Each protocol maps a kind to its own code (Kafka's in
/// `kafka::error_codes`); the kinds are as fine as the codes clients have always seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingErrorKind {
    /// A name breaks the naming rules.
    InvalidName,
    /// A declaration's settings are invalid (type, binding key, arguments, configs).
    InvalidConfig,
    /// The exchange (or topic) named does not exist.
    NotFound,
    /// The name is taken.
    AlreadyExists,
    /// The table is at one of its limits.
    LimitReached,
    /// The request cannot be served as asked (e.g. a fetch from an exchange).
    InvalidRequest,
    /// Produced records could not be decoded.
    CorruptRecords,
    /// A produced batch holds more records than routing takes.
    TooManyRecords,
    /// Routed records could not be encoded again.
    Internal,
    /// The declarations could not be made durable, or the saved ones are invalid.
    Storage,
}

impl RoutingError {
    /// The kind of refusal: what an admin or produce response reports for this error.
    pub fn kind(&self) -> RoutingErrorKind {
        match self {
            RoutingError::InvalidName { .. } => RoutingErrorKind::InvalidName,
            RoutingError::UnknownExchangeType { .. }
            | RoutingError::InvalidMatchMode(_)
            | RoutingError::TooManyHashWords { .. }
            | RoutingError::BindingKeyTooLong { .. }
            | RoutingError::TooManyArguments { .. }
            | RoutingError::InvalidConfig { .. } => RoutingErrorKind::InvalidConfig,
            RoutingError::UnknownExchange { .. } => RoutingErrorKind::NotFound,
            RoutingError::ExchangeExists { .. } => RoutingErrorKind::AlreadyExists,
            RoutingError::TableFull { .. } => RoutingErrorKind::LimitReached,
            RoutingError::InvalidRequest { .. } | RoutingError::FetchFromExchange { .. } => {
                RoutingErrorKind::InvalidRequest
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_topic_rules() {
        for good in ["app", "user-signups", "a.b_c-D9", &"x".repeat(249)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "slash/",
            "ünï",
            &"x".repeat(250),
        ] {
            let error = validate_name(bad).unwrap_err();
            assert_eq!(
                error.kind(),
                RoutingErrorKind::InvalidName,
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn types_parse_and_render() {
        for kind in [
            ExchangeType::Direct,
            ExchangeType::Fanout,
            ExchangeType::Topic,
            ExchangeType::Headers,
        ] {
            assert_eq!(ExchangeType::parse(kind.as_str()), Ok(kind));
        }
        for kind in [ExchangeType::Direct, ExchangeType::Topic] {
            let delayed = kind.delayed().unwrap();
            assert_eq!((delayed.routing(), delayed.is_delayed()), (kind, true));
            assert_eq!(delayed.as_str(), "x-delayed-message");
            assert_eq!(delayed.delayed(), None);
        }
        // Kafka's configs declare plain types only.
        assert!(ExchangeType::parse("x-delayed-message").is_err());
        let error = ExchangeType::parse("x-consistent-hash").unwrap_err();
        assert_eq!(error.kind(), RoutingErrorKind::InvalidConfig);
        assert!(error.to_string().contains("x-consistent-hash"));
    }

    #[test]
    fn binding_validation() {
        let topic = |key: &str| Binding::new("app", Destination::Topic("audit".into()), key);
        assert_eq!(topic("#.a.#").validate_for(ExchangeType::Topic), Ok(()));
        let hashes = ["#"; BINDING_HASH_WORDS_MAX + 1].join(".");
        let error = topic(&hashes)
            .validate_for(ExchangeType::Topic)
            .unwrap_err();
        assert_eq!(error.kind(), RoutingErrorKind::InvalidConfig);
        // The same key is fine where `#` means nothing.
        assert_eq!(topic(&hashes).validate_for(ExchangeType::Direct), Ok(()));
        let long = "k".repeat(BINDING_KEY_BYTES_MAX + 1);
        assert_eq!(
            topic(&long)
                .validate_for(ExchangeType::Direct)
                .unwrap_err()
                .kind(),
            RoutingErrorKind::InvalidConfig
        );

        let mut headers = topic("");
        headers
            .arguments
            .insert("x-match".into(), "sometimes".into());
        let error = headers.validate_for(ExchangeType::Headers).unwrap_err();
        assert_eq!(error.kind(), RoutingErrorKind::InvalidConfig);
        assert!(error.to_string().contains("sometimes"));
        // Other types ignore arguments, as RabbitMQ does.
        assert_eq!(headers.validate_for(ExchangeType::Fanout), Ok(()));

        let bad_destination = Binding::new("app", Destination::Topic("no/slash".into()), "");
        assert_eq!(
            bad_destination
                .validate_for(ExchangeType::Fanout)
                .unwrap_err()
                .kind(),
            RoutingErrorKind::InvalidName
        );
    }
}
