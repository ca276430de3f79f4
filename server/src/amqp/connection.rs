//! One AMQP connection on the shard that accepted it: the protocol header, the handshake
//! (`handshake.rs`), then frames in arrival order, each method handled to its end before the next
//! (so a connection's publishes reach each queue in order), with content frames assembled per
//! channel.
//!
//! Tasks per connection, all on this shard, sharing the socket through `RefCell` halves that are
//! borrowed only inside one poll: the reader (this file's `serve`), the writer (`write_loop`,
//! which owns the only path to the socket's write side and sends heartbeats when idle), the
//! delivery task (`basic::deliveries`, which turns queue deliveries into frames) and one
//! confirm task per channel in confirm mode. Everything they write goes through one bounded
//! channel to the writer: a full one is backpressure on whoever writes.
//!
//! A silent peer (nothing received for two heartbeat intervals) is closed; bad input gets the
//! reply code RabbitMQ gives, as a channel or a connection close (`error.rs`).

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use amq_protocol::protocol::{channel, connection, AMQPClass};
use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::channel::Channel;
use super::error::{AmqpError, Scope};
use super::frame::{self, Frame, FRAME_END, HEARTBEAT};
use super::queue_owner::{ConnectionId, Outbound};
use crate::integer_hash::IntegerMap;
use crate::security::listener::SecurityProtocol;
use crate::security::stream::Stream;
use crate::security::{Principal, Session};
use crate::shard::listener::ConnectionError;
use crate::shard::signal::Signal;
use crate::shard::Shard;

/// The protocol header of AMQP 0-9-1, which a client sends first and a server answers a wrong
/// one with.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// Frames waiting for the writer, per connection.
const OUTBOX_FRAMES: usize = 1024;
/// Deliveries waiting for the connection's delivery task (from any shard's queues).
pub const INBOX_DELIVERIES: usize = 4096;
/// How long the broker waits for close-ok after a connection.close it sent.
const CLOSE_OK_WAIT: Duration = Duration::from_secs(1);
/// Writes coalesce up to this many bytes.
const COALESCE_BYTES_MAX: usize = 64 << 10;
/// Frame payloads are read into slices of a chunk this large (or the frame's size, if larger):
/// one allocation per chunk of frames rather than one per frame, which was a visible share of
/// the allocator's time on the publish path. Small, so that a body kept in a queue pins little
/// besides itself.
const PAYLOAD_CHUNK_BYTES: usize = 8 << 10;

thread_local! {
    static NEXT_CONNECTION: Cell<u64> = const { Cell::new(1) };
}

/// Why a connection ended (logged by the accept loop).
#[derive(Debug, thiserror::Error)]
pub enum AmqpConnectionError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("closed by the broker: {0}")]
    Refused(AmqpError),
    #[error("peer silent for {0:?} (two heartbeats)")]
    HeartbeatTimeout(Duration),
}

/// What every part of a connection shares. Lives on the connection's shard.
pub struct Conn {
    pub shard: Rc<Shard>,
    pub id: ConnectionId,
    pub frame_max: Cell<u32>,
    pub channel_max: Cell<u16>,
    pub heartbeat: Cell<u16>,
    out: flume::Sender<Bytes>,
    pub channels: RefCell<IntegerMap<u16, Rc<Channel>>>,
    /// Where this connection's consumers receive deliveries (handed to queues).
    pub sink: flume::Sender<Outbound>,
    /// Exclusive queues this connection declared: deleted when it closes.
    pub exclusive_queues: RefCell<Vec<String>>,
    /// Fired when the reader is done: the writer then drains its outbox and stops.
    pub closed: Rc<Signal>,
    /// What is left of the chunk frame payloads are read into (taken out while a read waits).
    payloads: Cell<BytesMut>,
    /// The client announced the `connection.blocked` capability (`alarm/`).
    pub wants_blocked: Cell<bool>,
    /// A basic.publish was read since the reader last looked (`alarm::hold_publisher`).
    pub published: Cell<bool>,
    /// Publishes read and not stored yet, stored together (`publish_run.rs`).
    pub run: RefCell<Option<super::publish_run::Run>>,
    /// Who the connection acts for: `User:ANONYMOUS` until start-ok names its user.
    pub session: Rc<Session>,
    /// The peer connected from a loopback address (RabbitMQ's `loopback_users` check).
    pub loopback: bool,
    /// The client's IP address, as ACLs name hosts.
    pub peer_host: String,
}

impl Conn {
    /// Queues bytes for the writer; an error once the writer has stopped (socket gone).
    pub async fn send(&self, bytes: Bytes) -> Result<(), AmqpConnectionError> {
        self.out.send_async(bytes).await.map_err(|_| {
            AmqpConnectionError::Io(io::Error::new(io::ErrorKind::BrokenPipe, "writer gone"))
        })
    }

