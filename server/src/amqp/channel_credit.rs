//! A channel's global prefetch (basic.qos global=true, RabbitMQ 3.3+): one limit on the
//! unacknowledged deliveries of all the channel's consumers, whatever queues and shards they
//! consume from. Lives on the connection's shard, in the channel; `RefCell`s are never borrowed
//! across an `.await`.
//!
//! The channel holds the count and grants credit to queues that ask (the protocol is drawn in
//! `queue_owner/credit.rs`). Why this way round: a queue may live on another shard, shards
//! share nothing mutable, and holding deliveries back on the connection side would leave them
//! acquired by this channel (unavailable to other consumers, flagged redelivered if the channel
//! closed) while the client never saw them. Asking first keeps a message ready in its queue
//! until the channel has room for it, as RabbitMQ's queues ask their channel's limiter.
//!
//! What counts (RabbitMQ's limiter): every consumer delivery that needs an ack, from when the
//! connection writes it until it is acked, nacked, rejected or recovered (basic.get is neither
//! limited nor counted); `granted` is credit out at queues and not yet used or returned.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use super::channel::{Channel, QueueAt};
use super::connection::Conn;
use super::queue_owner::credit::{self, Grant};
use super::queue_owner::{on_owner, owner_key};
use crate::shard::mesh::Reply;

/// The channel's global prefetch and what it has given out.
#[derive(Default)]
pub struct ChannelCredit {
    /// 0 = no global limit.
    limit: u16,
    /// Consumer deliveries written and not settled yet.
    unacked: u32,
    /// Credit out at queues, not yet delivered or returned.
    granted: u32,
    /// Changes whenever the limit is set or lifted: a grant, a delivery or an unused credit
    /// of an earlier epoch does not touch `granted`.
    epoch: u64,
    /// Consumers that asked and wait for room: (tag, how many they could take).
    wants: VecDeque<(Arc<str>, u32)>,
}

impl ChannelCredit {
    pub fn limited(&self) -> bool {
        self.limit > 0
    }

    fn room(&self) -> u32 {
        u32::from(self.limit).saturating_sub(self.unacked + self.granted)
    }
}

thread_local! {
    /// Epochs are unique on the shard, so credit returned to a reopened channel of the same
    /// number is never taken for its own.
    static NEXT_EPOCH: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
}

fn next_epoch() -> u64 {
    NEXT_EPOCH.with(|next| {
        let epoch = next.get();
        next.set(epoch + 1);
        epoch
    })
}

/// basic.qos global=true with `limit` (0 lifts it), and what RabbitMQ 3.10 does on
/// global=false too: it lifts the global limit (`limit` 0 here).
pub async fn set_limit(conn: &Rc<Conn>, channel: &Rc<Channel>, limit: u16) {
    let flipped = {
        let mut credit = channel.credit.borrow_mut();
        let flipped = credit.limited() != (limit > 0);
        credit.limit = limit;
        if flipped {
            credit.epoch = next_epoch();
            credit.granted = 0;
            credit.wants.clear();
        }
        flipped
    };
    if flipped {
        limit_consumers(conn, channel, limit > 0).await;
    }
    serve(conn, channel).await;
}

/// Tells every queue the channel consumes from that its consumers now ask for credit, or stop.
async fn limit_consumers(conn: &Rc<Conn>, channel: &Channel, limited: bool) {
    let mut queues: Vec<_> = channel.consumers.borrow().values().cloned().collect();
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    queues.dedup_by(|a, b| a.name == b.name);
    let owner = owner_key(conn.id, channel.id);
    for queue in queues {
        let name = queue.name.clone();
        let _ = on_owner(&conn.shard, queue.shard, move |_, _reply: Reply<()>| {
            credit::limit_channel(&name, owner, limited);
        })
        .await;
    }
}

/// A consumer delivery is written: it used its grant, and counts until settled.
pub fn delivered(channel: &Channel, grant_epoch: Option<u64>, no_ack: bool) {
    let mut credit = channel.credit.borrow_mut();
    if grant_epoch.is_some() && grant_epoch == Some(credit.epoch) {
        credit.granted = credit.granted.saturating_sub(1);
    }
    if !no_ack {
        credit.unacked += 1;
    }
}

/// `count` counted deliveries were settled: their room goes to consumers that wait.
pub async fn settled(conn: &Rc<Conn>, channel: &Channel, count: u32) {
    if count == 0 {
        return;
    }
    {
        let mut credit = channel.credit.borrow_mut();
        credit.unacked = credit.unacked.saturating_sub(count);
    }
    serve(conn, channel).await;
}

/// A queue's consumer asks for credit.
pub async fn wanted(conn: &Rc<Conn>, channel: &Channel, tag: Arc<str>, count: u32) {
    {
        let mut credit = channel.credit.borrow_mut();
        // Lifted meanwhile: the queue was told, and its consumer no longer asks.
        if !credit.limited() {
            return;
        }
        credit.wants.push_back((tag, count));
    }
    serve(conn, channel).await;
}

/// Credit a queue could not use comes back.
pub async fn unused(conn: &Rc<Conn>, channel: &Channel, epoch: u64, count: u32) {
    {
        let mut credit = channel.credit.borrow_mut();
        if credit.epoch != epoch {
            return;
        }
        credit.granted = credit.granted.saturating_sub(count);
    }
    serve(conn, channel).await;
}

/// Grants room to waiting consumers, first come first served.
async fn serve(conn: &Rc<Conn>, channel: &Channel) {
    loop {
        let Some((grant, queue)) = next_grant(conn, channel) else {
            return;
        };
        let _ = on_owner(&conn.shard, queue.shard, move |_, _reply: Reply<()>| {
            credit::grant(&queue.name, grant);
        })
        .await;
    }
}

/// The next grant to send, counted as out: the first waiting consumer still on the channel.
fn next_grant(conn: &Conn, channel: &Channel) -> Option<(Grant, QueueAt)> {
    let mut credit = channel.credit.borrow_mut();
    loop {
        let room = credit.room();
        if !credit.limited() || room == 0 {
            return None;
        }
        let (tag, asked) = credit.wants.pop_front()?;
        // A consumer cancelled meanwhile needs nothing.
        let Some(queue) = channel.consumers.borrow().get(&*tag).cloned() else {
            continue;
        };
        let count = asked.clamp(1, room);
        credit.granted += count;
        let grant = Grant {
            owner: owner_key(conn.id, channel.id),
            channel: channel.id,
            tag,
            count,
            epoch: credit.epoch,
            sink: conn.sink.clone(),
        };
        return Some((grant, queue));
    }
}
