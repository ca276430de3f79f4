//! AMQP names and the core's names.
//!
//! RabbitMQ keeps queues and exchanges in two namespaces and allows any name of up to 255 bytes;
//! Celery, for one, declares an exchange `celery` and a queue `celery`, and queues such as
//! `worker@host.celery.pidbox`. Weir's core has one namespace for topics and exchanges (a Kafka
//! producer produces to either by name) and Kafka's topic-name rule (1-249 of `[a-zA-Z0-9._-]`).
//!
//! So: a queue or exchange keeps its AMQP name in the core when that name follows Kafka's rule
//! and nothing else holds it, which is the common case (a Kafka consumer reads queue `orders` as
//! topic `orders`). Otherwise it is stored under an alias, `amq.weir.queue.<escaped>` or
//! `amq.weir.exchange.<escaped>`: bytes outside `[a-zA-Z0-9.-]` are written `_XX` (hex), so the
//! alias is a valid topic name, tells where it came from, and maps back. AMQP clients cannot
//! declare `amq.*` names themselves, so an alias never meets a user's queue or exchange.
//! Lookups try the plain name first for queues and the alias first for exchanges, which finds
//! each whichever was declared first.

use std::borrow::Cow;

use super::error::AmqpError;
use super::queue::is_queue;
use crate::metadata::{valid_topic_name, Metadata};

const QUEUE_ALIAS: &str = "amq.weir.queue.";
const EXCHANGE_ALIAS: &str = "amq.weir.exchange.";

/// The core topic of AMQP queue `name`, if the queue exists.
pub fn queue_topic(metadata: &Metadata, name: &str) -> Option<String> {
    if is_queue(metadata, name) {
        return Some(name.to_string());
    }
    let alias = alias(QUEUE_ALIAS, name)?;
    is_queue(metadata, &alias).then_some(alias)
}

/// The topic a new queue `name` gets: its own name when free, an alias when an exchange holds
/// the name or Kafka's rule refuses it; 406 for the name of a plain Kafka topic (declaring a
/// queue there would take over that topic's log) or a name too long once escaped.
pub fn new_queue_topic(metadata: &Metadata, name: &str) -> Result<String, AmqpError> {
    if metadata.topics.contains_key(name) {
        return Err(AmqpError::precondition(format!(
            "'{name}' is a Kafka topic, not a queue"
        )));
    }
    if valid_topic_name(name) && !metadata.routing.is_exchange(name) {
        return Ok(name.to_string());
    }
    alias(QUEUE_ALIAS, name).ok_or_else(|| too_long(name))
}

/// The routing table's name for AMQP exchange `name` (existing or not).
pub fn exchange(metadata: &Metadata, name: &str) -> String {
    match alias(EXCHANGE_ALIAS, name) {
        Some(alias) if metadata.routing.is_exchange(&alias) => alias,
        _ => name.to_string(),
    }
}

/// The routing table's name for a new exchange `name`: its own when free, an alias when a
/// queue holds the name or Kafka's rule refuses it; 406 for a plain Kafka topic's name.
pub fn new_exchange(metadata: &Metadata, name: &str) -> Result<String, AmqpError> {
    let taken_by_queue = is_queue(metadata, name);
    if metadata.topics.contains_key(name) && !taken_by_queue {
        return Err(AmqpError::precondition(format!(
            "'{name}' is a Kafka topic, not an exchange"
        )));
    }
    if valid_topic_name(name) && !taken_by_queue {
        return Ok(name.to_string());
    }
    alias(EXCHANGE_ALIAS, name).ok_or_else(|| too_long(name))
}

/// The AMQP name of a core queue topic or exchange (an alias maps back).
pub fn amqp_name(core: &str) -> Cow<'_, str> {
    let escaped = core
        .strip_prefix(QUEUE_ALIAS)
        .or_else(|| core.strip_prefix(EXCHANGE_ALIAS));
    match escaped.and_then(unescape) {
        Some(name) => Cow::Owned(name),
        None => Cow::Borrowed(core),
    }
}

fn too_long(name: &str) -> AmqpError {
    AmqpError::precondition(format!(
        "'{name}' is too long for Weir once escaped (at most 249 bytes of [a-zA-Z0-9._-])"
    ))
}

/// `prefix` + `name` escaped, if that fits Kafka's 249-byte limit.
fn alias(prefix: &str, name: &str) -> Option<String> {
    let mut alias = String::from(prefix);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-' {
            alias.push(byte as char);
        } else {
            alias.push_str(&format!("_{byte:02X}"));
        }
    }
    valid_topic_name(&alias).then_some(alias)
}

fn unescape(escaped: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'_' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_valid_topic_names_and_map_back() {
        for name in ["celery", "worker@host.celery.pidbox", "a_b", "é/ü ", "x"] {
            let queue = alias(QUEUE_ALIAS, name).unwrap();
            let exchange = alias(EXCHANGE_ALIAS, name).unwrap();
            assert!(
                valid_topic_name(&queue) && valid_topic_name(&exchange),
                "{queue}"
            );
            assert_ne!(queue, exchange);
            assert_eq!(amqp_name(&queue), name);
            assert_eq!(amqp_name(&exchange), name);
        }
        assert_eq!(
            alias(QUEUE_ALIAS, "w@h").as_deref(),
            Some("amq.weir.queue.w_40h")
        );
        // Underscores are escaped too, so that `a_40` and `a@` differ.
        assert_ne!(alias(QUEUE_ALIAS, "a_40"), alias(QUEUE_ALIAS, "a@"));
        assert_eq!(amqp_name("orders"), "orders");
    }

    #[test]
    fn a_name_too_long_once_escaped_has_no_alias() {
        assert!(alias(QUEUE_ALIAS, &"@".repeat(80)).is_none());
        assert!(alias(QUEUE_ALIAS, &"a".repeat(234)).is_some());
    }
}