    pub async fn send_method(
        &self,
        channel: u16,
        method: AMQPClass,
    ) -> Result<(), AmqpConnectionError> {
        let mut out = BytesMut::new();
        frame::put_method(&mut out, channel, method);
        self.send(out.freeze()).await
    }

    pub fn channel(&self, id: u16) -> Option<Rc<Channel>> {
        self.channels.borrow().get(&id).cloned()
    }
}

/// Serves one connection until it closes.
pub async fn serve(shard: Rc<Shard>, stream: Stream) -> Result<(), ConnectionError> {
    serve_connection(shard, stream).await.map_err(Into::into)
}

/// The listener's security protocol (AMQP has no SASL listeners: its start-ok authenticates on
/// every connection), whether the peer is on a loopback address, and its IP as ACLs name hosts.
fn peer_of(stream: &Stream) -> (SecurityProtocol, bool, String) {
    let protocol = match stream.is_tls() {
        true => SecurityProtocol::Ssl,
        false => SecurityProtocol::Plaintext,
    };
    let peer = stream.peer_addr().ok();
    let loopback = peer.is_some_and(|peer| peer.ip().is_loopback());
    let host = peer.map(|peer| peer.ip().to_string()).unwrap_or_default();
    (protocol, loopback, host)
}

async fn serve_connection(shard: Rc<Shard>, stream: Stream) -> Result<(), AmqpConnectionError> {
    let (protocol, loopback, peer_host) = peer_of(&stream);
    let stream = Rc::new(RefCell::new(stream));
    let mut reader = BufReader::with_capacity(64 << 10, ReadHalf(stream.clone()));
    let mut header = [0u8; 8];
    reader.read_exact(&mut header).await?;
    if &header != PROTOCOL_HEADER {
        let mut writer = WriteHalf(stream.clone());
        writer.write_all(PROTOCOL_HEADER).await?;
        writer.flush().await?;
        return Err(AmqpConnectionError::Refused(AmqpError::frame(format!(
            "wrong protocol header {header:?}"
        ))));
    }
    let (out, outbox) = flume::bounded(OUTBOX_FRAMES);
    let (sink, deliveries) = flume::bounded(INBOX_DELIVERIES);
    let id = NEXT_CONNECTION.with(|next| {
        let value = next.get();
        next.set(value + 1);
        ((shard.id.index() as u64) << 40) | value
    });
    let conn = Rc::new(Conn {
        shard,
        id,
        frame_max: Cell::new(frame::FRAME_MAX),
        channel_max: Cell::new(frame::CHANNEL_MAX),
        heartbeat: Cell::new(0),
        out,
        channels: RefCell::new(IntegerMap::default()),
        sink,
        exclusive_queues: RefCell::new(Vec::new()),
        closed: Rc::new(Signal::default()),
        payloads: Cell::new(BytesMut::new()),
        wants_blocked: Cell::new(false),
        published: Cell::new(false),
        run: RefCell::new(None),
        session: Rc::new(Session::new(Principal::anonymous(), protocol)),
        loopback,
        peer_host,
    });
    let writer = glommio::spawn_local(write_loop(
        WriteHalf(stream.clone()),
        outbox,
        conn.closed.clone(),
    ));
    // The delivery task ends when `closed` fires (the signal polled first, so that no delivery
    // is written after it), rather than by `Task::cancel`: glommio 0.9 never freed the memory of
    // a task cancelled that way (about 650 bytes a connection, found with heaptrack by the 1,000
    // idle connections test; glommio issue 636 reports the same of connection tasks).
    let delivering = glommio::spawn_local({
        let (conn, closed) = (conn.clone(), conn.closed.clone());
        async move {
            futures_lite::future::or(closed.wait(), super::basic::deliveries(conn, deliveries))
                .await;
        }
    });
    let result = run(&conn, &mut reader).await;
    super::channel::close_all(&conn).await;
    conn.closed.fire();
    delivering.await;
    // The writer writes what is queued (a close, say), then ends; a peer that does not read
    // cannot hold the connection open past the wait.
    let written = futures_lite::future::or(writer, async {
        glommio::timer::sleep(CLOSE_OK_WAIT).await;
        Ok(())
    })
    .await;
    result?;
    written
}

