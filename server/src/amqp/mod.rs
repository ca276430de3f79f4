//! AMQP 0-9-1: the second protocol, beside `kafka/`. It may import the core (shard runtime,
//! metadata, partitions, routing, queues); the core never imports it: it plugs in as the
//! [`Listener`] that `lib.rs::run` hands every shard (`--amqp-listen`, default
//! `127.0.0.1:5672`, `none` disables it).
//!
//! Every shard listens on the same address (SO_REUSEPORT, like Kafka's bootstrap port); a
//! connection is served on the shard that accepted it.

pub mod connection;

use crate::shard::listener::Listener;

/// AMQP's listener: every shard binds `--amqp-listen`.
pub fn listeners() -> Vec<Listener> {
    vec![Listener {
        name: "amqp",
        address: |shard| {
            // `lib.rs` adds this listener only when AMQP is enabled.
            shard
                .config
                .amqp_listen
                .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 5672)))
        },
        serve: |shard, stream| Box::pin(async move { connection::serve(shard, stream).await }),
    }]
}
