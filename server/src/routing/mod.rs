//! Exchanges and bindings with RabbitMQ semantics, on top of Kafka topics.
//!
//! The controller shard owns the authoritative [`table::RoutingTable`] and its durable copy
//! ([`store`]); every shard routes produce requests with its own read-only clone, replaced whole
//! on each versioned broadcast. Everything here is pure (no I/O) except `store`.
//!
//! - [`topic_matcher`], [`headers_matcher`]: the per-type matchers.
//! - [`exchange`]: exchange and binding declarations, their validation and error codes.
//! - [`table`]: the routing table and `route()` (e2e bindings, cycles, alternate exchanges).
//! - [`config`]: the `weir.*` Kafka configs that declare exchanges and bindings.
//! - [`partitioner`]: Kafka's default partitioner (murmur2) for destination partitions.
//! - [`records`]: splitting produced batches per destination partition.
//! - [`store`]: persisting declarations across restarts.

pub mod cli;
pub mod config;
pub mod exchange;
pub mod headers_matcher;
pub mod partitioner;
pub mod records;
pub mod router;
pub mod store;
pub mod table;
pub mod topic_matcher;