/// The handshake, then frames until the connection closes.
async fn run(conn: &Rc<Conn>, reader: &mut BufReader<ReadHalf>) -> Result<(), AmqpConnectionError> {
    super::handshake::handshake(conn, reader).await?;
    let heartbeat = conn.heartbeat.get();
    if heartbeat > 0 {
        spawn_heartbeats(conn, heartbeat);
    }
    loop {
        // A run of publishes gathers only what is read already: stored before any wait (the
        // socket's, or an alarm's hold, which must not keep publishes read before it).
        if !frame::is_buffered(reader.buffer()) || !super::alarm::current().is_empty() {
            super::publish_run::flush(conn).await;
        }
        super::alarm::hold_publisher(conn).await;
        let frame = futures_lite::future::or(read_frame(conn, reader), async {
            conn.shard.shutdown.wait().await;
            Ok(None)
        })
        .await?;
        let Some(frame) = frame else {
            if conn.shard.shutdown.is_fired() {
                let error = AmqpError {
                    scope: Scope::Connection,
                    code: super::error::CONNECTION_FORCED,
                    text: "broker shutdown".into(),
                    class_id: 0,
                    method_id: 0,
                };
                return close_connection(conn, reader, error).await;
            }
            return Ok(());
        };
        match handle_frame(conn, frame).await {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(HandleError::Amqp(error)) => return close_connection(conn, reader, error).await,
            Err(HandleError::Connection(error)) => return Err(error),
        }
    }
}

/// A handler's failure: an AMQP refusal (answered with a close) or a dead connection.
pub enum HandleError {
    Amqp(AmqpError),
    Connection(AmqpConnectionError),
}

impl From<AmqpError> for HandleError {
    fn from(error: AmqpError) -> HandleError {
        HandleError::Amqp(error)
    }
}

impl From<AmqpConnectionError> for HandleError {
    fn from(error: AmqpConnectionError) -> HandleError {
        HandleError::Connection(error)
    }
}

/// One frame; `Ok(false)` when the connection is done (close/close-ok exchanged).
async fn handle_frame(conn: &Rc<Conn>, frame: Frame) -> Result<bool, HandleError> {
    if !super::publish_run::continues(conn, &frame) {
        super::publish_run::flush(conn).await;
    }
    match frame {
        Frame::Heartbeat(0) => Ok(true),
        Frame::Heartbeat(_) => Err(AmqpError::frame("heartbeat on a channel other than 0").into()),
        Frame::Method(0, method_number, method) => {
            handle_connection_method(conn, method_number, *method).await
        }
        Frame::Method(id, method_number, method) => {
            super::channel::handle_method(conn, id, method_number, *method).await?;
            Ok(true)
        }
        Frame::Header(0, _) | Frame::Body(0, _) => {
            Err(AmqpError::command_invalid("content frame on channel 0").into())
        }
        Frame::Header(id, header) => {
            super::channel::handle_header(conn, id, header).await?;
            Ok(true)
        }
        Frame::Body(id, body) => {
            super::channel::handle_body(conn, id, body).await?;
            Ok(true)
        }
    }
}

async fn handle_connection_method(
    conn: &Rc<Conn>,
    method_number: u16,
    method: AMQPClass,
) -> Result<bool, HandleError> {
    match method {
        AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
            // As RabbitMQ: close-ok only once the channels are closed and the exclusive queues
            // deleted, so that a client that reconnects at once can declare them again (py-amqp's
            // suite reuses one exclusive queue name in every test).
            super::channel::close_all(conn).await;
            let ok = connection::AMQPMethod::CloseOk(connection::CloseOk {});
            conn.send_method(0, AMQPClass::Connection(ok)).await?;
            Ok(false)
        }
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => Ok(false),
        AMQPClass::Connection(connection::AMQPMethod::Blocked(_))
        | AMQPClass::Connection(connection::AMQPMethod::Unblocked(_)) => Ok(true),
        // RabbitMQ: a method of another class on channel 0 is a channel error (504).
        AMQPClass::Connection(_) => Err(AmqpError::command_invalid(format!(
            "unexpected method on channel 0: 10.{method_number}"
        ))
        .at(10, method_number)
        .into()),
        other => Err(AmqpError::channel_error(format!(
            "expected 'connection.*' on channel 0, got class {}",
            other.get_amqp_class_id()
        ))
        .at(other.get_amqp_class_id(), method_number)
        .into()),
    }
}

