//! An AMQP publisher: one thread that writes pipelined basic.publish messages (publisher confirms
//! on) to every queue in turn, keeping at most `--confirm-window` unconfirmed, and one confirm
//! reader thread that reads basic.ack / basic.nack and times each message from its write to its
//! confirm.
//!
//! Concurrency rule: the publisher thread owns the socket's write half, the reader its read half.
//! The publisher sends the reader, over a channel and before writing them, the send time of each
//! run of messages it writes (delivery tags are consecutive from 1 on the channel, so a run is its
//! first tag and count); `outstanding` (published minus confirmed) is the window, counted down by
//! the reader, which unparks the publisher. Counters go to `Shared` once per confirm frame.

use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use amq_protocol::protocol::{basic, connection, AMQPClass};
use anyhow::{bail, ensure, Context, Result};
use hdrhistogram::Histogram;

use super::connection::{self as amqp_connection, Connection, FrameReader, CHANNEL};
use super::frames::{self, Frame, PublishTemplate};
use super::workload::AmqpWorkload;
use crate::stats::{self, CpuPlan, Shared};

/// Everything one publisher thread needs; the connection is open and in confirm mode.
pub struct PublisherPlan {
    pub index: usize,
    pub connection: Connection,
    pub workload: Arc<AmqpWorkload>,
    /// Messages this publisher sends (`--messages`), if bounded by count.
    pub quota: Option<u64>,
    /// Clock time at which to stop publishing (`--duration`).
    pub stop_at_ns: Option<u64>,
    pub shared: Arc<Shared>,
    pub cpus: Arc<CpuPlan>,
}

/// A run of consecutive delivery tags written at one time.
#[derive(Debug, Clone, Copy)]
struct Sent {
    first_tag: u64,
    count: u64,
    sent_ns: u64,
}

/// Most messages written with one `write` (one send time).
const MESSAGES_PER_WRITE: u64 = 128;
/// How long the publisher waits for its last confirms before it fails the run.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);

/// Spawns the publisher thread; it returns the publish-confirm latency histogram.
pub fn spawn(plan: PublisherPlan) -> Result<JoinHandle<Result<Histogram<u64>>>> {
    std::thread::Builder::new()
        .name(format!("amqp-publisher-{}", plan.index))
        .spawn(move || {
            plan.cpus.pin();
            let shared = plan.shared.clone();
            let result = publish(plan);
            if let Err(error) = &result {
                shared.fail("publisher", error);
            }
            result
        })
        .context("spawning a publisher thread")
}

fn publish(plan: PublisherPlan) -> Result<Histogram<u64>> {
    let PublisherPlan {
        index,
        connection,
        workload,
        quota,
        stop_at_ns,
        shared,
        ..
    } = plan;
    let templates: Vec<PublishTemplate> = workload
        .queues
        .iter()
        .map(|queue| {
            PublishTemplate::new(
                CHANNEL,
                queue,
                workload.message_bytes,
                workload.durable,
                connection.frame_max,
            )
        })
        .collect::<Result<_>>()?;
    let mut stream = connection.stream;
    let read_half = stream
        .try_clone()
        .context("cloning the publisher's socket")?;
    let outstanding = Arc::new(AtomicU64::new(0));
    let (sent_tx, sent_rx) = channel();
    let reader = spawn_confirm_reader(ConfirmReader {
        stream: read_half,
        reader: connection.reader,
        sent: sent_rx,
        unconfirmed: Unconfirmed::default(),
        outstanding: outstanding.clone(),
        publisher: std::thread::current(),
        shared: shared.clone(),
        payload_bytes: workload.message_bytes as u64,
        histogram: stats::new_histogram(),
    })?;
    let mut writer = Writer {
        stream: &mut stream,
        templates: &templates,
        // Each publisher starts at its own queue so that publishers spread over queues.
        next_queue: index % templates.len(),
        next_tag: 1,
        sent: sent_tx,
        outstanding: &outstanding,
        window: workload.confirm_window,
        shared: &shared,
        buffer: Vec::new(),
        rate_msgs_per_s: workload
            .rate_msgs_per_s
            .map(|rate| rate / f64::from(workload.producers)),
        rate_start_ns: None,
    };
    let outcome = writer
        .run(quota, stop_at_ns)
        .and_then(|()| writer.wait_confirmed());
    drop(writer);
    // Close the connection either way: the reader ends at the close-ok (or at the error).
    let mut close = Vec::new();
    frames::encode_method(0, amqp_connection::close_method(), &mut close)?;
    let closed = stream.write_all(&close).context("closing the publisher");
    let histogram = match reader.join() {
        Ok(result) => result?,
        Err(_) => bail!("the confirm reader panicked"),
    };
    outcome?;
    closed?;
    Ok(histogram)
}

