//! A queue's optional arguments (`x-message-ttl`, `x-expires`, `x-max-length`,
//! `x-max-length-bytes`, `x-overflow`, `x-dead-letter-exchange`, `x-dead-letter-routing-key`,
//! `x-delivery-limit`, `x-single-active-consumer`, `x-queue-type`, `x-max-priority`, and a
//! stream's `x-max-age` and `x-stream-max-segment-size-bytes`), and basic.consume's `x-priority`
//! and `x-stream-offset`: checked
//! as RabbitMQ checks them at queue.declare (406 for a wrong type or range, never silently
//! ignored), and kept as `weir.queue.*` topic configs so that a restart rebuilds the same queue.
//!
//! Pure: no I/O, no shard state.

use std::collections::BTreeMap;

use amq_protocol::types::{AMQPValue, FieldTable};

use weir_engine::limits::{SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};

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
    /// `x-queue-type` `stream`: the queue keeps its messages under Kafka retention and each
    /// consumer reads it from its own offset (`queue_owner/stream.rs`).
    pub stream: bool,
    /// `x-max-age` of a stream, in ms (its log's `retention.ms`).
    pub max_age_ms: Option<u64>,
    /// `x-stream-max-segment-size-bytes` (its log's `segment.bytes`).
    pub stream_segment_bytes: Option<u64>,
}

/// The topic config that holds a queue's type (`quorum`, `stream`; none for classic).
pub const CONFIG_TYPE: &str = "weir.queue.type";

/// The topic config of `x-max-priority`, and of `x-overflow` (runs of publishes look for them,
/// `publish_run.rs`).
pub const CONFIG_MAX_PRIORITY: &str = "weir.queue.max-priority";
pub const CONFIG_OVERFLOW: &str = "weir.queue.overflow";

/// The topic configs that hold a policy, and the argument each comes from.
const CONFIGS: [(&str, &str); 12] = [
    ("weir.queue.message-ttl", "x-message-ttl"),
    ("weir.queue.expires", "x-expires"),
    ("weir.queue.max-length", "x-max-length"),
    ("weir.queue.max-length-bytes", "x-max-length-bytes"),
    (CONFIG_OVERFLOW, "x-overflow"),
    ("weir.queue.dead-letter-exchange", "x-dead-letter-exchange"),
    (
        "weir.queue.dead-letter-routing-key",
        "x-dead-letter-routing-key",
    ),
    ("weir.queue.delivery-limit", "x-delivery-limit"),
    (CONFIG_MAX_PRIORITY, "x-max-priority"),
    (CONFIG_TYPE, "x-queue-type"),
    ("weir.queue.max-age-ms", "x-max-age"),
    (
        "weir.queue.stream-max-segment-size-bytes",
        "x-stream-max-segment-size-bytes",
    ),
];

/// The classic and quorum queue arguments a stream refuses, as RabbitMQ 3.10 does (406 "invalid
/// arg ... of queue type rabbit_stream_queue"); arguments RabbitMQ does not know pass.
const NOT_FOR_STREAMS: [&str; 14] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-queue-master-locator",
];

/// The stream arguments other queues refuse.
const ONLY_FOR_STREAMS: [&str; 2] = ["x-max-age", "x-stream-max-segment-size-bytes"];

/// The flags of a queue.declare that a queue type may refuse.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeclareFlags {
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
}

impl QueuePolicy {
    /// The policy a queue.declare asks for, checked as RabbitMQ checks it.
    pub fn from_arguments(
        arguments: &FieldTable,
        flags: DeclareFlags,
    ) -> Result<QueuePolicy, AmqpError> {
        check_type_fits(arguments, flags)?;
        let mut texts = BTreeMap::new();
        for (name, value) in arguments {
            if let Some(text) = check_argument(name.as_str(), value, flags)? {
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
            stream: value("x-queue-type").as_deref() == Some("stream"),
            max_age_ms: number("x-max-age"),
            stream_segment_bytes: number("x-stream-max-segment-size-bytes"),
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
            self.queue_type().map(str::to_string),
            number(self.max_age_ms),
            number(self.stream_segment_bytes),
        ];
        for ((config, _), value) in CONFIGS.iter().zip(values) {
            if let Some(value) = value {
                configs.insert(config.to_string(), value);
            }
        }
    }

    /// The `x-queue-type` kept for a queue that is not classic.
    fn queue_type(&self) -> Option<&'static str> {
        match (self.quorum, self.stream) {
            (true, _) => Some("quorum"),
            (_, true) => Some("stream"),
            _ => None,
        }
    }

