//! Exchanges and bindings with RabbitMQ semantics, on top of Kafka topics (`docs/routing.md`).
//!
//! The controller shard owns the authoritative [`table::RoutingTable`] through
//! [`controller::RoutingController`], which persists every change ([`store`]) before publishing an
//! immutable snapshot; every shard routes produce requests with the newest snapshot it received
//! ([`controller::RoutingReplica`]). Everything here is pure (no I/O) except `store`, `controller`
//! (which calls it) and `cli` (a blocking admin client for the `weir` binary).
//!
//! - [`topic_matcher`], [`headers_matcher`]: the per-type matchers.
//! - [`exchange`]: exchange and binding declarations, limits, validation, Kafka error codes.
//! - [`table`]: the routing table and `route()` (e2e bindings, cycles, alternate exchanges).
//! - [`config`]: the `weir.*` Kafka configs that declare exchanges and bindings.
//! - [`partitioner`]: Kafka's default partitioner (murmur2) for destination partitions.
//! - [`records`], [`decompress`]: splitting produced batches per destination partition.
//! - [`router`]: one produce to an exchange → batches per destination partition.
//! - [`store`], [`controller`]: durability, the single writer, snapshots for the shards.
//! - [`broker`]: the calls the broker core makes (produce diversion, controller, Metadata).
//! - [`cli`]: `weir exchange …` / `weir binding …`.

pub mod broker;
pub mod cli;
pub mod config;
pub mod controller;
pub mod decompress;
pub mod exchange;
pub mod headers_matcher;
pub mod partitioner;
pub mod records;
pub mod router;
pub mod store;
pub mod table;
pub mod topic_matcher;