/// Sends connection.close with `error`, waits (briefly) for close-ok, and ends the connection.
async fn close_connection(
    conn: &Rc<Conn>,
    reader: &mut BufReader<ReadHalf>,
    error: AmqpError,
) -> Result<(), AmqpConnectionError> {
    // The connection is over whatever the peer answers: its channels and exclusive queues go
    // before the close is sent, so that a client that reconnects as soon as it reads the close
    // can declare its exclusive queues again (as it can with RabbitMQ, which is quick at this).
    super::channel::close_all(conn).await;
    let close = error.connection_close();
    conn.send_method(0, close).await?;
    // Whatever the peer sends now is discarded, up to its close-ok (or the wait's end).
    let _ = futures_lite::future::or(
        async {
            loop {
                match read_frame(conn, reader).await {
                    Ok(Some(Frame::Method(0, _, method))) if is_close(&method) => return,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return,
                }
            }
        },
        glommio::timer::sleep(CLOSE_OK_WAIT),
    )
    .await;
    Err(AmqpConnectionError::Refused(error))
}

fn is_close(method: &AMQPClass) -> bool {
    matches!(
        method,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))
            | AMQPClass::Connection(connection::AMQPMethod::Close(_))
    )
}

async fn drain(reader: &mut BufReader<ReadHalf>) {
    let mut discard = [0u8; 4096];
    while matches!(reader.read(&mut discard).await, Ok(read) if read > 0) {}
}

/// Reads one frame (`None` at a clean end of stream). The size is checked against the
/// negotiated frame-max before the payload is read; a malformed frame ends the connection (its
/// channels released, a close sent) and surfaces as `Refused`.
pub async fn read_frame(
    conn: &Rc<Conn>,
    reader: &mut BufReader<ReadHalf>,
) -> Result<Option<Frame>, AmqpConnectionError> {
    match read_frame_checked(conn, reader).await {
        Ok(frame) => Ok(frame),
        Err(HandleError::Connection(error)) => Err(error),
        Err(HandleError::Amqp(error)) => {
            super::channel::close_all(conn).await;
            let close = error.connection_close();
            // After a framing error the stream cannot be trusted: no close-ok is awaited, but
            // what the peer still sends is read and dropped (for a moment), because a socket
            // closed with unread data is reset, and the peer would lose our close with it.
            let _ = conn.send_method(0, close).await;
            futures_lite::future::or(drain(reader), glommio::timer::sleep(CLOSE_OK_WAIT)).await;
            Err(AmqpConnectionError::Refused(error))
        }
    }
}

async fn read_frame_checked(
    conn: &Conn,
    reader: &mut BufReader<ReadHalf>,
) -> Result<Option<Frame>, HandleError> {
    if let Some(frame) = take_buffered(conn, reader)? {
        return Ok(Some(frame));
    }
    let mut header = [0u8; 7];
    let heartbeat = conn.heartbeat.get();
    let read = reader.read_exact(&mut header);
    let read = if heartbeat > 0 {
        let silence = Duration::from_secs(u64::from(heartbeat) * 2);
        futures_lite::future::or(async { Some(read.await) }, async {
            glommio::timer::sleep(silence).await;
            None
        })
        .await
        .ok_or(AmqpConnectionError::HeartbeatTimeout(silence))?
    } else {
        read.await
    };
    match read {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(AmqpConnectionError::Io(error).into()),
    }
    let (kind, channel, size) = frame::parse_frame_header(&header);
    check_frame_size(conn, size)?;
    let mut payload = read_payload(conn, reader, size as usize + 1).await?;
    if payload.last() != Some(&FRAME_END) {
        return Err(AmqpError::frame("frame does not end with 0xCE").into());
    }
    payload.truncate(payload.len() - 1);
    Ok(Some(frame::decode(kind, channel, payload.freeze())?))
}

fn check_frame_size(conn: &Conn, size: u32) -> Result<(), AmqpError> {
    let frame_max = conn.frame_max.get();
    if u64::from(size) + frame::FRAME_OVERHEAD as u64 > u64::from(frame_max) {
        return Err(AmqpError::frame(format!(
            "frame size {size} larger than negotiated maximum {frame_max}"
        )));
    }
    Ok(())
}

/// A whole frame that is already in the read buffer, taken without a read future and with one
/// copy of its payload (into the connection's payload chunk, with no zero-fill first): a
/// pipelining publisher's frames nearly all arrive this way, three per message, and the two
/// `read_exact`s per frame of the general path were a visible share of the shard's time.
fn take_buffered(
    conn: &Conn,
    reader: &mut BufReader<ReadHalf>,
) -> Result<Option<Frame>, HandleError> {
    let buffered = reader.buffer();
    if !frame::is_buffered(buffered) {
        return Ok(None);
    }
    let (kind, channel, size) =
        frame::parse_frame_header(buffered.first_chunk().expect("buffered"));
    check_frame_size(conn, size)?;
    let end = 7 + size as usize;
    if buffered[end] != FRAME_END {
        return Err(AmqpError::frame("frame does not end with 0xCE").into());
    }
    let burst = buffered.len() > end + 1;
    let mut chunk = conn.payloads.take();
    if chunk.capacity() < size as usize {
        chunk = BytesMut::with_capacity(if burst {
            (size as usize).max(PAYLOAD_CHUNK_BYTES)
        } else {
            size as usize
        });
    }
    chunk.extend_from_slice(&buffered[7..end]);
    let payload = chunk.split_to(size as usize).freeze();
    if burst {
        conn.payloads.set(chunk);
    }
    futures_lite::io::AsyncBufRead::consume(Pin::new(reader), end + 1);
    Ok(Some(frame::decode(kind, channel, payload)?))
}

