//! Dead-lettering, as RabbitMQ does it: a message rejected without requeue, expired, dropped
//! from a full queue or returned past `x-delivery-limit` is republished through the queue's
//! `x-dead-letter-exchange`, with `x-dead-letter-routing-key` (or its own routing key), the
//! `x-death` header (one entry per queue and reason, newest first, `count` incremented when the
//! same queue and reason come again), the `x-first-death-*` headers on its first death, and its
//! `expiration` removed (kept as `original-expiration`). A dead letter that would come back to a
//! queue it already died in without any rejection on the way is dropped (a cycle).
//!
//! Runs on the dying queue's owner; the republish is a task of its own (routed through the
//! shared table, stored on each destination's owner like a publish), so that a queue never
//! re-enters itself. At most once, as RabbitMQ's classic queues: nothing confirms a dead letter.

use std::rc::Rc;
use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

use super::message::{now_ms, Message};
use super::policy::QueuePolicy;
use crate::shard::Shard;

/// Why a message died: x-death's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Rejected,
    Expired,
    Maxlen,
    DeliveryLimit,
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Republishes `dead` (messages that died in `queue`, an AMQP queue name) through the queue's
/// dead-letter exchange; without one they are dropped.
pub fn publish(
    shard: &Rc<Shard>,
    queue: &str,
    policy: &QueuePolicy,
    dead: Vec<(Arc<Message>, Reason)>,
) {
    let Some(exchange) = policy.dead_letter_exchange.clone() else {
        return;
    };
    if dead.is_empty() {
        return;
    }
    let shard = shard.clone();
    let queue = queue.to_string();
    let key = policy.dead_letter_routing_key.clone();
    glommio::spawn_local(async move {
        for (message, reason) in dead {
            let letter = letter(&message, reason, &queue, &exchange, key.as_deref());
            republish(&shard, letter, reason).await;
        }
    })
    .detach();
}

/// A dead letter and its decoded properties.
struct Letter {
    message: Arc<Message>,
    properties: AMQPProperties,
}

fn letter(
    message: &Message,
    reason: Reason,
    queue: &str,
    exchange: &str,
    key: Option<&str>,
) -> Letter {
    let properties = message.properties();
    let mut headers = properties.headers().clone().unwrap_or_default();
    let death = Death {
        reason,
        queue,
        exchange: &message.exchange,
        routing_key: &message.routing_key,
        expiration: properties.expiration().as_ref().map(|text| text.as_str()),
    };
    add_death(&mut headers, &death);
    let properties = without_expiration(&properties).with_headers(headers);
    let letter = Message {
        exchange: exchange.to_string(),
        routing_key: key.unwrap_or(&message.routing_key).to_string(),
        raw_properties: super::frame::encode_properties(&properties),
        body: message.body.clone(),
        stored_ms: now_ms(),
        expiration_ms: None,
        persistent: message.persistent,
    };
    Letter {
        message: Arc::new(letter),
        properties,
    }
}

/// Routes a dead letter through its exchange and stores it in every queue (or topic) it
/// reaches but those it would cycle back to. Nothing waits for the stores.
async fn republish(shard: &Rc<Shard>, letter: Letter, reason: Reason) {
    let metadata = shard.metadata();
    let message = &letter.message;
    let destinations = match super::basic::route(
        &metadata,
        &message.exchange,
        &message.routing_key,
        &letter.properties,
    ) {
        Ok(destinations) => destinations,
        Err(error) => {
            tracing::debug!(exchange = %message.exchange, %error, "dead letter dropped");
            return;
        }
    };
    let deaths = deaths(&letter.properties);
    for destination in destinations {
        let queue = super::names::amqp_name(&destination);
        if reason != Reason::Rejected && is_cycle(&queue, &deaths) {
            tracing::debug!(queue = %queue, "dead letter dropped: a dead-letter cycle");
            continue;
        }
        let stored =
            super::basic::store(shard, &metadata, &destination, message, message.persistent).await;
        if let Err(error) = stored {
            tracing::debug!(queue = %queue, %error, "storing a dead letter failed");
        }
    }
}

/// One death, as x-death records it.
struct Death<'a> {
    reason: Reason,
    queue: &'a str,
    exchange: &'a str,
    routing_key: &'a str,
    expiration: Option<&'a str>,
}

const X_DEATH: &str = "x-death";

