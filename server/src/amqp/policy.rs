//! A queue's optional arguments (`x-message-ttl`, `x-expires`, `x-max-length`,
//! `x-max-length-bytes`, `x-overflow`, `x-dead-letter-exchange`, `x-dead-letter-routing-key`,
//! `x-delivery-limit`, `x-single-active-consumer`, `x-queue-type`, `x-max-priority`), and
//! basic.consume's `x-priority`: checked
//! as RabbitMQ checks them at queue.declare (406 for a wrong type or range, never silently
//! ignored), and kept as `weir.queue.*` topic configs so that a restart rebuilds the same queue.
//!
//! Pure: no I/O, no shard state.

use std::collections::BTreeMap;

use amq_protocol::types::{AMQPValue, FieldTable};

use super::error::AmqpError;

/// What a full queue does with one more message (`x-overflow`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (and dead-letter) the oldest ready messages: RabbitMQ's default.
    #[default]
    DropHead,
    /// Refuse the new message: basic.nack under confirms, dropped otherwise.
    RejectPublish,
    /// As `RejectPublish`, and dead-letter the refused message.
    RejectPublishDlx,
}

impl Overflow {
    fn name(self) -> &'static str {
        match self {
            Overflow::DropHead => "drop-head",
            Overflow::RejectPublish => "reject-publish",
            Overflow::RejectPublishDlx => "reject-publish-dlx",
        }
    }

    fn parse(text: &str) -> Option<Overflow> {
        [
            Overflow::DropHead,
            Overflow::RejectPublish,
            Overflow::RejectPublishDlx,
        ]
        .into_iter()
        .find(|overflow| overflow.name() == text)
    }
}

