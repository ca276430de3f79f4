//! An AMQP message and its record layout in a queue's log (RecordBatch v2, one record per
//! published message; a run of publishes to one queue shares a batch), so that a Kafka consumer can read a queue as a topic of the same name.
//!
//! | record field | holds                                                                 |
//! |--------------|-----------------------------------------------------------------------|
//! | key          | the routing key the message was published with (bytes of the string) |
//! | value        | the body, unchanged                                                   |
//! | timestamp    | the broker's clock when it was stored (ms)                            |
//! | header `amqp.exchange`   | the exchange it was published to (`""` = the default exchange) |
//! | header `amqp.properties` | the content header's property flags and fields, as published (AMQP 0-9-1 `basic` properties encoding) |
//!
//! Pure data and codecs; no I/O. `Send`: messages cross shards inside `Arc`s.

use std::borrow::Borrow;

use amq_protocol::protocol::basic;
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use weir_engine::batch::{build_batch, BatchSpec, RecordSpec};

use super::error::AmqpError;

pub const HEADER_EXCHANGE: &str = "amqp.exchange";
pub const HEADER_PROPERTIES: &str = "amqp.properties";

/// One published message, as stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    pub raw_properties: Bytes,
    pub body: Bytes,
    /// When it was stored (the record's timestamp): TTLs count from here.
    pub stored_ms: i64,
    /// Its own TTL (the `expiration` property), already checked.
    pub expiration_ms: Option<u64>,
    /// delivery-mode 2: stored on the device in a durable queue.
    pub persistent: bool,
}

impl Message {
    /// Bytes the message holds in memory (for accounting).
    pub fn bytes(&self) -> usize {
        self.exchange.len() + self.routing_key.len() + self.raw_properties.len() + self.body.len()
    }

    /// The message as a one-record batch, ready for `Log::append`.
    pub fn to_batch(&self) -> BytesMut {
        to_batch(std::slice::from_ref(self))
    }

    /// Appends this message's Kafka record headers to `headers`: the layout's two, then its own
    /// AMQP headers.
    fn push_record_headers<'a>(
        &'a self,
        own: &'a [(String, Vec<u8>)],
        headers: &mut Vec<(&'a str, &'a [u8])>,
    ) {
        headers.push((HEADER_EXCHANGE, self.exchange.as_bytes()));
        headers.push((HEADER_PROPERTIES, &self.raw_properties));
        headers.extend(
            own.iter()
                .map(|(name, value)| (name.as_str(), value.as_slice())),
        );
    }
}

/// `messages` as one batch, a record each in order (offset delta = index), ready for
/// `Log::append`: a run of publishes to one queue is stored in one append (`publish_run.rs`).
/// Each record keeps its own timestamp as a delta from the first. Panics when empty.
pub fn to_batch<M: std::borrow::Borrow<Message>>(messages: &[M]) -> BytesMut {
    let messages: Vec<&Message> = messages.iter().map(Borrow::borrow).collect();
    let own: Vec<Vec<(String, Vec<u8>)>> = messages
        .iter()
        .map(|message| kafka_headers(&message.raw_properties))
        .collect();
    // Every record's headers in one Vec, sliced per record: one allocation per batch rather
    // than one per message.
    let own_count: usize = own.iter().map(Vec::len).sum();
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(2 * messages.len() + own_count);
    let mut ends = Vec::with_capacity(messages.len());
    for (message, own) in messages.iter().zip(&own) {
        message.push_record_headers(own, &mut headers);
        ends.push(headers.len());
    }
    let starts = std::iter::once(0).chain(ends.iter().copied());
    let first_ms = messages.first().map_or(0, |message| message.stored_ms);
    let records: Vec<RecordSpec<'_>> = messages
        .iter()
        .zip(starts.zip(&ends))
        .map(|(message, (start, &end))| RecordSpec {
            key: Some(message.routing_key.as_bytes()),
            value: Some(&message.body),
            headers: &headers[start..end],
            timestamp_delta_ms: message.stored_ms - first_ms,
        })
        .collect();
    let spec = BatchSpec {
        first_timestamp_ms: first_ms,
        ..BatchSpec::default()
    };
    build_batch(&spec, &records)
}

