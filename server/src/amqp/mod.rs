//! AMQP 0-9-1: the second protocol, beside `kafka/`. It may import the core (shard runtime,
//! metadata, partitions, routing, queues); the core never imports it: it plugs in as the
//! [`Listener`] and the start hook that `lib.rs::run` hands every shard (`--amqp-listen`,
//! default `127.0.0.1:5672`, `none` disables it).
//!
//! Every shard listens on the same address (SO_REUSEPORT, like Kafka's bootstrap port); a
//! connection is served on the shard that accepted it, and each queue on the shard that owns its
//! log. Files: `frame.rs` (codec), `connection.rs` and `handshake.rs` (the connection class),
//! `channel.rs`, one file per method class (`exchange.rs`, `queue.rs`, `basic.rs`,
//! `confirm.rs`), `delayed.rs` (the `x-delayed-message` exchange's held messages and timers),
//! `queue_owner/` (queues on their owner; `limits.rs`: TTL, length limits,
//! x-expires), `policy.rs` (queue arguments), `dead_letter.rs` (x-death and the republish),
//! `message.rs` (the record layout), `tx.rs` (transactions), `reply_to.rs` (direct reply-to),
//! `recovery.rs` (start and clean stop), `consumed.rs` (deleting the segments of a queue's log
//! that are consumed), `error.rs` (reply codes), `names.rs` (AMQP names in the core's one
//! namespace), `alarm/` (RabbitMQ's disk and memory alarms: connection.blocked).

pub mod access;
pub mod alarm;
pub mod basic;
pub mod channel;
pub mod channel_credit;
pub mod confirm;
pub mod connection;
pub mod consumed;
pub mod dead_letter;
pub mod delayed;
pub mod error;
pub mod exchange;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod names;
pub mod policy;
pub mod publish_run;
pub mod queue;
pub mod queue_owner;
pub mod recovery;
pub mod reply_to;
pub mod tx;

use std::rc::Rc;
use std::sync::Arc;

use crate::config::BrokerConfig;
use crate::security::tls::TlsListener;
use crate::shard::listener::Listener;
use crate::shard::Shard;

/// AMQP's listeners: every shard binds each of `--amqp-listen` (`amqps://` ones with TLS, whose
/// configuration `tls` is, present when a listener needs it).
pub fn listeners(config: &BrokerConfig, tls: Option<&Arc<rustls::ServerConfig>>) -> Vec<Listener> {
    config
        .amqp_listeners
        .iter()
        .map(|amqp| Listener {
            name: if amqp.tls { "amqps" } else { "amqp" },
            address: amqp.address,
            tls: amqp.tls.then(|| {
                let server = tls.expect("lib.rs builds the TLS configuration for a TLS listener");
                TlsListener::new(server.clone(), config.tls.handshake_timeout)
            }),
            serve: Box::new(|shard, stream| {
                Box::pin(async move { connection::serve(shard, stream).await })
            }),
        })
        .collect()
}

/// AMQP's start work on every shard (see `recovery.rs`).
pub fn start_hook(
    shard: Rc<Shard>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>> {
    Box::pin(recovery::start(shard))
}

/// AMQP's clean-shutdown work on every shard (see `recovery.rs`).
pub fn stop_hook(shard: Rc<Shard>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    Box::pin(recovery::stop(shard))
}
