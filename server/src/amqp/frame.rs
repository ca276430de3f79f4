//! AMQP frames: the 7-byte frame header (type, channel, size), checked against the negotiated
//! `frame-max` before the payload is read; the payload decoded by `amq-protocol`; and the frames
//! the broker writes. Pure: bytes in, values out (no I/O), so it can be fuzzed.
//!
//! ```text
//!  0      1         3             7                  7+size   8+size
//!  | type | channel | size (u32)  | payload ...       | 0xCE |
//! ```
//! A content header's payload is `class (u16) | weight (u16) | body size (u64) | properties`;
//! the broker keeps the properties' bytes as they came (flags and fields) and writes them back
//! unchanged on delivery, so every property a client sets reaches the consumer bit for bit.

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, AMQPClass};
use bytes::{BufMut, Bytes, BytesMut};

use super::error::AmqpError;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Bytes of the frame header plus the frame-end octet: what a frame adds to its payload.
pub const FRAME_OVERHEAD: usize = 8;
/// The smallest frame-max a peer may ask for (the spec's `frame-min-size`).
pub const FRAME_MIN_SIZE: u32 = 4096;
/// What the broker offers in tune (RabbitMQ's default): a peer may ask for less, never more.
pub const FRAME_MAX: u32 = 131_072;
/// What the broker offers as channel-max (RabbitMQ's default); channels above are refused.
pub const CHANNEL_MAX: u16 = 2047;
/// Heartbeat interval the broker suggests, in seconds (RabbitMQ's default).
pub const HEARTBEAT_SECONDS: u16 = 60;
/// The largest message body accepted (RabbitMQ's `max_message_size` default, 128 MiB).
pub const BODY_BYTES_MAX: u64 = 128 << 20;

const CLASS_BASIC: u16 = 60;
const METHOD_DELIVER: u16 = 60;
/// Classes `amq-protocol` knows; a method of another class is "not implemented" (540).
const KNOWN_CLASSES: [u16; 8] = [10, 20, 30, 40, 50, 60, 85, 90];

/// One frame as the connection sees it.
#[derive(Debug)]
pub enum Frame {
    /// (channel, method id within its class, method)
    Method(u16, u16, Box<AMQPClass>),
    Header(u16, Box<ContentHeader>),
    Body(u16, Bytes),
    Heartbeat(u16),
}

/// A content header, with its properties decoded (for routing and delivery mode) and raw.
#[derive(Debug, Clone)]
pub struct ContentHeader {
    pub class_id: u16,
    pub body_size: u64,
    pub properties: basic::AMQPProperties,
    /// The property flags and fields exactly as the publisher sent them.
    pub raw_properties: Bytes,
}

/// Whether `buffered` (bytes read, not yet taken) starts with a whole frame: handling it will
/// not wait for the socket.
pub fn is_buffered(buffered: &[u8]) -> bool {
    let Some(header) = buffered.first_chunk::<7>() else {
        return false;
    };
    let (_, _, size) = parse_frame_header(header);
    // The 7-byte header, the payload and the frame-end octet.
    (buffered.len() as u64) >= u64::from(size) + FRAME_OVERHEAD as u64
}

/// The fixed 7-byte header: (type, channel, payload size).
pub fn parse_frame_header(bytes: &[u8; 7]) -> (u8, u16, u32) {
    let channel = u16::from_be_bytes([bytes[1], bytes[2]]);
    let size = u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]);
    (bytes[0], channel, size)
}

/// Decodes a frame's payload (the frame-end octet already checked).
pub fn decode(kind: u8, channel: u16, payload: Bytes) -> Result<Frame, AmqpError> {
    match kind {
        FRAME_METHOD => decode_method(channel, &payload),
        FRAME_HEADER => decode_header(channel, payload),
        FRAME_BODY => Ok(Frame::Body(channel, payload)),
        FRAME_HEARTBEAT => Ok(Frame::Heartbeat(channel)),
        other => Err(AmqpError::frame(format!("unknown frame type {other}"))),
    }
}

