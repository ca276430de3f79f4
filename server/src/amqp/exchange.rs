//! The exchange class: declare, delete, bind and unbind (exchange to exchange), all as changes to
//! the one routing table that Kafka's exchanges use (`routing/`), applied by the controller.
//! The default exchange `""` routes by queue name and is not in the table; `amq.direct`,
//! `amq.fanout`, `amq.topic`, `amq.headers` and `amq.match` are declared at start
//! (`recovery.rs`).
//!
//! Runs on the connection's shard.

use std::collections::BTreeMap;
use std::rc::Rc;

use amq_protocol::protocol::{exchange, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};

use super::access;
use super::channel::Channel;
use super::connection::{Conn, HandleError};
use super::delayed::{self, hold_spec, X_DELAYED_TYPE};
use super::error::AmqpError;
use super::names;
use crate::routing::exchange::{
    Binding, Destination, Exchange, ExchangeType, RoutingErrorKind, DELAYED_TYPE_NAME,
};
use crate::routing::headers_matcher::{typed, TYPED_VOID};
use crate::routing::table::Change;
use crate::security::acl::Operation;
use crate::shard::controller::TopicError;
use crate::shard::mesh::{reply_channel, ControlJob};

/// RabbitMQ's predeclared exchanges.
pub const PREDECLARED: [(&str, ExchangeType); 5] = [
    ("amq.direct", ExchangeType::Direct),
    ("amq.fanout", ExchangeType::Fanout),
    ("amq.topic", ExchangeType::Topic),
    ("amq.headers", ExchangeType::Headers),
    ("amq.match", ExchangeType::Headers),
];

pub async fn handle(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    method: exchange::AMQPMethod,
) -> Result<(), HandleError> {
    let reply = match method {
        exchange::AMQPMethod::Declare(declare) => {
            let nowait = declare.nowait;
            declare_exchange(conn, &declare).await?;
            (!nowait).then_some(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}))
        }
        exchange::AMQPMethod::Delete(delete) => {
            let nowait = delete.nowait;
            delete_exchange(conn, &delete).await?;
            (!nowait).then_some(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {}))
        }
        exchange::AMQPMethod::Bind(bind) => {
            let nowait = bind.nowait;
            let binding = exchange_binding(
                conn,
                &bind.source,
                &bind.destination,
                &bind.routing_key,
                &bind.arguments,
            )?;
            change_routing(conn, vec![Change::AddBinding(binding)]).await?;
            (!nowait).then_some(exchange::AMQPMethod::BindOk(exchange::BindOk {}))
        }
        exchange::AMQPMethod::Unbind(unbind) => {
            let nowait = unbind.nowait;
            let binding = exchange_binding(
                conn,
                &unbind.source,
                &unbind.destination,
                &unbind.routing_key,
                &unbind.arguments,
            )?;
            change_routing(conn, vec![Change::RemoveBinding(binding)]).await?;
            (!nowait).then_some(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {}))
        }
        other => {
            return Err(
                AmqpError::command_invalid(format!("unexpected exchange method {other:?}")).into(),
            )
        }
    };
    if let Some(reply) = reply {
        conn.send_method(channel.id, AMQPClass::Exchange(reply))
            .await?;
    }
    Ok(())
}

async fn declare_exchange(conn: &Conn, declare: &exchange::Declare) -> Result<(), AmqpError> {
    let name = declare.exchange.as_str();
    if name.is_empty() {
        return Err(AmqpError::access_refused(
            "operation not permitted on the default exchange",
        ));
    }
    let metadata = conn.shard.metadata();
    let core = names::exchange(&metadata, name);
    access::exchange(conn, access::declaring(declare.passive), &core)?;
    let existing = metadata.routing.exchange(&core).cloned();
    if declare.passive {
        return existing
            .map(|_| ())
            .ok_or_else(|| AmqpError::not_found(format!("no exchange '{name}' in vhost '/'")));
    }
    let kind = declared_type(declare)?;
    match existing {
        Some(existing) if existing.kind == kind => return Ok(()),
        Some(existing) if existing.kind.is_delayed() && kind.is_delayed() => {
            return Err(AmqpError::precondition(format!(
                "inequivalent arg '{X_DELAYED_TYPE}' for exchange '{name}' in vhost '/': \
                 received '{}' but current is '{}'",
                kind.routing().as_str(),
                existing.kind.routing().as_str()
            )))
        }
        Some(existing) => {
            return Err(AmqpError::precondition(format!(
                "inequivalent arg 'type' for exchange '{name}' in vhost '/': received '{}' but \
                 current is '{}'",
                kind.as_str(),
                existing.kind.as_str()
            )))
        }
        None if name.starts_with("amq.") => {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )))
        }
        None => {}
    }
    let mut declared = Exchange::new(&names::new_exchange(&metadata, name)?, kind);
    let alternate = declare
        .arguments
        .inner()
        .get("alternate-exchange")
        .and_then(super::policy::text);
    declared.alternate = alternate.map(|alternate| names::exchange(&metadata, &alternate));
    if kind.is_delayed() {
        // The hold queue first: a delayed exchange is never without one.
        super::queue::declare_internal(conn, &delayed::hold_queue(&declared.name), hold_spec())
            .await?;
    }
    change_routing(conn, vec![Change::DeclareExchange(declared)]).await
}