    /// A stream's log configs: RabbitMQ's retention arguments as Kafka's (`retention.bytes`
    /// from `x-max-length-bytes`, `retention.ms` from `x-max-age`, `segment.bytes` from
    /// `x-stream-max-segment-size-bytes` within the engine's bounds); none set is no limit.
    pub fn stream_log_configs(&self, configs: &mut BTreeMap<String, String>) {
        let limit = |value: Option<u64>| value.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        configs.insert(
            "retention.bytes".to_string(),
            limit(self.max_length_bytes).to_string(),
        );
        configs.insert(
            "retention.ms".to_string(),
            limit(self.max_age_ms).to_string(),
        );
        if let Some(bytes) = self.stream_segment_bytes {
            let bytes = bytes.clamp(SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX);
            configs.insert("segment.bytes".to_string(), bytes.to_string());
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

/// Where a consumer of a stream starts (`x-stream-offset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamOffset {
    First,
    Last,
    Next,
    /// A log offset (below the start: the start; past the end: the end).
    At(i64),
    /// The first message stored at or after this time (ms since the epoch).
    Since(i64),
    /// The first message stored within this long (ms) before the consume.
    Within(u64),
}

/// basic.consume's `x-stream-offset` (default `next`). Anything else is 406; RabbitMQ 3.10
/// fails such a consume with 541 INTERNAL_ERROR on the connection.
pub fn stream_offset(arguments: &FieldTable) -> Result<StreamOffset, AmqpError> {
    let Some(value) = arguments.inner().get("x-stream-offset") else {
        return Ok(StreamOffset::Next);
    };
    let offset = match (value, text(value).as_deref()) {
        (AMQPValue::Timestamp(seconds), _) => Some(StreamOffset::Since(
            i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX),
        )),
        (_, Some("first")) => Some(StreamOffset::First),
        (_, Some("last")) => Some(StreamOffset::Last),
        (_, Some("next")) => Some(StreamOffset::Next),
        (_, Some(interval)) => age_ms(interval).map(StreamOffset::Within),
        (value, None) => integer(value).map(StreamOffset::At),
    };
    offset.ok_or_else(|| {
        AmqpError::precondition(format!(
            "invalid arg 'x-stream-offset' for consumer: expected first, last, next, an offset, \
             a timestamp or an interval ({value:?})"
        ))
    })
}

/// RabbitMQ's intervals (`x-max-age`, `x-stream-offset`): a positive integer and one unit of
/// Y (365 days), M (30 days), D, h, m, s; in ms.
pub fn age_ms(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let seconds: u64 = match unit {
        "Y" => 365 * 86_400,
        "M" => 30 * 86_400,
        "D" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return None,
    };
    let number: u64 = number.parse().ok().filter(|&n| n > 0)?;
    number.checked_mul(seconds * 1000)
}

/// What a queue type refuses before its arguments are read: a stream must be durable, neither
/// exclusive nor auto-delete, and takes none of the classic queues' arguments; other types
/// take no stream argument. RabbitMQ 3.10's texts.
fn check_type_fits(arguments: &FieldTable, flags: DeclareFlags) -> Result<(), AmqpError> {
    let stream = arguments
        .inner()
        .get("x-queue-type")
        .and_then(text)
        .is_some_and(|kind| kind == "stream");
    let refused = |property: &str| {
        Err(AmqpError::precondition(format!(
            "invalid property '{property}' for queue in vhost '/'"
        )))
    };
    if stream && !flags.durable {
        return refused("non-durable");
    }
    if stream && flags.exclusive {
        return refused("exclusive-owner");
    }
    if stream && flags.auto_delete {
        return refused("auto-delete");
    }
    let (others, kind) = if stream {
        (&NOT_FOR_STREAMS[..], "rabbit_stream_queue")
    } else {
        (&ONLY_FOR_STREAMS[..], "rabbit_classic_queue")
    };
    match arguments
        .inner()
        .keys()
        .find(|name| others.contains(&name.as_str()))
    {
        Some(name) => Err(AmqpError::precondition(format!(
            "invalid arg '{}' for queue in vhost '/' of queue type {kind}",
            name.as_str()
        ))),
        None => Ok(()),
    }
}

/// One declare argument checked; answers its value as text when the policy keeps it.
fn check_argument(
    name: &str,
    value: &AMQPValue,
    flags: DeclareFlags,
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
        "x-message-ttl"
        | "x-max-length"
        | "x-max-length-bytes"
        | "x-delivery-limit"
        | "x-stream-max-segment-size-bytes" => match integer(value) {
            Some(number) if number >= 0 => Ok(Some(number.to_string())),
            _ => invalid("expected a non-negative integer"),
        },
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
        "x-max-age" => match text(value).as_deref().and_then(age_ms) {
            Some(ms) => Ok(Some(ms.to_string())),
            None => invalid("expected a positive integer and a unit of Y, M, D, h, m or s"),
        },
        "x-queue-type" => check_queue_type(value, flags.durable, flags.exclusive),
        _ => Ok(None),
    }
}