struct Writer<'a> {
    stream: &'a mut TcpStream,
    templates: &'a [PublishTemplate],
    next_queue: usize,
    next_tag: u64,
    sent: Sender<Sent>,
    outstanding: &'a AtomicU64,
    window: u64,
    shared: &'a Shared,
    buffer: Vec<u8>,
    /// This publisher's share of `--rate`, and when its schedule started.
    rate_msgs_per_s: Option<f64>,
    rate_start_ns: Option<u64>,
}

impl Writer<'_> {
    /// Publishes until the quota or the stop time, as fast as the confirm window allows.
    fn run(&mut self, quota: Option<u64>, stop_at_ns: Option<u64>) -> Result<()> {
        let mut published = 0u64;
        loop {
            if self.shared.aborted() {
                return Ok(());
            }
            let now_ns = self.shared.clock.now_ns();
            let left = match (quota, stop_at_ns) {
                (Some(quota), _) => quota - published,
                (None, Some(stop_ns)) if now_ns < stop_ns => u64::MAX,
                _ => 0,
            };
            if left == 0 {
                return Ok(());
            }
            let room = self
                .window
                .saturating_sub(self.outstanding.load(Ordering::Acquire));
            if room == 0 {
                // The reader unparks this thread at each confirm; the timeout only guards
                // against a missed wake-up.
                std::thread::park_timeout(Duration::from_millis(10));
                continue;
            }
            let (due, send_ns) = self.schedule(published, now_ns);
            if due == 0 {
                std::thread::sleep(Duration::from_nanos(send_ns.saturating_sub(now_ns)));
                continue;
            }
            let count = room.min(left).min(due).min(MESSAGES_PER_WRITE);
            self.write_messages(count, send_ns)?;
            published += count;
        }
    }

    /// With `--rate`: how many messages are due now, and the intended send time of the next one
    /// (the send time its latencies count from, so that a publisher held back by a slow broker
    /// shows in them: no coordinated omission). Without: all of them, now.
    fn schedule(&mut self, published: u64, now_ns: u64) -> (u64, u64) {
        let Some(rate) = self.rate_msgs_per_s else {
            return (u64::MAX, now_ns);
        };
        let start_ns = *self.rate_start_ns.get_or_insert(now_ns);
        let due = ((now_ns - start_ns) as f64 * rate / 1e9) as u64 + 1;
        let next_ns = start_ns + (published as f64 * 1e9 / rate) as u64;
        (due.saturating_sub(published), next_ns)
    }

    fn write_messages(&mut self, count: u64, send_ns: u64) -> Result<()> {
        self.buffer.clear();
        for _ in 0..count {
            self.templates[self.next_queue].append(send_ns, &mut self.buffer);
            self.next_queue = (self.next_queue + 1) % self.templates.len();
        }
        // The reader learns the send time before any confirm for these tags can arrive.
        self.sent
            .send(Sent {
                first_tag: self.next_tag,
                count,
                sent_ns: send_ns,
            })
            .context("the confirm reader stopped")?;
        self.next_tag += count;
        self.outstanding.fetch_add(count, Ordering::AcqRel);
        self.stream
            .write_all(&self.buffer)
            .context("publishing to the broker")?;
        self.shared.sent.add(count, self.buffer.len() as u64);
        Ok(())
    }

    /// Waits until the broker has confirmed (or refused) every message published.
    fn wait_confirmed(&mut self) -> Result<()> {
        let deadline_ns = self.shared.clock.now_ns() + CONFIRM_TIMEOUT.as_nanos() as u64;
        while self.outstanding.load(Ordering::Acquire) > 0 {
            if self.shared.aborted() {
                return Ok(());
            }
            ensure!(
                self.shared.clock.now_ns() < deadline_ns,
                "{} messages still unconfirmed {CONFIRM_TIMEOUT:?} after the last publish",
                self.outstanding.load(Ordering::Acquire)
            );
            std::thread::park_timeout(Duration::from_millis(10));
        }
        Ok(())
    }
}