/// RabbitMQ's `update_x_death_header`: the first death also sets `x-first-death-*`; a death in
/// a queue for a reason already listed increments that entry's count and moves it first; any
/// other is a new entry, first. An `x-death` that is not an array is replaced.
fn add_death(headers: &mut FieldTable, death: &Death) {
    let existing = match headers.inner().get(X_DEATH) {
        Some(AMQPValue::FieldArray(array)) => Some(array.as_slice().to_vec()),
        Some(_) => Some(Vec::new()),
        None => None,
    };
    let Some(entries) = existing else {
        for (name, value) in [
            ("x-first-death-reason", death.reason.name()),
            ("x-first-death-queue", death.queue),
            ("x-first-death-exchange", death.exchange),
        ] {
            headers.insert(name.into(), long_string(value));
        }
        let deaths = FieldArray::from(vec![AMQPValue::FieldTable(new_entry(death))]);
        headers.insert(X_DEATH.into(), AMQPValue::FieldArray(deaths));
        return;
    };
    let (matching, mut others): (Vec<AMQPValue>, Vec<AMQPValue>) = entries
        .into_iter()
        .partition(|entry| same_queue_and_reason(entry, death));
    let first = match matching.into_iter().next() {
        Some(AMQPValue::FieldTable(mut entry)) => {
            let count = entry.inner().get("count").and_then(integer).unwrap_or(0);
            entry.insert("count".into(), AMQPValue::LongLongInt(count + 1));
            entry
        }
        _ => new_entry(death),
    };
    others.insert(0, AMQPValue::FieldTable(first));
    headers.insert(X_DEATH.into(), AMQPValue::FieldArray(others.into()));
}

fn new_entry(death: &Death) -> FieldTable {
    let mut entry = FieldTable::default();
    entry.insert("count".into(), AMQPValue::LongLongInt(1));
    entry.insert("reason".into(), long_string(death.reason.name()));
    entry.insert("queue".into(), long_string(death.queue));
    entry.insert(
        "time".into(),
        AMQPValue::Timestamp((now_ms() / 1000).max(0) as u64),
    );
    entry.insert("exchange".into(), long_string(death.exchange));
    let keys = FieldArray::from(vec![long_string(death.routing_key)]);
    entry.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
    if let Some(expiration) = death.expiration {
        entry.insert("original-expiration".into(), long_string(expiration));
    }
    entry
}

fn same_queue_and_reason(entry: &AMQPValue, death: &Death) -> bool {
    let AMQPValue::FieldTable(entry) = entry else {
        return false;
    };
    let field = |name: &str| entry.inner().get(name).and_then(super::policy::text);
    field("queue").as_deref() == Some(death.queue)
        && field("reason").as_deref() == Some(death.reason.name())
}

/// The (queue, reason) pairs of a message's x-death, newest first; `None` for an entry that is
/// not a table.
fn deaths(properties: &AMQPProperties) -> Vec<Option<(String, String)>> {
    let Some(headers) = properties.headers() else {
        return Vec::new();
    };
    let Some(AMQPValue::FieldArray(entries)) = headers.inner().get(X_DEATH) else {
        return Vec::new();
    };
    entries
        .as_slice()
        .iter()
        .map(|entry| match entry {
            AMQPValue::FieldTable(table) => {
                let field = |name: &str| {
                    table
                        .inner()
                        .get(name)
                        .and_then(super::policy::text)
                        .unwrap_or_default()
                };
                Some((field("queue"), field("reason")))
            }
            _ => None,
        })
        .collect()
}

/// RabbitMQ's `is_cycle`: the message died in `queue` before, and every death since (that one
/// included) was automatic (no rejection, nothing a client put there).
fn is_cycle(queue: &str, deaths: &[Option<(String, String)>]) -> bool {
    let Some(position) = deaths
        .iter()
        .position(|death| matches!(death, Some((name, _)) if name == queue))
    else {
        return false;
    };
    deaths[..=position]
        .iter()
        .all(|death| matches!(death, Some((_, reason)) if reason != "rejected"))
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text.as_bytes().to_vec()))
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match *value {
        AMQPValue::LongLongInt(number) => Some(number),
        AMQPValue::LongInt(number) => Some(i64::from(number)),
        AMQPValue::LongUInt(number) => Some(i64::from(number)),
        AMQPValue::ShortInt(number) => Some(i64::from(number)),
        AMQPValue::ShortUInt(number) => Some(i64::from(number)),
        AMQPValue::ShortShortInt(number) => Some(i64::from(number)),
        AMQPValue::ShortShortUInt(number) => Some(i64::from(number)),
        _ => None,
    }
}