/// Reads `length` bytes into the front of the connection's payload chunk and splits them off.
async fn read_payload(
    conn: &Conn,
    reader: &mut BufReader<ReadHalf>,
    length: usize,
) -> Result<BytesMut, AmqpConnectionError> {
    // Only a burst (more bytes already read than this frame) keeps a chunk: a connection that
    // goes quiet after this frame holds none, which the 1,000 idle connections test bounds.
    let burst = reader.buffer().len() > length;
    let mut chunk = conn.payloads.take();
    if chunk.capacity() < length {
        let capacity = if burst {
            length.max(PAYLOAD_CHUNK_BYTES)
        } else {
            length
        };
        chunk = BytesMut::with_capacity(capacity);
    }
    chunk.resize(length, 0);
    let read = reader.read_exact(&mut chunk[..]).await;
    let payload = chunk.split_to(length);
    if burst {
        conn.payloads.set(chunk);
    }
    read?;
    Ok(payload)
}

/// Sends a heartbeat every half interval while the connection lives (RabbitMQ's rate).
fn spawn_heartbeats(conn: &Rc<Conn>, heartbeat: u16) {
    let out = conn.out.clone();
    let closed = conn.closed.clone();
    let every = Duration::from_millis(u64::from(heartbeat) * 500);
    glommio::spawn_local(async move {
        loop {
            futures_lite::future::or(glommio::timer::sleep(every), closed.wait()).await;
            if closed.is_fired() || out.try_send(Bytes::from_static(&HEARTBEAT)).is_err() {
                // A full outbox is traffic enough: the peer hears from us anyway.
                if closed.is_fired() {
                    return;
                }
            }
        }
    })
    .detach();
}

/// Writes queued frames in order, coalescing small ones, until the connection is closed and
/// what was queued before is written.
async fn write_loop(
    mut writer: WriteHalf,
    outbox: flume::Receiver<Bytes>,
    closed: Rc<Signal>,
) -> Result<(), AmqpConnectionError> {
    // Grows on demand: a busy connection's reaches COALESCE_BYTES_MAX and keeps it, an idle
    // one (most of a thousand connections) holds what its handshake needed. Allocated whole up
    // front, the 64 KiB of every short-lived connection fragmented the heap: each further round
    // of 1,000 idle connections left 5-19 MiB more resident (docs/benchmarks.md, "AMQP
    // connections and channels at scale").
    let mut staging = BytesMut::new();
    loop {
        let next = futures_lite::future::or(async { outbox.recv_async().await.ok() }, async {
            closed.wait().await;
            None
        })
        .await;
        match next {
            Some(first) => staging.extend_from_slice(&first),
            None if closed.is_fired() => {
                while let Ok(more) = outbox.try_recv() {
                    staging.extend_from_slice(&more);
                }
                writer.write_all(&staging).await?;
                writer.flush().await?;
                return Ok(());
            }
            None => return Ok(()),
        }
        while staging.len() < COALESCE_BYTES_MAX {
            match outbox.try_recv() {
                Ok(more) => staging.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        writer.write_all(&staging).await?;
        // A no-op on plain TCP; on TLS it sends what rustls still holds encrypted.
        writer.flush().await?;
        staging.clear();
    }
}

/// The read side of a socket shared with its writer on the same shard.
pub struct ReadHalf(Rc<RefCell<Stream>>);
/// The write side of a socket shared with its reader on the same shard.
struct WriteHalf(Rc<RefCell<Stream>>);

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut stream = self.0.borrow_mut();
        Pin::new(&mut *stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut stream = self.0.borrow_mut();
        Pin::new(&mut *stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut stream = self.0.borrow_mut();
        Pin::new(&mut *stream).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut stream = self.0.borrow_mut();
        Pin::new(&mut *stream).poll_close(cx)
    }
}

/// Used by `channel.rs` for channel.close-ok and friends.
pub fn channel_method(method: channel::AMQPMethod) -> AMQPClass {
    AMQPClass::Channel(method)
}
