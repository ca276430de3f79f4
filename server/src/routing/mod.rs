//! Exchanges and bindings with RabbitMQ semantics, on top of Kafka topics (`docs/routing.md`).
//!
//! The controller shard owns the authoritative [`table::RoutingTable`] through
//! [`controller::RoutingController`], which persists every change ([`store`]) before publishing an
//! immutable snapshot; every shard routes produce requests with the newest snapshot it received
//! (carried in its metadata snapshot, `Metadata::routing`). Everything here is pure (no I/O)
//! except `store` and `controller` (which calls it).
//!
//! Core: nothing here imports a protocol. Errors are domain errors with a
//! [`exchange::RoutingErrorKind`]; the Kafka layer maps kinds to Kafka codes. The record format
//! (`kafka_protocol::records`, `kafka_protocol::compression`) is Weir's storage format, not the
//! wire protocol, so `records` and `decompress` may use it.
//!
//! - [`topic_matcher`], [`headers_matcher`]: the per-type matchers.
//! - [`exchange`]: exchange and binding declarations, limits, validation, kinds of refusal.
//! - [`table`]: the routing table and `route()` (e2e bindings, cycles, alternate exchanges).
//! - [`delayed`]: where routing stops at a delayed exchange (its hold queue, `x-delay`).
//! - [`config`]: the `weir.*` Kafka configs that declare exchanges and bindings.
//! - [`partitioner`]: Kafka's default partitioner (murmur2) for destination partitions.
//! - [`records`], [`decompress`]: splitting produced batches per destination partition.
//! - [`router`]: one produce to an exchange → batches per destination partition.
//! - [`store`], [`controller`]: durability, the single writer, snapshots for the shards.
//! - [`broker`]: the calls the broker core makes (produce to an exchange, controller, Metadata).

pub mod broker;
pub mod config;
pub mod controller;
pub mod decompress;
pub mod delayed;
pub mod exchange;
pub mod headers_matcher;
pub mod partitioner;
pub mod records;
pub mod router;
pub mod store;
pub mod table;
pub mod topic_matcher;