fn decode_method(channel: u16, payload: &[u8]) -> Result<Frame, AmqpError> {
    if payload.len() < 4 {
        return Err(AmqpError::frame("method frame shorter than 4 bytes"));
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    if let Some(publish) = parse_publish(payload) {
        let class = AMQPClass::Basic(basic::AMQPMethod::Publish(publish));
        return Ok(Frame::Method(channel, method_id, Box::new(class)));
    }
    match amq_protocol::protocol::parse_class(payload) {
        Ok(([], class)) => Ok(Frame::Method(channel, method_id, Box::new(class))),
        _ if !KNOWN_CLASSES.contains(&class_id) => Err(AmqpError::not_implemented(
            class_id,
            method_id,
            format!("unknown class {class_id}"),
        )),
        _ => Err(AmqpError::syntax(
            class_id,
            method_id,
            format!("malformed method {class_id}.{method_id}"),
        )),
    }
}

/// basic.publish, the method of every message, read by hand: amq-protocol's parser collects its
/// two bits into a map keyed by their names (two `String`s per publish), which was most of the
/// cost of parsing a publish. Anything it does not expect (another method, a short or long
/// frame, a name that is not UTF-8) is left to the crate's parser, whose errors stand.
fn parse_publish(payload: &[u8]) -> Option<basic::Publish> {
    const CLASS_BASIC_PUBLISH: [u8; 4] = [0, 60, 0, 40];
    let rest = payload.strip_prefix(&CLASS_BASIC_PUBLISH)?;
    let (_reserved, rest) = rest.split_at_checked(2)?;
    let (exchange, rest) = short_str(rest)?;
    let (routing_key, rest) = short_str(rest)?;
    let [bits] = rest else {
        return None;
    };
    Some(basic::Publish {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        mandatory: bits & 1 != 0,
        immediate: bits & 2 != 0,
    })
}

/// A short string (a length octet, then UTF-8) and what follows it.
fn short_str(input: &[u8]) -> Option<(&str, &[u8])> {
    let (&length, rest) = input.split_first()?;
    let (text, rest) = rest.split_at_checked(usize::from(length))?;
    Some((std::str::from_utf8(text).ok()?, rest))
}

fn decode_header(channel: u16, payload: Bytes) -> Result<Frame, AmqpError> {
    if payload.len() < 14 {
        return Err(AmqpError::frame("content header shorter than 14 bytes"));
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let mut size = [0u8; 8];
    size.copy_from_slice(&payload[4..12]);
    let body_size = u64::from_be_bytes(size);
    let raw_properties = payload.slice(12..);
    let properties = match basic::parse_properties(&raw_properties[..]) {
        Ok(([], properties)) => properties,
        _ => return Err(AmqpError::frame("malformed content header properties")),
    };
    Ok(Frame::Header(
        channel,
        Box::new(ContentHeader {
            class_id,
            body_size,
            properties,
            raw_properties,
        }),
    ))
}

/// Appends one method frame to `out`.
pub fn put_method(out: &mut BytesMut, channel: u16, method: AMQPClass) {
    let frame = AMQPFrame::Method(channel, method);
    let written = gen_frame(&frame)(WriteContext::from(Vec::with_capacity(64)));
    match written {
        Ok(context) => out.put_slice(&context.into_inner().0),
        // Only a too-long short string can fail here, and every string the broker writes is
        // checked or truncated before; a method that cannot be written is a bug, not input.
        Err(error) => panic!("serialising an AMQP method failed: {error:?}"),
    }
}

/// A basic.deliver's fields, borrowed: no string is built per delivery.
pub struct DeliverFields<'a> {
    pub consumer_tag: &'a str,
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: &'a str,
    pub routing_key: &'a str,
}

/// Appends a basic.deliver method frame, written directly rather than through `amq-protocol`'s
/// serialiser (which builds each frame in a `Vec` of its own): it is written once per message.
/// The same bytes as `put_method` (a test compares them). A name longer than a short string
/// cannot reach here (Kafka keys are cut by `message::short_string`); were one to, it would go
/// through `put_method`, which treats it as the bug it is.
pub fn put_deliver(out: &mut BytesMut, channel: u16, deliver: &DeliverFields<'_>) {
    let names = [deliver.consumer_tag, deliver.exchange, deliver.routing_key];
    if names.iter().any(|name| name.len() > usize::from(u8::MAX)) {
        let method = basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: deliver.consumer_tag.into(),
            delivery_tag: deliver.delivery_tag,
            redelivered: deliver.redelivered,
            exchange: deliver.exchange.into(),
            routing_key: deliver.routing_key.into(),
        });
        return put_method(out, channel, AMQPClass::Basic(method));
    }
    let size = 4 + 8 + 1 + names.iter().map(|name| 1 + name.len()).sum::<usize>();
    out.reserve(FRAME_OVERHEAD + size);
    out.put_u8(FRAME_METHOD);
    out.put_u16(channel);
    out.put_u32(size as u32);
    out.put_u16(CLASS_BASIC);
    out.put_u16(METHOD_DELIVER);
    put_short_string(out, names[0]);
    out.put_u64(deliver.delivery_tag);
    out.put_u8(u8::from(deliver.redelivered));
    put_short_string(out, names[1]);
    put_short_string(out, names[2]);
    out.put_u8(FRAME_END);
}

