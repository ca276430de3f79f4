//! One blocking AMQP 0-9-1 connection with a single channel (number 1): the handshake (PLAIN
//! login, tune, open), synchronous methods for setup and teardown (declare, purge, qos, consume,
//! confirm.select, close), and the buffered frame reader the workers keep using afterwards.
//!
//! A `Connection` is built on the main thread and then moved to the one worker thread that owns
//! it; a publisher splits off the read half (`FrameReader` + a cloned socket) for its confirm
//! reader. Nothing here is shared between threads.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use amq_protocol::frame::ProtocolVersion;
use amq_protocol::protocol::{basic, channel, confirm, connection, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use amq_protocol::uri::AMQPUri;
use anyhow::{bail, Context, Result};

use super::frames::{self, Frame, FRAME_MIN_SIZE};

/// The channel every benchmark connection uses.
pub const CHANNEL: u16 = 1;
/// frame_max this client asks for (RabbitMQ's default); the broker may lower it.
const FRAME_MAX_WANTED: u32 = 131_072;
/// How long setup and teardown methods may take before the run fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads whole frames from a socket through one reusable buffer.
#[derive(Debug)]
pub struct FrameReader {
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    frame_max: u32,
}

impl FrameReader {
    fn new() -> Self {
        FrameReader {
            buffer: vec![0; 256 << 10],
            start: 0,
            end: 0,
            // Until tune: the spec's minimum, which connection.start fits in.
            frame_max: FRAME_MIN_SIZE.max(64 << 10),
        }
    }

    /// The next frame; `Ok(None)` when the socket's read timeout passed with no whole frame.
    pub fn next(&mut self, stream: &mut TcpStream) -> Result<Option<Frame<'_>>> {
        let frame_len = loop {
            let buffered = &self.buffer[self.start..self.end];
            if let Some(len) = frames::complete_frame_len(buffered, self.frame_max)? {
                break len;
            }
            if !self.fill(stream)? {
                return Ok(None);
            }
        };
        let frame = &self.buffer[self.start..self.start + frame_len];
        self.start += frame_len;
        frames::decode(frame).map(Some)
    }

    /// Reads more bytes; false when the read timed out.
    fn fill(&mut self, stream: &mut TcpStream) -> Result<bool> {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // A frame is at most frame_max bytes: make room for a whole one.
        let wanted = (self.frame_max as usize).max(256 << 10);
        if self.buffer.len() < wanted {
            self.buffer.resize(wanted, 0);
        }
        match stream.read(&mut self.buffer[self.end..]) {
            Ok(0) => bail!("the broker closed the connection"),
            Ok(read) => {
                self.end += read;
                Ok(true)
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Ok(false)
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => Ok(true),
            Err(error) => Err(error).context("reading from the broker"),
        }
    }
}

/// What the broker said about itself in connection.start.
#[derive(Debug, Clone, Default)]
pub struct BrokerInfo {
    /// "product version" from the server properties, e.g. "RabbitMQ 3.10.8".
    pub product: String,
}

pub struct Connection {
    pub stream: TcpStream,
    pub reader: FrameReader,
    pub frame_max: u32,
    pub broker: BrokerInfo,
    out: Vec<u8>,
}

/// A readable rendering of a broker's close (channel.close or connection.close).
fn close_error(
    kind: &str,
    code: u16,
    text: &ShortString,
    class: u16,
    method: u16,
) -> anyhow::Error {
    anyhow::anyhow!(
        "the broker closed the {kind}: {code} {} (on method {class}.{method})",
        text.as_str()
    )
}

/// The error a worker reports for a method the benchmark does not expect; broker closes are
/// rendered with their reply code.
pub fn unexpected(method: &AMQPClass) -> anyhow::Error {
    match method {
        AMQPClass::Channel(channel::AMQPMethod::Close(close)) => close_error(
            "channel",
            close.reply_code,
            &close.reply_text,
            close.class_id,
            close.method_id,
        ),
        AMQPClass::Connection(connection::AMQPMethod::Close(close)) => close_error(
            "connection",
            close.reply_code,
            &close.reply_text,
            close.class_id,
            close.method_id,
        ),
        other => anyhow::anyhow!("unexpected method from the broker: {other:?}"),
    }
}

fn property_text(properties: &FieldTable, key: &str) -> String {
    match properties.inner().get(key) {
        Some(AMQPValue::LongString(text)) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        _ => String::new(),
    }
}

impl Connection {
    /// Connects, logs in with the URI's user and password (PLAIN), tunes and opens its vhost, and
    /// opens channel 1.
    pub fn open(uri: &AMQPUri) -> Result<Self> {
        let address = format!("{}:{}", uri.authority.host, uri.authority.port);
        let stream = TcpStream::connect(&address)
            .with_context(|| format!("connecting to the AMQP broker at {address}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(CALL_TIMEOUT))?;
        let mut connection = Connection {
            stream,
            reader: FrameReader::new(),
            frame_max: FRAME_MIN_SIZE,
            broker: BrokerInfo::default(),
            out: Vec::new(),
        };
        connection
            .handshake(uri)
            .with_context(|| format!("AMQP handshake with {address}"))?;
        connection.call(AMQPClass::Channel(channel::AMQPMethod::Open(
            channel::Open {},
        )))?;
        Ok(connection)
    }

    fn handshake(&mut self, uri: &AMQPUri) -> Result<()> {
        frames::encode(
            &amq_protocol::frame::AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()),
            &mut self.out,
        )?;
        self.flush()?;
        let start = match self.expect_method(0)? {
            AMQPClass::Connection(connection::AMQPMethod::Start(start)) => start,
            other => return Err(unexpected(&other)),
        };
        let mechanisms = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
        if !mechanisms.split(' ').any(|mechanism| mechanism == "PLAIN") {
            bail!("the broker offers no PLAIN login (mechanisms: {mechanisms})");
        }
        self.broker.product = format!(
            "{} {}",
            property_text(&start.server_properties, "product"),
            property_text(&start.server_properties, "version")
        );
        let user = &uri.authority.userinfo;
        let response: LongString = format!("\0{}\0{}", user.username, user.password).into();
        let mut client_properties = FieldTable::default();
        client_properties.insert("product".into(), AMQPValue::LongString("weir-bench".into()));
        self.send(AMQPClass::Connection(connection::AMQPMethod::StartOk(
            connection::StartOk {
                client_properties,
                mechanism: "PLAIN".into(),
                response,
                locale: "en_US".into(),
            },
        )))?;
        self.tune(uri)?;
        self.send(AMQPClass::Connection(connection::AMQPMethod::Open(
            connection::Open {
                virtual_host: frames::short_string(&uri.vhost, "vhost")?,
            },
        )))?;
        match self.expect_method(0)? {
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Answers connection.tune. Heartbeats are declined (0): a benchmark connection is never idle
    /// for long, and its worker threads block on sockets rather than run timers.
    fn tune(&mut self, uri: &AMQPUri) -> Result<()> {
        let tune = match self.expect_method(0)? {
            AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) => tune,
            AMQPClass::Connection(connection::AMQPMethod::Close(close))
                if close.reply_code == 403 =>
            {
                bail!("login refused: {}", close.reply_text.as_str())
            }
            other => return Err(unexpected(&other)),
        };
        let wanted = uri.query.frame_max.unwrap_or(FRAME_MAX_WANTED);
        // 0 from the broker means "no limit of its own".
        let frame_max = match tune.frame_max {
            0 => wanted,
            limit => wanted.min(limit),
        }
        .max(FRAME_MIN_SIZE);
        self.frame_max = frame_max;
        self.reader.frame_max = frame_max;
        self.send(AMQPClass::Connection(connection::AMQPMethod::TuneOk(
            connection::TuneOk {
                channel_max: tune.channel_max.max(1),
                frame_max,
                heartbeat: 0,
            },
        )))
    }

    /// Appends a method frame on channel 1 (or 0 for connection methods) to the output buffer.
    fn queue_method(&mut self, method: AMQPClass) -> Result<()> {
        let channel = if matches!(method, AMQPClass::Connection(_)) {
            0
        } else {
            CHANNEL
        };
        frames::encode_method(channel, method, &mut self.out)
    }

    /// Writes one method now.
    pub fn send(&mut self, method: AMQPClass) -> Result<()> {
        self.queue_method(method)?;
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        self.stream
            .write_all(&self.out)
            .context("writing to the broker")?;
        self.out.clear();
        Ok(())
    }

    /// The next method on `channel`, skipping heartbeats; a close from the broker is an error.
    fn expect_method(&mut self, on_channel: u16) -> Result<AMQPClass> {
        loop {
            match self.reader.next(&mut self.stream)? {
                None => bail!("the broker did not answer within {CALL_TIMEOUT:?}"),
                Some(Frame::Heartbeat) => {}
                Some(Frame::Method(channel, method)) if channel == on_channel => {
                    return Ok(*method)
                }
                Some(Frame::Method(_, method)) => return Err(unexpected(&method)),
                Some(other) => bail!("unexpected frame during setup: {other:?}"),
            }
        }
    }

    /// Sends a synchronous method and returns the broker's answer; a channel or connection close
    /// in its place is an error carrying the reply code.
    pub fn call(&mut self, method: AMQPClass) -> Result<AMQPClass> {
        let on_channel = if matches!(method, AMQPClass::Connection(_)) {
            0
        } else {
            CHANNEL
        };
        self.send(method)?;
        let answer = self.expect_method(on_channel)?;
        if matches!(
            answer,
            AMQPClass::Channel(channel::AMQPMethod::Close(_))
                | AMQPClass::Connection(connection::AMQPMethod::Close(_))
        ) {
            return Err(unexpected(&answer));
        }
        Ok(answer)
    }

    /// queue.declare; with `passive`, only asks whether the queue exists. Returns the ready count.
    pub fn declare_queue(&mut self, name: &str, durable: bool, passive: bool) -> Result<u32> {
        let answer = self.call(AMQPClass::Queue(queue::AMQPMethod::Declare(
            queue::Declare {
                queue: frames::short_string(name, "queue")?,
                passive,
                durable,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            },
        )))?;
        match answer {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => Ok(ok.message_count),
            other => Err(unexpected(&other)),
        }
    }

    /// queue.declare of every name, written at once and then answered in order (pipelined, as a
    /// client declaring many queues at start does); a refusal is an error naming the queue.
    pub fn declare_queues(&mut self, names: &[String], durable: bool, passive: bool) -> Result<()> {
        for name in names {
            self.queue_method(AMQPClass::Queue(queue::AMQPMethod::Declare(
                queue::Declare {
                    queue: frames::short_string(name, "queue")?,
                    passive,
                    durable,
                    exclusive: false,
                    auto_delete: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                },
            )))?;
        }
        self.flush()?;
        for name in names {
            match self.expect_method(CHANNEL)? {
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)) => {}
                other => return Err(unexpected(&other).context(format!("declaring {name}"))),
            }
        }
        Ok(())
    }

    /// queue.purge; returns how many ready messages it removed.
    pub fn purge_queue(&mut self, name: &str) -> Result<u32> {
        match self.call(AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
            queue: frames::short_string(name, "queue")?,
            nowait: false,
        })))? {
            AMQPClass::Queue(queue::AMQPMethod::PurgeOk(ok)) => Ok(ok.message_count),
            other => Err(unexpected(&other)),
        }
    }

    pub fn delete_queue(&mut self, name: &str) -> Result<()> {
        match self.call(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: frames::short_string(name, "queue")?,
            if_unused: false,
            if_empty: false,
            nowait: false,
        })))? {
            AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_)) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// confirm.select: every publish on the channel is then acked or nacked by the broker.
    pub fn select_confirms(&mut self) -> Result<()> {
        match self.call(AMQPClass::Confirm(confirm::AMQPMethod::Select(
            confirm::Select { nowait: false },
        )))? {
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// basic.qos with a per-consumer prefetch count.
    pub fn set_prefetch(&mut self, prefetch: u16) -> Result<()> {
        match self.call(AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: prefetch,
            global: false,
        })))? {
            AMQPClass::Basic(basic::AMQPMethod::QosOk(_)) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// basic.consume with manual acknowledgement.
    pub fn consume(&mut self, queue: &str, consumer_tag: &str) -> Result<()> {
        match self.call(AMQPClass::Basic(basic::AMQPMethod::Consume(
            basic::Consume {
                queue: frames::short_string(queue, "queue")?,
                consumer_tag: frames::short_string(consumer_tag, "consumer tag")?,
                no_local: false,
                no_ack: false,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            },
        )))? {
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// connection.close and its close-ok (the channel closes with the connection). Frames still
    /// arriving on the channel before the close-ok are dropped: the caller has counted what it
    /// needs.
    pub fn close(mut self) -> Result<()> {
        self.stream.set_read_timeout(Some(CALL_TIMEOUT))?;
        self.send(close_method())?;
        loop {
            match self.reader.next(&mut self.stream)? {
                None => bail!("the broker did not answer connection.close within {CALL_TIMEOUT:?}"),
                Some(Frame::Method(0, method)) => {
                    return match *method {
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => Ok(()),
                        other => Err(unexpected(&other)),
                    }
                }
                Some(_) => {}
            }
        }
    }
}

/// connection.close with reply code 200 (normal).
pub fn close_method() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: 200,
        reply_text: "weir-bench done".into(),
        class_id: 0,
        method_id: 0,
    }))
}
