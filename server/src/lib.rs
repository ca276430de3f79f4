//! weir-server: the thread-per-core Kafka-compatible broker.
//!
//! Module ownership (each a separate piece of work; see docs/architecture.md):
//! - `groups`: the consumer group coordinator (classic protocol) and committed offsets.
//! - `routing`: exchanges and bindings (RabbitMQ semantics) over topics.
//! - everything else: config, shards, network, Kafka codec and handlers.

pub mod groups;
pub mod routing;
