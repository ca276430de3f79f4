//! Kafka's listeners (given to the shard runtime by the composition root) and one client
//! connection on the shard that accepted it: read frames ahead (pipelining), dispatch
//! each in arrival order, write answers in the same order.
//!
//! Two tasks per connection share the socket through `RefCell` halves (borrowed only inside one
//! poll, never across an await): the reader parses and dispatches, the writer awaits each
//! request's completion in order and writes it. What the pair may hold is bounded by the
//! connection's `Budget` (`weir.connection.max.inflight.requests` requests read ahead,
//! `weir.connection.max.buffer.bytes` bytes of frames and answers): past it the reader stops
//! reading the socket until answers are written (backpressure).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use glommio::channels::local_channel;
use std::sync::Arc;

use super::codec::{Piece, Response};
use super::connection_budget::{Budget, Ticket};
use super::dispatch::{dispatch, Peer, Pending};
use crate::config::BrokerConfig;
use crate::metrics::RequestStamp;
use crate::security::listener::SecurityProtocol;
use crate::security::stream::Stream;
use crate::security::tls::TlsListener;
use crate::security::{Principal, Session};
use crate::shard::listener::{self, Listener};
use crate::shard::{Shard, ShardId};

/// Pieces smaller than this are copied into one staging buffer to save system calls; larger
/// ones (log chunks) go to the socket as they are.
const COALESCE_BYTES_MAX: usize = 32 << 10;

/// Kafka's listeners on shard `shard`, for each of `config.listeners`: the bootstrap port every
/// shard shares (SO_REUSEPORT) and the shard's own broker port (bootstrap port + 1 + shard),
/// which Metadata advertises to the clients of that listener. `tls`: the broker's TLS
/// configuration, present when a listener needs it.
pub fn listeners(
    config: &BrokerConfig,
    shard: ShardId,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Vec<Listener> {
    let mut out = Vec::new();
    for (index, kafka) in config.listeners.iter().enumerate() {
        let tls = kafka.protocol.tls().then(|| {
            let server = tls.expect("lib.rs builds the TLS configuration for a TLS listener");
            TlsListener::new(server.clone(), config.tls.handshake_timeout)
        });
        let mut broker = kafka.address;
        broker.set_port(kafka.address.port() + 1 + shard.index() as u16);
        for (bootstrap, address) in [(true, kafka.address), (false, broker)] {
            let port = Port {
                listener: index,
                protocol: kafka.protocol,
                bootstrap,
            };
            out.push(Listener {
                name: port.name(),
                address,
                tls: tls.clone(),
                serve: Box::new(move |shard, stream| {
                    Box::pin(async move { serve_kafka(&shard, stream, port).await })
                }),
            });
        }
    }
    out
}

/// Which port a connection came in through.
#[derive(Clone, Copy)]
struct Port {
    /// Index into `config.listeners`.
    listener: usize,
    protocol: SecurityProtocol,
    /// The shared bootstrap port rather than this shard's broker port.
    bootstrap: bool,
}

impl Port {
    /// The listener's name in logs and metrics (a PLAINTEXT listener keeps the names it had
    /// before listeners had protocols).
    fn name(self) -> &'static str {
        use SecurityProtocol::*;
        match (self.protocol, self.bootstrap) {
            (Plaintext, true) => "bootstrap",
            (Plaintext, false) => "broker port",
            (Ssl, true) => "ssl bootstrap",
            (Ssl, false) => "ssl broker port",
            (SaslPlaintext, true) => "sasl_plaintext bootstrap",
            (SaslPlaintext, false) => "sasl_plaintext broker port",
            (SaslSsl, true) => "sasl_ssl bootstrap",
            (SaslSsl, false) => "sasl_ssl broker port",
        }
    }
}

/// Whether a connection must authenticate with SASL before it may send anything but
/// ApiVersions, SaslHandshake and SaslAuthenticate. The one place that decides it: every
/// `SASL_PLAINTEXT://` and `SASL_SSL://` listener, and every listener under the broker-wide
/// `weir.sasl.required`.
fn requires_sasl(shard: &Shard, port: Port) -> bool {
    port.protocol.sasl() || shard.config.security.sasl_required
}

/// Kafka's `sasl.server.max.receive.size` (its default): the largest frame a connection that
/// must authenticate may send before it has, so that unauthenticated peers cannot make the broker
/// buffer `socket.request.max.bytes` each. A larger one closes the connection, as in Kafka.
const UNAUTHENTICATED_FRAME_BYTES_MAX: usize = 524_288;

async fn serve_kafka(
    shard: &Rc<Shard>,
    stream: Stream,
    port: Port,
) -> Result<(), listener::ConnectionError> {
    serve(shard, stream, port).await.map_err(Into::into)
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error(
        "frame of {size} bytes exceeds {max} (socket.request.max.bytes; before SASL \
         authentication sasl.server.max.receive.size)"
    )]
    FrameTooLarge { size: i64, max: usize },
    #[error(transparent)]
    Codec(#[from] super::codec::CodecError),
}