/// `Some("quorum")` or `Some("stream")` (the policy keeps it), `None` for a classic queue
/// (a stream's flags are checked before, `check_type_fits`).
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
        Some("stream") => Ok(Some("stream".to_string())),
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

    const DURABLE: DeclareFlags = DeclareFlags {
        durable: true,
        exclusive: false,
        auto_delete: false,
    };

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
        let policy = QueuePolicy::from_arguments(&arguments, DURABLE).unwrap();
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
            let refused = QueuePolicy::from_arguments(&table(&[(name, value)]), DURABLE);
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

    #[test]
    fn intervals_are_a_positive_integer_and_one_unit() {
        for (text, ms) in [
            ("30s", Some(30_000)),
            ("1h", Some(3_600_000)),
            ("7D", Some(7 * 86_400_000)),
            ("2M", Some(60 * 86_400_000)),
            ("1Y", Some(365 * 86_400_000)),
            ("5m", Some(300_000)),
            ("0s", None),
            ("7X", None),
            ("h", None),
            ("", None),
            ("-1h", None),
            ("99999999999999999999Y", None),
        ] {
            assert_eq!(age_ms(text), ms, "{text}");
        }
    }

    #[test]
    fn stream_offsets_are_names_integers_timestamps_or_intervals() {
        let offset = |value: AMQPValue| {
            stream_offset(&table(&[("x-stream-offset", value)])).map_err(|error| error.code())
        };
        assert_eq!(stream_offset(&table(&[])), Ok(StreamOffset::Next));
        let text = |text: &str| AMQPValue::LongString(text.into());
        assert_eq!(offset(text("first")), Ok(StreamOffset::First));
        assert_eq!(offset(text("last")), Ok(StreamOffset::Last));
        assert_eq!(offset(AMQPValue::LongLongInt(7)), Ok(StreamOffset::At(7)));
        assert_eq!(
            offset(AMQPValue::Timestamp(2)),
            Ok(StreamOffset::Since(2000))
        );
        assert_eq!(offset(text("30s")), Ok(StreamOffset::Within(30_000)));
        assert_eq!(offset(text("soon")), Err(406));
        assert_eq!(offset(AMQPValue::Boolean(true)), Err(406));
    }

    #[test]
    fn a_stream_is_durable_and_takes_only_its_arguments() {
        let stream = |entries: &[(&str, AMQPValue)], flags: DeclareFlags| {
            let mut entries = entries.to_vec();
            entries.push(("x-queue-type", AMQPValue::LongString("stream".into())));
            QueuePolicy::from_arguments(&table(&entries), flags).map_err(|error| error.code())
        };
        let age = ("x-max-age", AMQPValue::LongString("1h".into()));
        let policy = stream(std::slice::from_ref(&age), DURABLE).unwrap();
        assert!(policy.stream && !policy.quorum);
        assert_eq!(policy.max_age_ms, Some(3_600_000));
        let mut configs = BTreeMap::new();
        policy.stream_log_configs(&mut configs);
        assert_eq!(configs["retention.ms"], "3600000");
        assert_eq!(configs["retention.bytes"], "-1");
        let transient = DeclareFlags::default();
        assert_eq!(stream(&[], transient), Err(406));
        let exclusive = DeclareFlags {
            exclusive: true,
            ..DURABLE
        };
        assert_eq!(stream(&[], exclusive), Err(406));
        let ttl = ("x-message-ttl", AMQPValue::LongInt(5));
        assert_eq!(stream(&[ttl], DURABLE), Err(406));
        let classic = QueuePolicy::from_arguments(&table(&[age]), DURABLE);
        assert_eq!(classic.map_err(|error| error.code()), Err(406));
    }
}
