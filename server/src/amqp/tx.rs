//! Transactions (tx.select / tx.commit / tx.rollback), as RabbitMQ runs them on one node: on a
//! channel in tx mode, basic.publish and basic.ack / nack / reject are held and take effect only
//! at tx.commit; tx.rollback drops the held publishes and puts the held acks' deliveries back
//! among the channel's unacknowledged ones (they are not requeued: the client may ack them
//! again). commit-ok goes out once every held publish is stored under its queues' durability,
//! what a confirm waits for; a store that fails closes the channel with 406, as RabbitMQ's
//! "partial tx completion". Confirm mode and tx mode exclude each other (406).
//!
//! A transaction is bounded (RabbitMQ's is not): at most `TX_PUBLISHES_MAX` publishes and
//! `TX_BYTES_MAX` body bytes; the publish past either is 406 and closes the channel, which drops
//! the transaction. Runs on the connection's shard; a commit is handled to its end before the
//! connection's next frame, as every method is (`connection.rs`).

use std::rc::Rc;

use amq_protocol::protocol::{tx, AMQPClass};

use super::channel::{Channel, Publishing, Unacked};
use super::connection::{Conn, HandleError};
use super::error::AmqpError;
use super::frame::BODY_BYTES_MAX;
use super::queue_owner::Settle;

/// Publishes one transaction may hold: as many as a channel may have unconfirmed.
pub const TX_PUBLISHES_MAX: usize = 65_536;
/// Body bytes one transaction may hold: one message of the largest size the broker takes.
pub const TX_BYTES_MAX: u64 = BODY_BYTES_MAX;

/// What a channel in tx mode holds until commit.
#[derive(Default)]
pub struct Transaction {
    publishes: Vec<Publishing>,
    /// Settlements in the order the client sent them, with their delivery tags.
    settles: Vec<(Vec<(u64, Unacked)>, Settle)>,
    body_bytes: u64,
}

pub async fn handle(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    method: tx::AMQPMethod,
) -> Result<(), HandleError> {
    let ok = match method {
        tx::AMQPMethod::Select(_) => {
            if channel.confirms.borrow().is_some() {
                return Err(
                    AmqpError::precondition("cannot switch from confirm to tx mode").into(),
                );
            }
            channel
                .tx
                .borrow_mut()
                .get_or_insert_with(Transaction::default);
            tx::AMQPMethod::SelectOk(tx::SelectOk {})
        }
        tx::AMQPMethod::Commit(_) => {
            commit(conn, channel, take(channel)?).await?;
            tx::AMQPMethod::CommitOk(tx::CommitOk {})
        }
        tx::AMQPMethod::Rollback(_) => {
            let held = take(channel)?;
            let mut unacked = channel.unacked.borrow_mut();
            for (tag, delivery) in held.settles.into_iter().flat_map(|(taken, _)| taken) {
                unacked.insert(tag, delivery);
            }
            tx::AMQPMethod::RollbackOk(tx::RollbackOk {})
        }
        other => {
            return Err(
                AmqpError::command_invalid(format!("unexpected tx method {other:?}")).into(),
            )
        }
    };
    conn.send_method(channel.id, AMQPClass::Tx(ok)).await?;
    Ok(())
}

/// The channel's transaction so far, leaving an empty one in its place (406 outside tx mode).
fn take(channel: &Channel) -> Result<Transaction, AmqpError> {
    channel
        .tx
        .borrow_mut()
        .as_mut()
        .map(std::mem::take)
        .ok_or_else(|| AmqpError::precondition("channel is not transactional"))
}

/// Holds a complete publish if the channel is in tx mode; gives it back otherwise.
pub fn hold_publish(
    channel: &Channel,
    publishing: Publishing,
) -> Result<Option<Publishing>, AmqpError> {
    let mut held = channel.tx.borrow_mut();
    let Some(transaction) = held.as_mut() else {
        return Ok(Some(publishing));
    };
    let body_bytes = transaction.body_bytes + publishing.body.len() as u64;
    if transaction.publishes.len() >= TX_PUBLISHES_MAX || body_bytes > TX_BYTES_MAX {
        return Err(AmqpError::precondition(format!(
            "a transaction holds at most {TX_PUBLISHES_MAX} publishes and {TX_BYTES_MAX} body \
             bytes; commit more often"
        )));
    }
    transaction.body_bytes = body_bytes;
    transaction.publishes.push(publishing);
    Ok(None)
}

/// Holds settlements if the channel is in tx mode; gives them back otherwise. Their number is
/// bounded by the channel's unacknowledged deliveries, which they were taken from.
pub fn hold_settle(
    channel: &Channel,
    taken: Vec<(u64, Unacked)>,
    how: Settle,
) -> Option<Vec<(u64, Unacked)>> {
    let mut held = channel.tx.borrow_mut();
    let Some(transaction) = held.as_mut() else {
        return Some(taken);
    };
    transaction.settles.push((taken, how));
    None
}

/// Publishes in order, then settles in order (RabbitMQ's order), then waits for every store.
async fn commit(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    transaction: Transaction,
) -> Result<(), HandleError> {
    let mut stored = Vec::new();
    for publishing in transaction.publishes {
        stored.extend(super::basic::publish_now(conn, channel, publishing).await?);
    }
    for (taken, how) in transaction.settles {
        super::basic::settle_all(conn, channel, taken, how).await;
    }
    let mut failed = false;
    for store in stored {
        failed |= store.wait().await.is_err();
    }
    if failed {
        return Err(AmqpError::precondition("partial tx completion").into());
    }
    Ok(())
}