/// The type a declare asks for: one of the four, or `x-delayed-message` with a valid
/// `x-delayed-type` (406 with the plugin's text otherwise); 503 for any other type.
fn declared_type(declare: &exchange::Declare) -> Result<ExchangeType, AmqpError> {
    let text = declare.kind.as_str();
    if text == DELAYED_TYPE_NAME {
        let delayed_type = declare
            .arguments
            .inner()
            .get(X_DELAYED_TYPE)
            .and_then(super::policy::text);
        return delayed_type
            .and_then(|text| ExchangeType::parse(&text).ok())
            .and_then(ExchangeType::delayed)
            .ok_or_else(|| AmqpError::precondition(delayed::INVALID_DELAYED_TYPE));
    }
    ExchangeType::parse(text)
        .map_err(|_| AmqpError::command_invalid(format!("unknown exchange type '{text}'")))
}

async fn delete_exchange(conn: &Conn, delete: &exchange::Delete) -> Result<(), AmqpError> {
    let name = delete.exchange.as_str();
    if name.is_empty() || name.starts_with("amq.") {
        return Err(AmqpError::access_refused(format!(
            "operation not permitted on exchange '{name}'"
        )));
    }
    let metadata = conn.shard.metadata();
    let core = names::exchange(&metadata, name);
    access::exchange(conn, Operation::Delete, &core)?;
    if !metadata.routing.is_exchange(&core) {
        return Ok(());
    }
    if delete.if_unused && metadata.routing.bindings_from(&core).next().is_some() {
        return Err(AmqpError::precondition(format!("exchange '{name}' in use")));
    }
    let delayed = metadata
        .routing
        .exchange(&core)
        .is_some_and(|exchange| exchange.kind.is_delayed());
    change_routing(conn, vec![Change::DeleteExchange { name: core.clone() }]).await?;
    if delayed {
        delayed::drop_held(&conn.shard, &core).await;
    }
    Ok(())
}

fn exchange_binding(
    conn: &Conn,
    source: &amq_protocol::types::ShortString,
    destination: &amq_protocol::types::ShortString,
    key: &amq_protocol::types::ShortString,
    arguments: &FieldTable,
) -> Result<Binding, AmqpError> {
    if source.as_str().is_empty() || destination.as_str().is_empty() {
        return Err(AmqpError::access_refused(
            "operation not permitted on the default exchange",
        ));
    }
    let metadata = conn.shard.metadata();
    let source = names::exchange(&metadata, source.as_str());
    let destination = names::exchange(&metadata, destination.as_str());
    access::exchange(conn, Operation::Alter, &destination)?;
    access::exchange(conn, Operation::Read, &source)?;
    let mut binding = Binding::new(&source, Destination::Exchange(destination), key.as_str());
    binding.arguments = binding_arguments(arguments);
    Ok(binding)
}

/// Applies routing changes through the controller; refusals become AMQP errors.
pub async fn change_routing(conn: &Conn, changes: Vec<Change>) -> Result<(), AmqpError> {
    let (reply, answer) = reply_channel();
    conn.shard
        .mesh
        .controller
        .send_async(ControlJob::Routing { changes, reply })
        .await
        .map_err(|_| AmqpError::internal("the controller is gone"))?;
    let result = answer
        .recv_async()
        .await
        .map_err(|_| AmqpError::internal("the controller did not answer"))?;
    result.map_err(|error| match error {
        TopicError::Routing { kind, message } => match kind {
            RoutingErrorKind::NotFound => AmqpError::not_found(message),
            RoutingErrorKind::AlreadyExists => AmqpError::precondition(message),
            RoutingErrorKind::Storage | RoutingErrorKind::Internal => AmqpError::internal(message),
            _ => AmqpError::precondition(message),
        },
        other => AmqpError::internal(other.to_string()),
    })
}

/// A field table as the routing table's text arguments (headers bindings and matching).
pub fn binding_arguments(table: &FieldTable) -> BTreeMap<String, String> {
    table
        .inner()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value_text(value)?)))
        .collect()
}

/// A header or binding argument value as the headers matcher compares it (its truth table:
/// `routing/headers_matcher.rs`): strings as their text, every other type as a typed text of
/// RabbitMQ's type class, a void as presence; `None` for tables and arrays (not compared).
pub fn value_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(text) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        AMQPValue::ShortString(text) => text.as_str().to_string(),
        AMQPValue::Boolean(flag) => typed("bool", flag),
        AMQPValue::ShortShortInt(n) => typed("int", n),
        AMQPValue::ShortShortUInt(n) => typed("int", n),
        AMQPValue::ShortInt(n) => typed("int", n),
        AMQPValue::ShortUInt(n) => typed("int", n),
        AMQPValue::LongInt(n) => typed("int", n),
        AMQPValue::LongUInt(n) => typed("int", n),
        AMQPValue::LongLongInt(n) => typed("int", n),
        AMQPValue::Timestamp(n) => typed("timestamp", n),
        AMQPValue::Float(n) => typed("float", f64::from(*n)),
        AMQPValue::Double(n) => typed("float", n),
        AMQPValue::DecimalValue(n) => typed("decimal", format!("{}e-{}", n.value, n.scale)),
        AMQPValue::Void => TYPED_VOID.to_string(),
        _ => return None,
    })
}
