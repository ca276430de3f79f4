//! Listeners: what a protocol plugs into the shard runtime. The composition root (`lib.rs::run`)
//! hands every shard a list of [`Listener`]s (each Kafka listener's bootstrap and broker ports,
//! AMQP's); the shard binds each one and runs [`accept_loop`] on it, which admits connections
//! against the shared budget (`max.connections`), runs the TLS handshake on a TLS listener
//! (bounded in time, holding the connection's slot), and hands the stream to the protocol's
//! `serve`.
//!
//! Runs on every shard; each listener's sockets belong to the shard that bound them. Core module:
//! imports no protocol (a protocol names itself here only through the function pointers it gives).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};

use super::{admit_connection, release_connection, Shard};
use crate::security::stream::Stream;
use crate::security::tls::TlsListener;

/// Why a connection closed early, as the protocol reports it (logged, then dropped).
pub type ConnectionError = Box<dyn std::error::Error>;

/// One connection served to its end by a protocol.
pub type Connection = Pin<Box<dyn Future<Output = Result<(), ConnectionError>>>>;

/// A protocol's work on every shard at start (see `ShardStart::start_hooks`); an error stops the
/// broker's start.
pub type StartHook = fn(Rc<Shard>) -> Pin<Box<dyn Future<Output = anyhow::Result<()>>>>;

/// A protocol's work on every shard at a clean shutdown (see `ShardStart::stop_hooks`).
pub type StopHook = fn(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>>;

/// Serves one accepted connection (plain or TLS, handshake done) until it closes or the shard
/// shuts down. `Send` because the main thread builds it; it is called only on its shard.
pub type Serve = Box<dyn Fn(Rc<Shard>, Stream) -> Connection + Send>;

/// A protocol's listening socket on one shard.
pub struct Listener {
    /// What the socket is, for errors ("binding {name} {address}") and the metrics' label.
    pub name: &'static str,
    /// The address the socket binds (shards share an address through SO_REUSEPORT).
    pub address: SocketAddr,
    /// The TLS handshake every accepted connection goes through first, on a TLS listener.
    pub tls: Option<TlsListener>,
    pub serve: Serve,
}

/// The next accepted connection, or `None` once the shard shuts down: the step of every accept
/// loop (the protocols' here, the metrics endpoint's).
pub async fn accept_or_shutdown(
    shard: &Shard,
    listener: &TcpListener,
) -> Option<glommio::Result<TcpStream, ()>> {
    futures_lite::future::or(async { Some(listener.accept().await) }, async {
        shard.shutdown.wait().await;
        None
    })
    .await
}

/// Accepts connections until shutdown; each admitted one is served by its own task.
pub async fn accept_loop(shard: Rc<Shard>, socket: TcpListener, listener: Listener) {
    let Listener {
        name, tls, serve, ..
    } = listener;
    let serve = Rc::new(serve);
    loop {
        match accept_or_shutdown(&shard, &socket).await {
            None => return,
            Some(Ok(stream)) => {
                if !admit_connection(&shard) {
                    tracing::warn!(
                        shard = %shard.id,
                        max = shard.config.max_connections,
                        "max.connections reached; refusing a connection"
                    );
                    continue;
                }
                let shard = shard.clone();
                let (tls, serve) = (tls.clone(), serve.clone());
                crate::metrics::connection_opened(name);
                glommio::spawn_local(async move {
                    let peer = stream.peer_addr().ok();
                    if let Err(error) = handshake_and_serve(&shard, stream, tls, &**serve).await {
                        tracing::info!(shard = %shard.id, ?peer, listener = name, %error, "closing connection");
                    }
                    crate::metrics::connection_closed(name);
                    release_connection(&shard);
                })
                .detach();
            }
            Some(Err(error)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(shard = %shard.id, %error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The TLS handshake on a TLS listener (its errors and timeout close the connection), then the
/// protocol's `serve`.
async fn handshake_and_serve(
    shard: &Rc<Shard>,
    tcp: TcpStream,
    tls: Option<TlsListener>,
    serve: &dyn Fn(Rc<Shard>, Stream) -> Connection,
) -> Result<(), ConnectionError> {
    let _ = tcp.set_nodelay(true);
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some(tls) => tls.accept(tcp).await?,
    };
    serve(shard.clone(), stream).await
}