async fn serve(shard: &Rc<Shard>, stream: Stream, port: Port) -> Result<(), ConnectionError> {
    let client_host = stream
        .peer_addr()
        .map(|peer| format!("/{}", peer.ip()))
        .unwrap_or_default();
    let stream = Rc::new(RefCell::new(stream));
    let session = Rc::new(Session::new(Principal::anonymous(), port.protocol));
    let sasl = requires_sasl(shard, port);
    let mut reader = BufReader::with_capacity(64 << 10, ReadHalf(stream.clone()));
    let writer = WriteHalf(stream.clone());
    let budget = Budget::new(
        shard.config.connection_requests_in_flight_max,
        shard.config.connection_buffer_bytes_max,
    );
    // Unbounded as a channel, bounded by the budget: every entry holds a request's ticket.
    let (queue, answers) = local_channel::new_unbounded::<(Pending, Ticket, RequestStamp)>();
    let write_task = glommio::spawn_local({
        let budget = budget.clone();
        async move {
            let result = write_loop(writer, answers, &budget).await;
            budget.close();
            result
        }
    });

    let read_result: Result<(), ConnectionError> = async {
        loop {
            let frame_bytes_max = if sasl && !session.is_authenticated() {
                UNAUTHENTICATED_FRAME_BYTES_MAX.min(shard.config.socket_request_max_bytes)
            } else {
                shard.config.socket_request_max_bytes
            };
            let frame = futures_lite::future::or(
                read_frame(&mut reader, frame_bytes_max, &budget),
                async {
                    shard.shutdown.wait().await;
                    Ok(None)
                },
            )
            .await?;
            let Some((frame, ticket)) = frame else {
                return Ok(());
            };
            let peer = Peer {
                client_host: &client_host,
                bootstrap: port.bootstrap,
                listener: port.listener,
                session: &session,
                sasl,
            };
            let stamp = RequestStamp::start(&frame);
            let pending = dispatch(shard, frame, &peer).await?;
            if queue.send((pending, ticket, stamp)).await.is_err() {
                return Ok(()); // the writer stopped: the socket is gone
            }
            if session.has_failed() {
                // Authentication failed: answer what was read (the failure, after its delay),
                // read nothing more, close.
                return Ok(());
            }
        }
    }
    .await;
    drop(queue);
    // In-flight requests are answered before the socket closes, also on shutdown.
    let write_result = write_task.await;
    drop(reader);
    drop(stream); // closes the socket
    read_result?;
    write_result
}

/// A frame's body is first allocated up to this size, then grown as its bytes arrive.
const FRAME_CHUNK_BYTES: usize = 1 << 20;

/// Reads one size-prefixed frame once the budget allows it, with its ticket; `None` on a clean
/// end of stream, or when the writer is gone.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
    budget: &Rc<Budget>,
) -> Result<Option<(Bytes, Ticket)>, ConnectionError> {
    if !budget.request_slot().await {
        return Ok(None);
    }
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let size = i32::from_be_bytes(size) as i64;
    if size < 0 || size as u64 > max_bytes as u64 {
        return Err(ConnectionError::FrameTooLarge {
            size,
            max: max_bytes,
        });
    }
    let Some(ticket) = budget.admit(size as usize).await else {
        return Ok(None);
    };
    // Grow with the bytes that actually arrive (at most doubling, from 1 MiB), so a client
    // announcing a large frame and sending nothing does not make us allocate it. Not
    // `read_to_end`: it reserved more once the body was complete, and that realloc copied every
    // request body once more (8% of a shard's CPU in a profile of 1 KiB produce at ~1 GB/s).
    let size = size as usize;
    let mut body = vec![0u8; size.min(FRAME_CHUNK_BYTES)];
    let mut filled = 0;
    while filled < size {
        if filled == body.len() {
            let grow = (size - filled).min(body.len());
            body.resize(filled + grow, 0);
        }
        let read = reader.read(&mut body[filled..]).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a frame",
            )
            .into());
        }
        filled += read;
    }
    Ok(Some((Bytes::from(body), ticket)))
}

/// Answers in request order; each request's ticket (and its answer's) is given back once the
/// answer is written, and its latency (read to written) counted.
async fn write_loop(
    mut writer: WriteHalf,
    answers: local_channel::LocalReceiver<(Pending, Ticket, RequestStamp)>,
    budget: &Rc<Budget>,
) -> Result<(), ConnectionError> {
    let mut staging = BytesMut::with_capacity(COALESCE_BYTES_MAX);
    while let Some((pending, _request, stamp)) = answers.recv().await {
        let Some(response) = pending.await? else {
            stamp.finish(0);
            continue;
        };
        let bytes = response.wire_bytes();
        let _answer = budget.charge_answer(bytes);
        write_response(&mut writer, &mut staging, response).await?;
        stamp.finish(bytes);
    }
    Ok(())
}

async fn write_response(
    writer: &mut WriteHalf,
    staging: &mut BytesMut,
    response: Response,
) -> io::Result<()> {
    for piece in &response.pieces {
        let bytes = piece.as_slice();
        if bytes.len() < COALESCE_BYTES_MAX {
            staging.extend_from_slice(bytes);
            if staging.len() >= COALESCE_BYTES_MAX {
                writer.write_all(staging).await?;
                staging.clear();
            }
            continue;
        }
        if !staging.is_empty() {
            writer.write_all(staging).await?;
            staging.clear();
        }
        match piece {
            Piece::Bytes(bytes) => writer.write_all(bytes).await?,
            Piece::Chunk(chunk) => writer.write_all(chunk.as_slice()).await?,
        }
    }
    if !staging.is_empty() {
        writer.write_all(staging).await?;
        staging.clear();
    }
    // A no-op on plain TCP; on TLS it sends what rustls still holds encrypted when the socket
    // took less than all of it.
    writer.flush().await
}

/// The read side of a socket shared with its writer on the same shard.
struct ReadHalf(Rc<RefCell<Stream>>);
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