/// The AMQP `headers` table as Kafka record headers, for Kafka consumers of a queue's topic or
/// of a topic an AMQP publish was routed to: one header per entry, in the table's order; text as
/// its UTF-8 bytes, numbers, booleans and timestamps as their decimal text (`42`, `true`,
/// `1.5`), a void as an empty value. Tables, arrays and byte arrays are left out (no text form),
/// and so are names starting `amqp.` (this layout's own). Decoding ignores these headers when
/// `amqp.properties` is present, so an AMQP reader gets the original types back.
fn kafka_headers(raw_properties: &[u8]) -> Vec<(String, Vec<u8>)> {
    // The property flags' bit 13 is `headers`: most messages have none, and skip the parse.
    const HEADERS_FLAG: u8 = 0x20;
    if raw_properties
        .first()
        .is_none_or(|flags| flags & HEADERS_FLAG == 0)
    {
        return Vec::new();
    }
    let Some(table) = stored_properties(raw_properties).headers().clone() else {
        return Vec::new();
    };
    table
        .inner()
        .iter()
        .filter(|(name, _)| !name.as_str().starts_with("amqp."))
        .filter_map(|(name, value)| Some((name.as_str().to_string(), header_text(value)?)))
        .collect()
}

fn header_text(value: &AMQPValue) -> Option<Vec<u8>> {
    let text = match value {
        AMQPValue::LongString(text) => return Some(text.as_bytes().to_vec()),
        AMQPValue::ShortString(text) => text.as_str().to_string(),
        AMQPValue::Boolean(flag) => flag.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::DecimalValue(n) => format!("{}e-{}", n.value, n.scale),
        AMQPValue::Void => String::new(),
        _ => return None,
    };
    Some(text.into_bytes())
}

/// The broker's clock in ms since the epoch (record timestamps, TTLs).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// The `expiration` property as RabbitMQ reads it: a string of a non-negative integer of
/// milliseconds (406 otherwise).
pub fn expiration(properties: &basic::AMQPProperties) -> Result<Option<u64>, AmqpError> {
    let Some(text) = properties.expiration() else {
        return Ok(None);
    };
    match text.as_str().parse::<u64>() {
        Ok(ms) => Ok(Some(ms)),
        Err(_) => Err(AmqpError::precondition(format!(
            "invalid expiration '{}' for message",
            text.as_str()
        ))),
    }
}

/// delivery-mode 2.
pub fn is_persistent(properties: &basic::AMQPProperties) -> bool {
    *properties.delivery_mode() == Some(2)
}

/// The messages in `batches` (whole RecordBatch v2 batches as the log serves them), with their
/// offsets. A record without the AMQP headers (produced by a Kafka client straight to the queue's
/// topic) becomes a message with no properties, published to the default exchange.
pub fn decode_batches(batches: &[u8]) -> Result<Vec<(i64, Message)>, String> {
    let mut bytes = Bytes::copy_from_slice(batches);
    let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes)
        .map_err(|error| format!("{error:#}"))?;
    let mut messages = Vec::new();
    for set in sets {
        for record in set.records {
            if record.control {
                continue;
            }
            let header = |name: &str| {
                record
                    .headers
                    .iter()
                    .find(|(key, _)| key.as_str() == name)
                    .and_then(|(_, value)| value.clone())
            };
            let exchange = header(HEADER_EXCHANGE).unwrap_or_default();
            let raw_properties = header(HEADER_PROPERTIES)
                .unwrap_or_else(|| properties_of_kafka_headers(&record.headers));
            let properties = stored_properties(&raw_properties);
            let message = Message {
                exchange: short_string(&exchange),
                routing_key: short_string(record.key.as_deref().unwrap_or_default()),
                raw_properties,
                body: record.value.clone().unwrap_or_default(),
                stored_ms: record.timestamp,
                // Checked when it was published; a record from elsewhere with a bad one has none.
                expiration_ms: expiration(&properties).ok().flatten(),
                persistent: is_persistent(&properties),
            };
            messages.push((record.offset, message));
        }
    }
    Ok(messages)
}

