//! Publisher confirms (confirm.select): once a channel is in confirm mode, every publish gets a
//! sequence number and a basic.ack when every queue it went to has stored it under the queue's
//! durability (persistent messages in durable queues: on the device; otherwise written), or a
//! basic.nack when one could not. Confirms go out in publish order from one task per channel.
//!
//! Runs on the connection's shard.

use std::cell::Cell;
use std::rc::Rc;

use amq_protocol::protocol::{basic, confirm, AMQPClass};

use super::basic::Stored;
use super::channel::Channel;
use super::connection::{Conn, HandleError};
use super::error::AmqpError;

/// Runs of publishes (`publish_run.rs`, at most 1,024 publishes each) or single publishes
/// awaiting their confirm, per channel.
const CONFIRMS_IN_FLIGHT: usize = 65_536;

/// A channel's confirm mode.
pub struct Confirms {
    next: Cell<u64>,
    pending: flume::Sender<Pending>,
}

/// Publishes `first..=last` (a run stored together, or one publish) and where their stores
/// are reported: one answer for all of them.
struct Pending {
    first: u64,
    last: u64,
    stored: Vec<Stored>,
}

pub async fn handle(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    method: confirm::AMQPMethod,
) -> Result<(), HandleError> {
    let confirm::AMQPMethod::Select(select) = method else {
        return Err(AmqpError::command_invalid("unexpected confirm method").into());
    };
    if channel.tx.borrow().is_some() {
        return Err(AmqpError::precondition("cannot switch from tx to confirm mode").into());
    }
    if channel.confirms.borrow().is_none() {
        let (pending, queue) = flume::bounded(CONFIRMS_IN_FLIGHT);
        *channel.confirms.borrow_mut() = Some(Confirms {
            next: Cell::new(1),
            pending,
        });
        glommio::spawn_local(confirm_loop(conn.clone(), channel.id, queue)).detach();
    }
    if !select.nowait {
        let ok = confirm::AMQPMethod::SelectOk(confirm::SelectOk {});
        conn.send_method(channel.id, AMQPClass::Confirm(ok)).await?;
    }
    Ok(())
}

/// A publish finished routing: in confirm mode it waits for its confirm; otherwise nothing
/// waits for the stores (they complete on their own).
pub async fn published(conn: &Rc<Conn>, channel: &Rc<Channel>, stored: Vec<Stored>) {
    published_run(conn, channel, 1, stored).await;
}

/// `count` publishes (a run, `publish_run.rs`) whose stores all report in `stored`: they take
/// the next `count` sequence numbers and are confirmed together.
pub async fn published_run(
    _conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    count: u64,
    stored: Vec<Stored>,
) {
    let queued = {
        let confirms = channel.confirms.borrow();
        confirms.as_ref().map(|confirms| {
            let first = confirms.next.get();
            confirms.next.set(first + count);
            let last = first + count - 1;
            (
                Pending {
                    first,
                    last,
                    stored,
                },
                confirms.pending.clone(),
            )
        })
    };
    if let Some((publishes, pending)) = queued {
        // Bounded: a channel with this many unconfirmed runs waits here (backpressure).
        let _ = pending.send_async(publishes).await;
    }
}

/// Confirms in publish order. A publish whose stores are done by the time the one before it is
/// confirmed joins its basic.ack (`multiple`), so that a busy channel gets one ack per run of
/// stored publishes rather than one per publish.
async fn confirm_loop(conn: Rc<Conn>, channel: u16, queue: flume::Receiver<Pending>) {
    let mut held = None;
    loop {
        let Pending {
            first,
            last: run_last,
            stored,
        } = match held.take() {
            Some(next) => next,
            None => match queue.recv_async().await {
                Ok(next) => next,
                Err(_) => return,
            },
        };
        let mut ok = true;
        for store in stored {
            ok &= store.wait().await.is_ok();
        }
        let mut last = run_last;
        // A nack is sent alone (for its run); an ack takes along the publishes stored by now.
        if ok {
            while let Ok(mut next) = queue.try_recv() {
                if !all_settled(&mut next.stored).await {
                    held = Some(next);
                    break;
                }
                last = next.last;
            }
        }
        if !send_confirm(&conn, channel, first, last, ok).await {
            return;
        }
    }
}

/// True when every store is done and succeeded (a failed one waits its turn, to be nacked).
async fn all_settled(stored: &mut [Stored]) -> bool {
    for store in stored {
        if store.settled().await != Some(true) {
            return false;
        }
    }
    true
}

/// basic.ack, or basic.nack, for `first..=last` (`multiple` when more than one: every
/// publish before `first` is confirmed already). False once the channel or connection is gone.
async fn send_confirm(conn: &Conn, channel: u16, first: u64, last: u64, ok: bool) -> bool {
    let method = if ok {
        basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: last,
            multiple: last > first,
        })
    } else {
        basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: last,
            multiple: last > first,
            requeue: false,
        })
    };
    let open = conn.channel(channel).is_some_and(|c| !c.closing.get());
    open && conn
        .send_method(channel, AMQPClass::Basic(method))
        .await
        .is_ok()
}