/// The same properties without `expiration` (the crate has setters only).
fn without_expiration(properties: &AMQPProperties) -> AMQPProperties {
    let mut copy = AMQPProperties::default();
    let short = |value: &Option<ShortString>| value.clone();
    if let Some(value) = short(properties.content_type()) {
        copy = copy.with_content_type(value);
    }
    if let Some(value) = short(properties.content_encoding()) {
        copy = copy.with_content_encoding(value);
    }
    if let Some(value) = properties.headers().clone() {
        copy = copy.with_headers(value);
    }
    if let Some(value) = *properties.delivery_mode() {
        copy = copy.with_delivery_mode(value);
    }
    if let Some(value) = *properties.priority() {
        copy = copy.with_priority(value);
    }
    copy = copy_identity(properties, copy);
    if let Some(value) = *properties.timestamp() {
        copy = copy.with_timestamp(value);
    }
    copy
}

type SetString = fn(AMQPProperties, ShortString) -> AMQPProperties;

/// The string properties that say who sent a message and what it answers.
fn copy_identity(from: &AMQPProperties, mut to: AMQPProperties) -> AMQPProperties {
    let fields: [(&Option<ShortString>, SetString); 7] = [
        (from.correlation_id(), AMQPProperties::with_correlation_id),
        (from.reply_to(), AMQPProperties::with_reply_to),
        (from.message_id(), AMQPProperties::with_message_id),
        (from.kind(), AMQPProperties::with_type),
        (from.user_id(), AMQPProperties::with_user_id),
        (from.app_id(), AMQPProperties::with_app_id),
        (from.cluster_id(), AMQPProperties::with_cluster_id),
    ];
    for (value, set) in fields {
        if let Some(value) = value.clone() {
            to = set(to, value);
        }
    }
    to
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death<'a>(queue: &'a str, reason: Reason) -> Death<'a> {
        Death {
            reason,
            queue,
            exchange: "",
            routing_key: "work",
            expiration: Some("200"),
        }
    }

    fn summary(headers: &FieldTable) -> Vec<(String, String, i64)> {
        let Some(AMQPValue::FieldArray(entries)) = headers.inner().get(X_DEATH) else {
            return Vec::new();
        };
        entries
            .as_slice()
            .iter()
            .filter_map(|entry| match entry {
                AMQPValue::FieldTable(table) => {
                    let text = |name: &str| {
                        table
                            .inner()
                            .get(name)
                            .and_then(super::super::policy::text)
                            .unwrap_or_default()
                    };
                    let count = table.inner().get("count").and_then(integer).unwrap_or(0);
                    Some((text("queue"), text("reason"), count))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn x_death_counts_each_queue_and_reason_newest_first() {
        let mut headers = FieldTable::default();
        add_death(&mut headers, &death("work", Reason::Rejected));
        add_death(&mut headers, &death("retry", Reason::Expired));
        add_death(&mut headers, &death("work", Reason::Rejected));
        assert_eq!(
            summary(&headers),
            vec![
                ("work".into(), "rejected".into(), 2),
                ("retry".into(), "expired".into(), 1)
            ]
        );
        let first = headers.inner().get("x-first-death-queue");
        assert_eq!(
            first.and_then(super::super::policy::text).as_deref(),
            Some("work")
        );
    }

    #[test]
    fn only_a_cycle_without_rejection_is_one() {
        let deaths = |list: &[(&str, &str)]| -> Vec<Option<(String, String)>> {
            list.iter()
                .map(|(queue, reason)| Some((queue.to_string(), reason.to_string())))
                .collect()
        };
        let automatic = deaths(&[("retry", "expired"), ("work", "expired")]);
        assert!(is_cycle("work", &automatic));
        assert!(!is_cycle("elsewhere", &automatic));
        let rejected = deaths(&[("retry", "expired"), ("work", "rejected")]);
        assert!(!is_cycle("work", &rejected));
        assert!(!is_cycle(
            "work",
            &[None, Some(("work".into(), "expired".into()))]
        ));
    }
}