/// `bytes` as an AMQP short string: text (invalid UTF-8 replaced) of at most 255 bytes, cut
/// after the last whole character that fits. A Kafka record's key (the routing key of its
/// delivery) can be longer, and a basic.deliver cannot carry more.
fn short_string(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    let mut end = text.len().min(usize::from(u8::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// Stored properties, parsed; none when they cannot be read (they were checked when published,
/// and a record from elsewhere may carry anything).
pub fn stored_properties(raw_properties: &[u8]) -> basic::AMQPProperties {
    match basic::parse_properties(raw_properties) {
        Ok((_, properties)) => properties,
        Err(_) => basic::AMQPProperties::default(),
    }
}

impl Message {
    /// The message's properties, as `stored_properties` reads them.
    pub fn properties(&self) -> basic::AMQPProperties {
        stored_properties(&self.raw_properties)
    }

    /// This message as a quorum queue delivers it: with an `x-delivery-count` header (a long) of
    /// `returns`, the times it went back to the queue before, as RabbitMQ adds it (0 on the
    /// first delivery). Any other property stays as published.
    pub fn with_delivery_count(&self, returns: u16) -> Message {
        self.with_header("x-delivery-count", AMQPValue::LongInt(i32::from(returns)))
    }

    /// This message with header `name` set to `value` (its properties re-encoded; every other
    /// property as published).
    pub fn with_header(&self, name: &str, value: AMQPValue) -> Message {
        let mut properties = self.properties();
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(ShortString::from(name), value);
        properties = properties.with_headers(headers);
        Message {
            raw_properties: super::frame::encode_properties(&properties),
            ..self.clone()
        }
    }
}

/// The AMQP properties of a record a Kafka client produced: its headers become AMQP headers
/// (each value a long string of the same bytes, a null value a void; the `amqp.*` names are
/// this layout's own and stay out), nothing else is set.
fn properties_of_kafka_headers(headers: &IndexMap<StrBytes, Option<Bytes>>) -> Bytes {
    let mut table = FieldTable::default();
    for (name, value) in headers
        .iter()
        .filter(|(name, _)| !name.starts_with("amqp."))
    {
        let value = match value {
            Some(bytes) => AMQPValue::LongString(LongString::from(bytes.to_vec())),
            None => AMQPValue::Void,
        };
        table.insert(ShortString::from(name.as_str()), value);
    }
    if table.inner().is_empty() {
        return Bytes::from_static(&[0, 0]);
    }
    let properties = basic::AMQPProperties::default().with_headers(table);
    super::frame::encode_properties(&properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_count_joins_the_headers_and_keeps_the_rest() {
        let mut headers = FieldTable::default();
        headers.insert("tenant".into(), AMQPValue::LongString("acme".into()));
        let properties = basic::AMQPProperties::default()
            .with_content_type("text/plain".into())
            .with_headers(headers);
        let message = Message {
            exchange: String::new(),
            routing_key: "q".into(),
            raw_properties: super::super::frame::encode_properties(&properties),
            body: Bytes::from_static(b"x"),
            stored_ms: 0,
            expiration_ms: None,
            persistent: true,
        };
        let counted = message.with_delivery_count(2);
        let (_, got) = basic::parse_properties(&counted.raw_properties[..]).unwrap();
        assert_eq!(
            got.content_type().as_ref().map(|t| t.as_str()),
            Some("text/plain")
        );
        let headers = got.headers().clone().unwrap();
        assert_eq!(
            headers.inner().get("x-delivery-count"),
            Some(&AMQPValue::LongInt(2))
        );
        assert_eq!(
            headers.inner().get("tenant"),
            Some(&AMQPValue::LongString("acme".into()))
        );
        assert_eq!(counted.body, message.body);
    }

    #[test]
    fn keys_longer_than_a_short_string_are_cut_at_a_character() {
        assert_eq!(short_string(b"order.paid"), "order.paid");
        assert_eq!(short_string(&[b'k'; 300]), "k".repeat(255));
        // 'é' is two bytes: 127 of them fit in 255, the 128th would end at byte 256.
        assert_eq!(short_string("é".repeat(200).as_bytes()), "é".repeat(127));
        assert_eq!(short_string(&[0xff, b'a']), "\u{fffd}a");
    }

    #[test]
    fn a_message_survives_its_record_layout() {
        let message = Message {
            exchange: "my_exchange".into(),
            routing_key: "process_queue".into(),
            raw_properties: Bytes::from_static(&[0x80, 0, 4, b'j', b's', b'o', b'n']),
            body: Bytes::from_static(b"{\"user_id\": 123}"),
            stored_ms: 1_700_000_000_000,
            expiration_ms: None,
            persistent: false,
        };
        let mut batch = message.to_batch();
        weir_engine::batch::set_base_offset(&mut batch, 41);
        weir_engine::batch::validate(&batch).unwrap();
        assert_eq!(decode_batches(&batch).unwrap(), vec![(41, message)]);
    }

    #[test]
    fn a_kafka_records_headers_become_amqp_headers() {
        let headers: [(&str, &[u8]); 3] = [
            ("trace-id", b"abc"),
            ("raw", &[0xff, 0]),
            (HEADER_EXCHANGE, b"orders"),
        ];
        let record = RecordSpec {
            key: Some(b"order.paid"),
            value: Some(b"body"),
            headers: &headers,
            timestamp_delta_ms: 0,
        };
        let batch = build_batch(&BatchSpec::default(), &[record]);
        let (_, message) = decode_batches(&batch).unwrap().remove(0);
        let (_, properties) = basic::parse_properties(&message.raw_properties[..]).unwrap();
        let table = properties.headers().clone().unwrap();
        let long = |bytes: &[u8]| AMQPValue::LongString(LongString::from(bytes.to_vec()));
        assert_eq!(table.inner().len(), 2, "{table:?}");
        assert_eq!(table.inner().get("trace-id"), Some(&long(b"abc")));
        assert_eq!(table.inner().get("raw"), Some(&long(&[0xff, 0])));
        assert_eq!(message.exchange, "orders");
    }

    #[test]
    fn amqp_headers_become_kafka_headers_and_come_back_typed() {
        let mut table = FieldTable::default();
        table.insert("tenant".into(), AMQPValue::LongString("acme".into()));
        table.insert("size".into(), AMQPValue::LongInt(42));
        table.insert("urgent".into(), AMQPValue::Boolean(true));
        table.insert("gone".into(), AMQPValue::Void);
        table.insert(
            "nested".into(),
            AMQPValue::FieldTable(FieldTable::default()),
        );
        table.insert(
            "amqp.exchange".into(),
            AMQPValue::LongString("spoof".into()),
        );
        let properties = basic::AMQPProperties::default().with_headers(table);
        let message = Message {
            exchange: "orders".into(),
            routing_key: "k".into(),
            raw_properties: super::super::frame::encode_properties(&properties),
            body: Bytes::from_static(b"x"),
            stored_ms: 0,
            expiration_ms: None,
            persistent: false,
        };
        let batch = message.to_batch();
        let mut bytes = Bytes::copy_from_slice(&batch);
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes).unwrap();
        let record = &sets[0].records[0];
        let header = |name: &str| {
            let found = record.headers.iter().find(|(key, _)| key.as_str() == name);
            found.and_then(|(_, value)| value.clone())
        };
        assert_eq!(header("tenant").as_deref(), Some(&b"acme"[..]));
        assert_eq!(header("size").as_deref(), Some(&b"42"[..]));
        assert_eq!(header("urgent").as_deref(), Some(&b"true"[..]));
        assert_eq!(header("gone").as_deref(), Some(&b""[..]));
        assert_eq!(header("nested"), None);
        assert_eq!(header(HEADER_EXCHANGE).as_deref(), Some(&b"orders"[..]));
        assert_eq!(record.headers.len(), 6, "{:?}", record.headers);
        // Back to AMQP through `amqp.properties`: the types are the published ones.
        assert_eq!(decode_batches(&batch).unwrap()[0].1, message);
    }

    #[test]
    fn a_kafka_record_without_headers_has_no_properties() {
        let record = RecordSpec {
            key: None,
            value: Some(b"body"),
            headers: &[],
            timestamp_delta_ms: 0,
        };
        let batch = build_batch(&BatchSpec::default(), &[record]);
        let (_, message) = decode_batches(&batch).unwrap().remove(0);
        assert_eq!(&message.raw_properties[..], &[0, 0]);
    }

    proptest::proptest! {
        /// A run stored as one batch reads back as the same messages, in order, each at its own
        /// offset (base + index), with its own key, properties, body and timestamp.
        #[test]
        fn a_run_as_one_batch_reads_back_message_by_message(
            run in proptest::collection::vec(
                ("[a-z.]{0,12}", "[a-z]{0,6}", proptest::collection::vec(0u8.., 0..64),
                 proptest::bool::ANY, 0i64..5),
                1..40,
            ),
            base in 0i64..1_000_000,
        ) {
            let start_ms = 1_700_000_000_000;
            let messages: Vec<Message> = run
                .into_iter()
                .enumerate()
                .map(|(index, (key, exchange, body, persistent, later_ms))| Message {
                    exchange,
                    routing_key: key,
                    raw_properties: Bytes::from(vec![0x10, 0, if persistent { 2 } else { 1 }]),
                    body: Bytes::from(body),
                    stored_ms: start_ms + index as i64 + later_ms,
                    expiration_ms: None,
                    persistent,
                })
                .collect();
            let mut batch = to_batch(&messages);
            weir_engine::batch::set_base_offset(&mut batch, base);
            weir_engine::batch::validate(&batch).unwrap();
            let expected: Vec<(i64, Message)> =
                (base..).zip(messages.iter().cloned()).collect();
            proptest::prop_assert_eq!(decode_batches(&batch).unwrap(), expected);
        }
    }
}