/// The send time of every published, unsettled delivery tag, in tag order. Pure bookkeeping: the
/// broker may confirm one by one, several at once (`multiple`) and, across queues, out of order.
#[derive(Debug)]
struct Unconfirmed {
    /// Send time of every tag from `next_tag - pending.len()`; `None` once settled out of order
    /// (the front is popped as soon as it is settled).
    pending: VecDeque<Option<u64>>,
    /// The tag after the last one added.
    next_tag: u64,
}

impl Default for Unconfirmed {
    fn default() -> Self {
        // Delivery tags on a channel start at 1.
        Unconfirmed {
            pending: VecDeque::new(),
            next_tag: 1,
        }
    }
}

impl Unconfirmed {
    fn add(&mut self, run: Sent) {
        assert_eq!(run.first_tag, self.next_tag, "runs arrive in tag order");
        self.pending
            .extend(std::iter::repeat_n(Some(run.sent_ns), run.count as usize));
        self.next_tag += run.count;
    }

    /// Settles `tag`, or with `multiple` every unsettled tag up to it; returns their send times.
    fn settle(&mut self, tag: u64, multiple: bool) -> Result<Vec<u64>> {
        ensure!(
            tag < self.next_tag,
            "the broker confirmed tag {tag}, never published"
        );
        let base = self.next_tag - self.pending.len() as u64;
        let mut settled = Vec::new();
        if multiple {
            // Tags below `base` were settled already: a multiple confirm may cover them again.
            let through = if tag >= base { tag - base + 1 } else { 0 };
            for _ in 0..through {
                if let Some(Some(sent_ns)) = self.pending.pop_front() {
                    settled.push(sent_ns);
                }
            }
        } else {
            let sent_ns = tag
                .checked_sub(base)
                .and_then(|index| self.pending.get_mut(index as usize))
                .and_then(Option::take)
                .with_context(|| format!("the broker confirmed tag {tag} twice"))?;
            settled.push(sent_ns);
        }
        while let Some(None) = self.pending.front() {
            self.pending.pop_front();
        }
        Ok(settled)
    }
}

struct ConfirmReader {
    stream: TcpStream,
    reader: FrameReader,
    sent: Receiver<Sent>,
    unconfirmed: Unconfirmed,
    outstanding: Arc<AtomicU64>,
    publisher: Thread,
    shared: Arc<Shared>,
    payload_bytes: u64,
    histogram: Histogram<u64>,
}

fn spawn_confirm_reader(reader: ConfirmReader) -> Result<JoinHandle<Result<Histogram<u64>>>> {
    std::thread::Builder::new()
        .name("amqp-confirms".to_owned())
        .spawn(move || {
            let publisher = reader.publisher.clone();
            let shared = reader.shared.clone();
            let result = reader.run();
            if let Err(error) = &result {
                shared.fail("confirm reader", error);
            }
            // Never leave the publisher parked on a window that will not open.
            publisher.unpark();
            result
        })
        .context("spawning a confirm reader")
}

