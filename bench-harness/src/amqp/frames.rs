//! AMQP 0-9-1 framing for `weir-bench amqp`: serialising frames and splitting a byte stream into
//! frames, both through the `amq-protocol` crate (the codec the broker uses too), plus the publish
//! template that the publisher copies once per message.
//!
//! Pure: bytes in, values out, no I/O; any thread may use it. Frame sizes are checked on the
//! 7-byte frame header against the negotiated `frame_max` before anything is parsed, so a peer
//! cannot make the reader buffer more than one frame.

use amq_protocol::frame::{
    gen_frame, parsing::parse_content_header, parsing::parse_frame_type, parsing::parse_raw_frame,
    AMQPContentHeader, AMQPFrame, AMQPFrameType, WriteContext,
};
use amq_protocol::protocol::{basic, constants, parse_class, AMQPClass, BasicProperties};
use amq_protocol::types::ShortString;
use anyhow::{bail, ensure, Context, Result};

/// Frame header: type (1), channel (2), payload size (4); the frame ends with one 0xCE octet.
pub const FRAME_HEADER_BYTES: usize = 7;
pub const FRAME_END_BYTES: usize = 1;
/// The smallest frame_max a peer may ask for (AMQP 0-9-1, section 4.2.3: 4,096 octets).
pub const FRAME_MIN_SIZE: u32 = 4096;
/// Bytes of the body that carry the publisher's send time (clock ns, little endian).
pub const SEND_TIME_BYTES: usize = 8;

/// One frame read from the peer. A body borrows the reader's buffer (no copy per message).
#[derive(Debug)]
pub enum Frame<'a> {
    Method(u16, Box<AMQPClass>),
    Header(u16, Box<AMQPContentHeader>),
    Body(u16, &'a [u8]),
    Heartbeat,
}

/// Appends one frame, serialised by `amq-protocol`, to `out`.
pub fn encode(frame: &AMQPFrame, out: &mut Vec<u8>) -> Result<()> {
    let buffer = std::mem::take(out);
    let (buffer, _) = gen_frame(frame)(WriteContext::from(buffer))
        .map_err(|error| anyhow::anyhow!("serialising an AMQP frame: {error:?}"))?
        .into_inner();
    *out = buffer;
    Ok(())
}

/// Appends a method frame on `channel`.
pub fn encode_method(channel: u16, method: AMQPClass, out: &mut Vec<u8>) -> Result<()> {
    encode(&AMQPFrame::Method(channel, method), out)
}

/// The length of the first frame of `bytes` if all of it is there, `None` if more bytes are
/// needed. Refuses a frame larger than `frame_max` from its header alone.
pub fn complete_frame_len(bytes: &[u8], frame_max: u32) -> Result<Option<usize>> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let payload = u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]);
    let frame_bytes = u64::from(payload) + (FRAME_HEADER_BYTES + FRAME_END_BYTES) as u64;
    ensure!(
        frame_bytes <= u64::from(frame_max),
        "the broker sent a {frame_bytes}-byte frame (type {}), larger than frame_max {frame_max}",
        bytes[0]
    );
    let frame_bytes = frame_bytes as usize;
    Ok((bytes.len() >= frame_bytes).then_some(frame_bytes))
}

/// Decodes one complete frame (`bytes` is exactly the frame `complete_frame_len` measured).
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>> {
    let parse_error = |error| anyhow::anyhow!("malformed frame from the broker: {error:?}");
    let (rest, frame_type) = parse_frame_type(bytes).map_err(parse_error)?;
    let (rest, raw) = parse_raw_frame(frame_type)(rest).map_err(parse_error)?;
    ensure!(rest.is_empty(), "trailing bytes after a frame");
    let channel = raw.channel_id;
    Ok(match frame_type {
        AMQPFrameType::Method => {
            let (rest, method) = parse_class(raw.payload).map_err(parse_error)?;
            ensure!(rest.is_empty(), "trailing bytes after a method");
            Frame::Method(channel, Box::new(method))
        }
        AMQPFrameType::Header => {
            let (rest, header) = parse_content_header(raw.payload).map_err(parse_error)?;
            ensure!(rest.is_empty(), "trailing bytes after a content header");
            Frame::Header(channel, Box::new(header))
        }
        AMQPFrameType::Body => Frame::Body(channel, raw.payload),
        AMQPFrameType::Heartbeat => Frame::Heartbeat,
        AMQPFrameType::ProtocolHeader => bail!(
            "the broker answered with a protocol header: it does not speak AMQP 0-9-1 \
             ({bytes:?})"
        ),
    })
}

/// A `short string` (at most 255 bytes), with the name of what it is in the error.
pub fn short_string(text: &str, what: &str) -> Result<ShortString> {
    ShortString::try_new(text).with_context(|| format!("{what} {text:?} is longer than 255 bytes"))
}

/// The three frames of one message published to the default exchange with `routing_key`
/// (basic.publish, content header, one body frame), serialised once; each message is a copy of
/// them with its send time written into the body.
#[derive(Debug, Clone)]
pub struct PublishTemplate {
    bytes: Vec<u8>,
    send_time_at: usize,
}