/// The arguments that change how a queue behaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueuePolicy {
    /// `x-message-ttl`: a message expires this long after it was stored.
    pub message_ttl_ms: Option<u64>,
    /// `x-expires`: the queue is deleted after this long unused.
    pub expires_ms: Option<u64>,
    /// `x-max-length`: ready messages at most.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: bytes of ready message bodies at most.
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    /// `x-dead-letter-exchange` (`""` is the default exchange).
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`: replaces the message's routing key when dead-lettered.
    pub dead_letter_routing_key: Option<String>,
    /// `x-delivery-limit`: returns allowed before a message is dead-lettered.
    pub delivery_limit: Option<u64>,
    /// `x-max-priority`: ready messages go out highest `priority` first (capped at this).
    pub max_priority: Option<u8>,
    /// `x-queue-type` `quorum`: deliveries carry RabbitMQ's `x-delivery-count` header.
    pub quorum: bool,
}

/// The topic configs that hold a policy, and the argument each comes from.
const CONFIGS: [(&str, &str); 10] = [
    ("weir.queue.message-ttl", "x-message-ttl"),
    ("weir.queue.expires", "x-expires"),
    ("weir.queue.max-length", "x-max-length"),
    ("weir.queue.max-length-bytes", "x-max-length-bytes"),
    ("weir.queue.overflow", "x-overflow"),
    ("weir.queue.dead-letter-exchange", "x-dead-letter-exchange"),
    (
        "weir.queue.dead-letter-routing-key",
        "x-dead-letter-routing-key",
    ),
    ("weir.queue.delivery-limit", "x-delivery-limit"),
    ("weir.queue.max-priority", "x-max-priority"),
    ("weir.queue.type", "x-queue-type"),
];

impl QueuePolicy {
    /// The policy a queue.declare asks for, checked as RabbitMQ checks it.
    pub fn from_arguments(
        arguments: &FieldTable,
        durable: bool,
        exclusive: bool,
    ) -> Result<QueuePolicy, AmqpError> {
        let mut texts = BTreeMap::new();
        for (name, value) in arguments {
            if let Some(text) = check_argument(name.as_str(), value, durable, exclusive)? {
                texts.insert(name.as_str().to_string(), text);
            }
        }
        let by_argument = |argument: &str| texts.get(argument).cloned();
        Ok(QueuePolicy::parse(by_argument))
    }

    /// The policy as its topic configs hold it (see `to_configs`).
    pub fn from_configs(configs: &BTreeMap<String, String>) -> QueuePolicy {
        QueuePolicy::parse(|argument| {
            let (config, _) = CONFIGS.iter().find(|(_, name)| *name == argument)?;
            configs.get(*config).cloned()
        })
    }

    fn parse(value: impl Fn(&str) -> Option<String>) -> QueuePolicy {
        let number = |argument: &str| value(argument).and_then(|text| text.parse().ok());
        QueuePolicy {
            message_ttl_ms: number("x-message-ttl"),
            expires_ms: number("x-expires"),
            max_length: number("x-max-length"),
            max_length_bytes: number("x-max-length-bytes"),
            overflow: value("x-overflow")
                .and_then(|text| Overflow::parse(&text))
                .unwrap_or_default(),
            dead_letter_exchange: value("x-dead-letter-exchange"),
            dead_letter_routing_key: value("x-dead-letter-routing-key"),
            delivery_limit: number("x-delivery-limit"),
            max_priority: value("x-max-priority").and_then(|text| text.parse().ok()),
            quorum: value("x-queue-type").as_deref() == Some("quorum"),
        }
    }

    /// Adds the policy's topic configs (only the arguments that were given).
    pub fn to_configs(&self, configs: &mut BTreeMap<String, String>) {
        let number = |value: Option<u64>| value.map(|number| number.to_string());
        let values = [
            number(self.message_ttl_ms),
            number(self.expires_ms),
            number(self.max_length),
            number(self.max_length_bytes),
            (self.overflow != Overflow::DropHead).then(|| self.overflow.name().to_string()),
            self.dead_letter_exchange.clone(),
            self.dead_letter_routing_key.clone(),
            number(self.delivery_limit),
            self.max_priority.map(|max| max.to_string()),
            self.quorum.then(|| "quorum".to_string()),
        ];
        for ((config, _), value) in CONFIGS.iter().zip(values) {
            if let Some(value) = value {
                configs.insert(config.to_string(), value);
            }
        }
    }

    /// Whether the queue takes in a message of `body_bytes` when it holds `ready` messages of
    /// `ready_bytes` (only `reject-publish` ever refuses).
    pub fn refuses(&self, ready: u64, ready_bytes: u64, body_bytes: u64) -> bool {
        self.overflow != Overflow::DropHead && self.over_limit(ready + 1, ready_bytes + body_bytes)
    }

    /// Whether `ready` messages of `ready_bytes` are more than the queue may hold.
    pub fn over_limit(&self, ready: u64, ready_bytes: u64) -> bool {
        self.max_length.is_some_and(|max| ready > max)
            || self.max_length_bytes.is_some_and(|max| ready_bytes > max)
    }
}

/// basic.consume's `x-priority` (default 0): any AMQP integer, as RabbitMQ takes it; anything
/// else is 406, as RabbitMQ answers.
pub fn consumer_priority(arguments: &FieldTable) -> Result<i64, AmqpError> {
    let Some(value) = arguments.inner().get("x-priority") else {
        return Ok(0);
    };
    integer(value).ok_or_else(|| {
        AmqpError::precondition(format!(
            "invalid arg 'x-priority' for consumer: expected an integer ({value:?})"
        ))
    })
}

/// One declare argument checked; answers its value as text when the policy keeps it.
fn check_argument(
    name: &str,
    value: &AMQPValue,
    durable: bool,
    exclusive: bool,
) -> Result<Option<String>, AmqpError> {
    let invalid = |why: &str| {
        Err(AmqpError::precondition(format!(
            "invalid arg '{name}' for queue: {why} ({value:?})"
        )))
    };
    match name {
        // RabbitMQ takes 0 too (a queue of one priority, so first in first out).
        "x-max-priority" => match integer(value) {
            Some(number @ 0..=255) => Ok(Some(number.to_string())),
            Some(number) if number > 255 => invalid("max value exceeded, at most 255"),
            _ => invalid("expected a non-negative integer"),
        },
        "x-message-ttl" | "x-max-length" | "x-max-length-bytes" | "x-delivery-limit" => {
            match integer(value) {
                Some(number) if number >= 0 => Ok(Some(number.to_string())),
                _ => invalid("expected a non-negative integer"),
            }
        }
        "x-expires" => match integer(value) {
            Some(number) if number >= 1 => Ok(Some(number.to_string())),
            _ => invalid("expected a positive integer"),
        },
        "x-overflow" => match text(value).as_deref().and_then(Overflow::parse) {
            Some(overflow) => Ok(Some(overflow.name().to_string())),
            None => invalid("expected drop-head, reject-publish or reject-publish-dlx"),
        },
        "x-dead-letter-exchange" | "x-dead-letter-routing-key" => match text(value) {
            Some(text) => Ok(Some(text)),
            None => invalid("expected a string"),
        },
        "x-single-active-consumer" => match value {
            AMQPValue::Boolean(_) => Ok(None),
            _ => invalid("expected a boolean"),
        },
        "x-queue-type" => check_queue_type(value, durable, exclusive),
        _ => Ok(None),
    }
}

/// `Some("quorum")` for a quorum queue (the policy keeps it), `None` for a classic one.
fn check_queue_type(
    value: &AMQPValue,
    durable: bool,
    exclusive: bool,
) -> Result<Option<String>, AmqpError> {
    match text(value).as_deref() {
        Some("classic") => Ok(None),
        Some("quorum") if durable && !exclusive => Ok(Some("quorum".to_string())),
        Some("quorum") => Err(AmqpError::precondition(
            "invalid property 'non-durable' or 'exclusive' for a quorum queue",
        )),
        Some("stream") => Err(AmqpError::precondition(
            "x-queue-type stream: stream queues are not supported by Weir yet",
        )),
        _ => Err(AmqpError::precondition(format!(
            "invalid arg 'x-queue-type' for queue: expected classic, quorum or stream ({value:?})"
        ))),
    }
}

/// An AMQP integer of any width.
fn integer(value: &AMQPValue) -> Option<i64> {
    Some(match *value {
        AMQPValue::ShortShortInt(number) => i64::from(number),
        AMQPValue::ShortShortUInt(number) => i64::from(number),
        AMQPValue::ShortInt(number) => i64::from(number),
        AMQPValue::ShortUInt(number) => i64::from(number),
        AMQPValue::LongInt(number) => i64::from(number),
        AMQPValue::LongUInt(number) => i64::from(number),
        AMQPValue::LongLongInt(number) => number,
        _ => return None,
    })
}

/// A string argument (long or short string) as text.
pub fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in entries {
            table.insert((*name).into(), value.clone());
        }
        table
    }

    #[test]
    fn a_policy_survives_its_topic_configs() {
        let arguments = table(&[
            ("x-message-ttl", AMQPValue::LongInt(200)),
            ("x-expires", AMQPValue::LongLongInt(60_000)),
            ("x-max-length", AMQPValue::ShortShortUInt(2)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            ("x-max-priority", AMQPValue::ShortShortUInt(10)),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString("dead".into()),
            ),
        ]);
        let policy = QueuePolicy::from_arguments(&arguments, true, false).unwrap();
        assert_eq!(policy.message_ttl_ms, Some(200));
        assert_eq!(policy.overflow, Overflow::RejectPublish);
        assert_eq!(policy.dead_letter_exchange.as_deref(), Some(""));
        assert_eq!(policy.max_priority, Some(10));
        let mut configs = BTreeMap::new();
        policy.to_configs(&mut configs);
        assert_eq!(QueuePolicy::from_configs(&configs), policy);
    }

    #[test]
    fn wrong_types_and_ranges_are_refused_with_406() {
        for (name, value) in [
            ("x-message-ttl", AMQPValue::LongInt(-1)),
            ("x-message-ttl", AMQPValue::LongString("soon".into())),
            ("x-expires", AMQPValue::LongInt(0)),
            ("x-overflow", AMQPValue::LongString("explode".into())),
            ("x-dead-letter-exchange", AMQPValue::LongInt(1)),
            ("x-queue-type", AMQPValue::LongString("teapot".into())),
            ("x-max-priority", AMQPValue::LongInt(256)),
            ("x-max-priority", AMQPValue::LongInt(-1)),
            ("x-max-priority", AMQPValue::LongString("ten".into())),
            ("x-max-priority", AMQPValue::Boolean(true)),
        ] {
            let refused = QueuePolicy::from_arguments(&table(&[(name, value)]), true, false);
            assert_eq!(refused.map_err(|error| error.code()), Err(406), "{name}");
        }
    }

    #[test]
    fn consumer_priority_is_any_integer_and_zero_by_default() {
        let priority = |entries: &[(&str, AMQPValue)]| {
            consumer_priority(&table(entries)).map_err(|error| error.code())
        };
        assert_eq!(priority(&[]), Ok(0));
        assert_eq!(priority(&[("x-priority", AMQPValue::LongInt(-5))]), Ok(-5));
        let long = AMQPValue::LongLongInt(1 << 40);
        assert_eq!(priority(&[("x-priority", long)]), Ok(1 << 40));
        let text = AMQPValue::LongString("high".into());
        assert_eq!(priority(&[("x-priority", text)]), Err(406));
    }

    #[test]
    fn reject_publish_refuses_past_either_limit() {
        let policy = QueuePolicy {
            max_length: Some(2),
            max_length_bytes: Some(10),
            overflow: Overflow::RejectPublish,
            ..QueuePolicy::default()
        };
        assert!(!policy.refuses(1, 4, 4));
        assert!(policy.refuses(2, 4, 1));
        assert!(policy.refuses(0, 8, 3));
        let drop_head = QueuePolicy {
            overflow: Overflow::DropHead,
            ..policy
        };
        assert!(!drop_head.refuses(5, 100, 1));
        assert!(drop_head.over_limit(3, 0));
    }
}