impl ConfirmReader {
    fn run(mut self) -> Result<Histogram<u64>> {
        // Reads block until the publisher's close-ok; a silent broker fails the run.
        self.stream.set_read_timeout(Some(CONFIRM_TIMEOUT))?;
        loop {
            let method = match self.reader.next(&mut self.stream)? {
                None => bail!("no confirm from the broker for {CONFIRM_TIMEOUT:?}"),
                Some(Frame::Heartbeat) => continue,
                Some(Frame::Method(_, method)) => *method,
                Some(other) => bail!("unexpected frame on a publishing channel: {other:?}"),
            };
            match method {
                AMQPClass::Basic(basic::AMQPMethod::Ack(ack)) => {
                    self.confirm(ack.delivery_tag, ack.multiple, true)?;
                }
                AMQPClass::Basic(basic::AMQPMethod::Nack(nack)) => {
                    self.confirm(nack.delivery_tag, nack.multiple, false)?;
                }
                AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {
                    return Ok(self.histogram);
                }
                other => return Err(amqp_connection::unexpected(&other)),
            }
        }
    }

    /// Settles `tag` (and with `multiple` every earlier unsettled tag): acked ones count as
    /// published and are timed, nacked ones count as refused.
    fn confirm(&mut self, tag: u64, multiple: bool, acked: bool) -> Result<()> {
        while tag >= self.unconfirmed.next_tag {
            let run = self
                .sent
                .recv()
                .context("a confirm for a message that was never published")?;
            self.unconfirmed.add(run);
        }
        let now_ns = self.shared.clock.now_ns();
        let settled = self.unconfirmed.settle(tag, multiple)?;
        self.settle(&settled, now_ns, acked);
        Ok(())
    }

    fn settle(&mut self, sent_times: &[u64], now_ns: u64, acked: bool) {
        let count = sent_times.len() as u64;
        if count == 0 {
            return;
        }
        if acked {
            let mut latency_sum_ns = 0u64;
            for &sent_ns in sent_times {
                let latency_ns = now_ns.saturating_sub(sent_ns);
                stats::record(&mut self.histogram, latency_ns, 1);
                latency_sum_ns += latency_ns;
            }
            self.shared.produced.add(count, count * self.payload_bytes);
            self.shared
                .produced
                .add_latency(latency_sum_ns / count, count);
            self.shared
                .produce_end_ns
                .fetch_max(now_ns, Ordering::Relaxed);
        } else {
            self.shared
                .produce_errors
                .fetch_add(count, Ordering::Relaxed);
        }
        self.outstanding.fetch_sub(count, Ordering::AcqRel);
        self.publisher.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first_tag: u64, count: u64, sent_ns: u64) -> Sent {
        Sent {
            first_tag,
            count,
            sent_ns,
        }
    }

    #[test]
    fn confirms_settle_each_tag_once_in_any_order() {
        let mut unconfirmed = Unconfirmed::default();
        unconfirmed.add(run(1, 3, 100));
        unconfirmed.add(run(4, 3, 200));
        // Out of order (another queue's message confirmed first), then a multiple covering it.
        assert_eq!(unconfirmed.settle(5, false).unwrap(), [200]);
        assert_eq!(unconfirmed.settle(2, false).unwrap(), [100]);
        assert_eq!(unconfirmed.settle(6, true).unwrap(), [100, 100, 200, 200]);
        assert!(unconfirmed.pending.is_empty());
        // A multiple confirm that covers nothing new settles nothing.
        assert!(unconfirmed.settle(6, true).unwrap().is_empty());
        // Twice, or a tag never published: errors, not panics.
        assert!(unconfirmed.settle(5, false).is_err());
        assert!(unconfirmed.settle(7, false).is_err());
        unconfirmed.add(run(7, 2, 300));
        assert_eq!(unconfirmed.settle(7, true).unwrap(), [300]);
        assert_eq!(unconfirmed.settle(8, false).unwrap(), [300]);
        assert!(unconfirmed.pending.is_empty());
    }
}