impl PublishTemplate {
    /// `persistent` sets delivery-mode 2 (stored on disk by a durable queue), else 1.
    pub fn new(
        channel: u16,
        routing_key: &str,
        body_bytes: usize,
        persistent: bool,
        frame_max: u32,
    ) -> Result<Self> {
        ensure!(
            body_bytes >= SEND_TIME_BYTES,
            "message bodies need at least {SEND_TIME_BYTES} bytes (the send time)"
        );
        // One body frame per message keeps the template a single copy.
        let body_frame_bytes = body_bytes + FRAME_HEADER_BYTES + FRAME_END_BYTES;
        ensure!(
            body_frame_bytes <= frame_max as usize,
            "a {body_bytes}-byte body does not fit one frame (frame_max {frame_max})"
        );
        let publish = basic::Publish {
            exchange: ShortString::default(),
            routing_key: short_string(routing_key, "routing key")?,
            mandatory: false,
            immediate: false,
        };
        let properties =
            BasicProperties::default().with_delivery_mode(if persistent { 2 } else { 1 });
        let header = AMQPContentHeader {
            class_id: publish.get_amqp_class_id(),
            body_size: body_bytes as u64,
            properties,
        };
        let mut bytes = Vec::new();
        encode_method(
            channel,
            AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
            &mut bytes,
        )?;
        encode(&AMQPFrame::Header(channel, header), &mut bytes)?;
        let body_start = bytes.len() + FRAME_HEADER_BYTES;
        encode(&AMQPFrame::Body(channel, vec![0; body_bytes]), &mut bytes)?;
        assert_eq!(bytes.len(), body_start + body_bytes + FRAME_END_BYTES);
        assert_eq!(bytes[bytes.len() - 1], constants::FRAME_END);
        Ok(PublishTemplate {
            bytes,
            send_time_at: body_start,
        })
    }

    /// Appends one message stamped with `send_ns` to `out`.
    #[inline]
    pub fn append(&self, send_ns: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let at = start + self.send_time_at;
        out[at..at + SEND_TIME_BYTES].copy_from_slice(&send_ns.to_le_bytes());
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// The send time a publisher wrote at the start of a body (`None`: too short to hold one).
pub fn send_time(body: &[u8]) -> Option<u64> {
    let bytes: [u8; SEND_TIME_BYTES] = body.get(..SEND_TIME_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `bytes` into frames the way the connection reader does.
    fn frames(bytes: &[u8]) -> Vec<Frame<'_>> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(len) = complete_frame_len(&bytes[at..], 1 << 20).unwrap() {
            out.push(decode(&bytes[at..at + len]).unwrap());
            at += len;
        }
        assert_eq!(at, bytes.len(), "a partial frame left over");
        out
    }

    #[test]
    fn a_publish_template_is_three_frames_with_the_send_time_in_the_body() {
        let template = PublishTemplate::new(3, "orders", 100, true, 131_072).unwrap();
        let mut out = Vec::new();
        template.append(0x0102_0304_0506_0708, &mut out);
        template.append(42, &mut out);
        assert_eq!(out.len(), 2 * template.len());
        let parsed = frames(&out);
        assert_eq!(parsed.len(), 6);
        match &parsed[0] {
            Frame::Method(3, method) => match method.as_ref() {
                AMQPClass::Basic(basic::AMQPMethod::Publish(publish)) => {
                    assert_eq!(publish.routing_key.as_str(), "orders");
                    assert_eq!(publish.exchange.as_str(), "");
                }
                other => panic!("not a publish: {other:?}"),
            },
            other => panic!("not a method on channel 3: {other:?}"),
        }
        match &parsed[1] {
            Frame::Header(3, header) => {
                assert_eq!(header.body_size, 100);
                assert_eq!(header.properties.delivery_mode(), &Some(2));
            }
            other => panic!("not a header: {other:?}"),
        }
        match (&parsed[2], &parsed[5]) {
            (Frame::Body(3, first), Frame::Body(3, second)) => {
                assert_eq!(first.len(), 100);
                assert_eq!(send_time(first), Some(0x0102_0304_0506_0708));
                assert_eq!(send_time(second), Some(42));
            }
            other => panic!("not bodies: {other:?}"),
        }
    }

    #[test]
    fn transient_messages_are_delivery_mode_one() {
        let template = PublishTemplate::new(1, "q", 8, false, 4096).unwrap();
        let mut out = Vec::new();
        template.append(7, &mut out);
        match &frames(&out)[1] {
            Frame::Header(1, header) => assert_eq!(header.properties.delivery_mode(), &Some(1)),
            other => panic!("not a header: {other:?}"),
        }
    }

    #[test]
    fn partial_oversized_and_malformed_frames_are_told_apart() {
        let mut bytes = Vec::new();
        encode(&AMQPFrame::Heartbeat, &mut bytes).unwrap();
        assert_eq!(complete_frame_len(&bytes[..5], 4096).unwrap(), None);
        assert_eq!(complete_frame_len(&bytes[..7], 4096).unwrap(), None);
        assert_eq!(complete_frame_len(&bytes, 4096).unwrap(), Some(8));
        assert!(matches!(decode(&bytes).unwrap(), Frame::Heartbeat));
        // A header announcing 1 MiB is refused before its payload arrives.
        let huge = [1u8, 0, 1, 0, 0x10, 0, 0];
        assert!(complete_frame_len(&huge, 131_072).is_err());
        // A wrong frame-end octet is a parse error, not a panic.
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() = 0;
        assert!(decode(&bad).is_err());
        // An unknown class id inside a method frame.
        let unknown = [1u8, 0, 1, 0, 0, 0, 4, 0, 99, 0, 10, 0xCE];
        assert!(decode(&unknown).is_err());
        assert!(PublishTemplate::new(1, "q", 4, false, 4096).is_err());
        assert!(PublishTemplate::new(1, "q", 8192, false, 4096).is_err());
        assert!(short_string(&"x".repeat(256), "queue").is_err());
    }
}
