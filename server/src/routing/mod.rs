//! Exchanges and bindings with RabbitMQ semantics.
