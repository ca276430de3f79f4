//! Listeners: what a protocol plugs into the shard runtime. The composition root (`lib.rs::run`)
//! hands every shard a list of [`Listener`]s (Kafka's bootstrap and broker ports today); the shard
//! binds each one and runs [`accept_loop`] on it, which admits connections against the shared
//! budget (`max.connections`) and hands each to the protocol's `serve`.
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

/// Why a connection closed early, as the protocol reports it (logged, then dropped).
pub type ConnectionError = Box<dyn std::error::Error>;

/// One connection served to its end by a protocol.
pub type Connection = Pin<Box<dyn Future<Output = Result<(), ConnectionError>>>>;

/// A protocol's work on every shard at start (see `ShardStart::start_hooks`); an error stops the
/// broker's start.
pub type StartHook = fn(Rc<Shard>) -> Pin<Box<dyn Future<Output = anyhow::Result<()>>>>;

/// A protocol's work on every shard at a clean shutdown (see `ShardStart::stop_hooks`).
pub type StopHook = fn(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>>;

/// A protocol's listening socket, bound on every shard.
#[derive(Clone, Copy)]
pub struct Listener {
    /// What the socket is, for errors: "binding {name} {address}".
    pub name: &'static str,
    /// The address the socket binds on `shard` (shards share an address through SO_REUSEPORT).
    pub address: fn(&Shard) -> SocketAddr,
    /// Serves one accepted connection until it closes or the shard shuts down.
    pub serve: fn(Rc<Shard>, TcpStream) -> Connection,
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
pub async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    name: &'static str,
    serve: fn(Rc<Shard>, TcpStream) -> Connection,
) {
    loop {
        match accept_or_shutdown(&shard, &listener).await {
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
                crate::metrics::connection_opened(name);
                glommio::spawn_local(async move {
                    let peer = stream.peer_addr().ok();
                    if let Err(error) = serve(shard.clone(), stream).await {
                        tracing::info!(shard = %shard.id, ?peer, %error, "closing connection");
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
