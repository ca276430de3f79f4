//! The queue's side of a channel's global prefetch (basic.qos global=true): a consumer whose
//! channel has one delivers only with credit its channel granted. Runs on the queue's owner.
//!
//! The channel (on its connection's shard, `amqp/channel_credit.rs`) holds the count; queues of
//! its consumers may live on any shard. Rather than share a counter between shards, a queue asks
//! and the channel grants, as RabbitMQ's queues ask their channel's limiter:
//!
//! ```text
//!  queue owner                                    connection shard (channel)
//!  ready > 0, consumer has own room, no credit ──Want(count)──►  room = limit − unacked − granted
//!                                              ◄──grant(n ≤ room)── granted += n
//!  delivers up to n (each Delivery names the grant's epoch)──►  granted −= 1, unacked += 1
//!  what it could not use at once              ──Unused(rest)──►  granted −= rest
//!                                                 ack (settle)   unacked −= 1, grant to Wants
//! ```
//!
//! A grant is used in the dispatch that receives it and the rest returned at once, so credit is
//! never parked at a queue with nothing to deliver while another queue of the channel waits. A
//! consumer asks once and asks again only after its grant (`asked`), so a want is never lost nor
//! doubled; one the channel cannot serve waits in the channel's list until an ack frees room.
//! Epochs tell grants of an earlier limit (basic.qos changed meanwhile) from current ones.

use std::sync::Arc;

use crate::queues::ConsumerId;

use super::{dispatch, find, owner_of, Outbound, Queue};

/// One consumer's channel credit.
pub(super) struct Credit {
    /// The channel has a global prefetch: deliveries need credit.
    limited: bool,
    /// What the grant being used has left.
    granted: u32,
    epoch: u64,
    /// A Want is on its way or waiting at the channel.
    asked: bool,
}

impl Credit {
    pub(super) fn new(limited: bool) -> Credit {
        Credit {
            limited,
            granted: 0,
            epoch: 0,
            asked: false,
        }
    }

    pub(super) fn may_deliver(&self) -> bool {
        !self.limited || self.granted > 0
    }

    /// Uses one credit for a delivery; its epoch, or `None` when the consumer is not limited.
    pub(super) fn take_one(&mut self) -> Option<u64> {
        if !self.limited {
            return None;
        }
        self.granted = self.granted.saturating_sub(1);
        Some(self.epoch)
    }
}

/// After a dispatch: every limited consumer that could take a ready message but has no credit
/// asks its channel (once).
pub(super) fn ask(queue: &mut Queue) {
    let ready = queue.state.counts().ready;
    if ready == 0 {
        return;
    }
    let count = if queue.spec.single_active {
        queue.consumers.len().min(1)
    } else {
        queue.consumers.len()
    };
    for consumer in &mut queue.consumers[..count] {
        let credit = &consumer.credit;
        if !credit.limited || credit.asked || credit.granted > 0 || consumer.waiting {
            continue;
        }
        if !consumer.has_own_room() {
            continue;
        }
        let own_room = match consumer.spec.prefetch {
            0 => ready,
            prefetch => (u64::from(prefetch)).saturating_sub(consumer.in_flight as u64),
        };
        consumer.credit.asked = true;
        let want = Outbound::Want {
            channel: consumer.spec.channel,
            consumer_tag: consumer.spec.tag.clone(),
            count: u32::try_from(own_room.min(ready)).unwrap_or(u32::MAX),
        };
        send(&consumer.spec.sink, want);
    }
}

/// Sends to a connection's inbox without blocking the owner: a full inbox gets it later.
fn send(sink: &flume::Sender<Outbound>, outbound: Outbound) {
    match sink.try_send(outbound) {
        Ok(()) | Err(flume::TrySendError::Disconnected(_)) => {}
        Err(flume::TrySendError::Full(outbound)) => {
            let sink = sink.clone();
            glommio::spawn_local(async move {
                let _ = sink.send_async(outbound).await;
            })
            .detach();
        }
    }
}

/// Credit from a channel for one of its consumers.
pub struct Grant {
    pub owner: ConsumerId,
    pub channel: u16,
    pub tag: Arc<str>,
    pub count: u32,
    pub epoch: u64,
    /// The channel's connection: what is left goes back there, also when the consumer is gone.
    pub sink: flume::Sender<Outbound>,
}

/// A grant arrives: used now by its consumer, and what is left goes back at once.
pub fn grant(name: &str, grant: Grant) {
    let unused = |count| Outbound::Unused {
        channel: grant.channel,
        epoch: grant.epoch,
        count,
    };
    let Some(queue) = find(name) else {
        send(&grant.sink, unused(grant.count));
        return;
    };
    if !set_grant(&mut queue.borrow_mut(), &grant) {
        send(&grant.sink, unused(grant.count));
        return;
    }
    dispatch(&queue);
    let left = consumer_of(&mut queue.borrow_mut(), grant.owner, &grant.tag)
        .map_or(0, |consumer| {
            std::mem::replace(&mut consumer.credit.granted, 0)
        });
    if left > 0 {
        send(&grant.sink, unused(left));
    }
}

/// Gives the consumer its grant; false when it is gone or no longer limited.
fn set_grant(queue: &mut Queue, grant: &Grant) -> bool {
    let Some(consumer) = consumer_of(queue, grant.owner, &grant.tag) else {
        return false;
    };
    if !consumer.credit.limited {
        return false;
    }
    consumer.credit = Credit {
        limited: true,
        granted: grant.count,
        epoch: grant.epoch,
        asked: false,
    };
    true
}

fn consumer_of<'a>(
    queue: &'a mut Queue,
    owner: ConsumerId,
    tag: &str,
) -> Option<&'a mut super::Consumer> {
    queue
        .consumers
        .iter_mut()
        .find(|c| owner_of(&c.spec) == owner && &*c.spec.tag == tag)
}

/// basic.qos global changed on `owner`'s channel between none and some: its consumers here
/// start or stop asking for credit (RabbitMQ applies a global limit to existing consumers too).
pub fn limit_channel(name: &str, owner: ConsumerId, limited: bool) {
    let Some(queue) = find(name) else {
        return;
    };
    for consumer in queue.borrow_mut().consumers.iter_mut() {
        if owner_of(&consumer.spec) == owner {
            consumer.credit = Credit::new(limited);
        }
    }
    dispatch(&queue);
}