fn put_short_string(out: &mut BytesMut, text: &str) {
    out.put_u8(text.len() as u8);
    out.put_slice(text.as_bytes());
}

/// Appends a content header (with `raw_properties` as published) and the body, split into body
/// frames of at most `frame_max` bytes each.
pub fn put_content(
    out: &mut BytesMut,
    channel: u16,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    let header_size = 12 + raw_properties.len();
    out.reserve(FRAME_OVERHEAD * 2 + header_size + body.len());
    out.put_u8(FRAME_HEADER);
    out.put_u16(channel);
    out.put_u32(header_size as u32);
    out.put_u16(CLASS_BASIC);
    out.put_u16(0);
    out.put_u64(body.len() as u64);
    out.put_slice(raw_properties);
    out.put_u8(FRAME_END);
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for piece in body.chunks(chunk) {
        out.put_u8(FRAME_BODY);
        out.put_u16(channel);
        out.put_u32(piece.len() as u32);
        out.put_slice(piece);
        out.put_u8(FRAME_END);
    }
}

/// The heartbeat frame.
pub const HEARTBEAT: [u8; 8] = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END];

/// Encodes properties for messages the broker makes itself (none today but tests).
pub fn encode_properties(properties: &basic::AMQPProperties) -> Bytes {
    let written = basic::gen_properties(properties)(WriteContext::from(Vec::new()));
    match written {
        Ok(context) => Bytes::from(context.into_inner().0),
        Err(error) => panic!("serialising AMQP properties failed: {error:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::queue;

    fn frame_bytes(channel: u16, method: AMQPClass) -> BytesMut {
        let mut out = BytesMut::new();
        put_method(&mut out, channel, method);
        out
    }

    /// A run of publishes may only wait on bytes already read: `is_buffered` says whether the
    /// buffer starts with a whole frame (7-byte header, payload, frame end).
    #[test]
    fn a_frame_is_buffered_only_when_whole() {
        let heartbeat = [HEARTBEAT.as_slice(), &[1]].concat();
        let body = |size: u32| {
            let mut frame = vec![3, 0, 1];
            frame.extend_from_slice(&size.to_be_bytes());
            frame.extend(std::iter::repeat_n(b'x', size as usize));
            frame.push(FRAME_END);
            frame
        };
        let check = |bytes: &[u8], whole: bool| assert_eq!(is_buffered(bytes), whole, "{bytes:?}");
        check(&[], false);
        check(&HEARTBEAT[..6], false);
        check(&HEARTBEAT[..7], false);
        check(&HEARTBEAT, true);
        check(&heartbeat, true);
        check(&body(10), true);
        check(&body(10)[..17], false);
        check(&[body(10), body(3)[..4].to_vec()].concat(), true);
        check(&[3, 0, 1, 0xff, 0xff, 0xff, 0xff, 0], false);
    }

    #[test]
    fn methods_round_trip_through_the_header_and_decode() {
        let method = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "hello".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        }));
        let bytes = frame_bytes(3, method.clone());
        let mut header = [0u8; 7];
        header.copy_from_slice(&bytes[..7]);
        let (kind, channel, size) = parse_frame_header(&header);
        assert_eq!((kind, channel, size as usize), (1, 3, bytes.len() - 8));
        assert_eq!(bytes[bytes.len() - 1], FRAME_END);
        let payload = Bytes::copy_from_slice(&bytes[7..bytes.len() - 1]);
        match decode(kind, channel, payload).unwrap() {
            Frame::Method(3, 10, decoded) => assert_eq!(*decoded, method),
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        /// The hand-read basic.publish is the crate's, whatever the names and bits, and leaves
        /// whatever it does not take (a cut or padded frame, bytes that are not UTF-8) to the
        /// crate.
        #[test]
        fn publish_is_read_as_the_crate_reads_it(
            exchange in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            key in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            bits in proptest::num::u8::ANY,
            cut in 0usize..8,
            pad in proptest::bool::ANY,
            ascii in proptest::bool::ANY,
        ) {
            // Half the cases with ASCII names, which the fast path takes.
            let (mut exchange, mut key) = (exchange, key);
            if ascii {
                exchange.iter_mut().chain(key.iter_mut()).for_each(|b| *b &= 0x7f);
            }
            let mut payload = vec![0, 60, 0, 40, 0, 0];
            for name in [&exchange, &key] {
                payload.push(name.len() as u8);
                payload.extend_from_slice(name);
            }
            payload.push(bits);
            if pad {
                payload.push(0);
            }
            payload.truncate(payload.len() - cut.min(payload.len() - 4));
            let crate_reads = match amq_protocol::protocol::parse_class(&payload[..]) {
                Ok(([], AMQPClass::Basic(basic::AMQPMethod::Publish(p)))) => Some(p),
                _ => None,
            };
            let fast = parse_publish(&payload);
            if fast.is_some() {
                proptest::prop_assert_eq!(fast, crate_reads.clone());
            }
            let utf8 = std::str::from_utf8(&exchange).is_ok() && std::str::from_utf8(&key).is_ok();
            if crate_reads.is_some() && utf8 && cut == 0 && !pad {
                proptest::prop_assert!(parse_publish(&payload).is_some());
            }
        }
    }

    #[test]
    fn deliver_frames_are_the_bytes_amq_protocol_writes() {
        let long = "k".repeat(255);
        for (tag, exchange, key, redelivered) in [
            ("ctag", "", "queue", false),
            ("amq.ctag-1", "orders", "order.paid", true),
            ("", "x", long.as_str(), false),
        ] {
            let fields = DeliverFields {
                consumer_tag: tag,
                delivery_tag: 1 << 40 | 7,
                redelivered,
                exchange,
                routing_key: key,
            };
            let mut direct = BytesMut::new();
            put_deliver(&mut direct, 9, &fields);
            let deliver = basic::Deliver {
                consumer_tag: tag.into(),
                delivery_tag: fields.delivery_tag,
                redelivered,
                exchange: exchange.into(),
                routing_key: key.into(),
            };
            let method = AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver));
            assert_eq!(direct, frame_bytes(9, method), "{tag} {exchange} {key}");
        }
    }

    #[test]
    fn bad_payloads_get_their_reply_codes() {
        let code = |kind, payload: &[u8]| {
            decode(kind, 1, Bytes::copy_from_slice(payload))
                .unwrap_err()
                .code()
        };
        assert_eq!(code(9, &[]), 501);
        assert_eq!(code(FRAME_METHOD, &[0, 50]), 501);
        assert_eq!(code(FRAME_METHOD, &[0, 50, 0, 10, 0]), 502);
        assert_eq!(code(FRAME_METHOD, &[0, 77, 0, 10]), 540);
        assert_eq!(code(FRAME_HEADER, &[0, 60, 0, 0]), 501);
    }

    proptest::proptest! {
        /// Hostile payloads decode to a frame or a reply code, never a panic: any bytes, and
        /// bytes behind every known class id (so the method parsers see them too).
        #[test]
        fn any_payload_decodes_or_is_refused(
            kind in 0u8..10,
            class in proptest::sample::select(vec![10u16, 20, 40, 50, 60, 85, 90, 7]),
            method in 0u16..120,
            rest in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let _ = decode(kind, 1, Bytes::from(rest.clone()));
            let mut payload = Vec::with_capacity(rest.len() + 4);
            payload.extend_from_slice(&class.to_be_bytes());
            payload.extend_from_slice(&method.to_be_bytes());
            payload.extend_from_slice(&rest);
            let _ = decode(FRAME_METHOD, 1, Bytes::from(payload.clone()));
            let _ = decode(FRAME_HEADER, 1, Bytes::from(payload));
        }
    }

    #[test]
    fn content_is_split_at_frame_max_and_keeps_raw_properties() {
        let properties = basic::AMQPProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let raw = encode_properties(&properties);
        let mut out = BytesMut::new();
        put_content(&mut out, 1, &raw, &[7u8; 10_000], 4096);
        let header_len = 8 + 12 + raw.len();
        let payload = Bytes::copy_from_slice(&out[7..header_len - 1]);
        match decode(FRAME_HEADER, 1, payload).unwrap() {
            Frame::Header(1, header) => {
                assert_eq!(header.body_size, 10_000);
                assert_eq!(header.properties, properties);
                assert_eq!(header.raw_properties, raw);
            }
            other => panic!("{other:?}"),
        }
        // 10,000 bytes in frames of at most 4096 - 8: three body frames.
        assert_eq!(out.len() - header_len, 10_000 + 3 * FRAME_OVERHEAD);
    }
}
