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
        pending: VecDeque::new(),
        next_tag: 1,
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
            let count = room.min(left).min(MESSAGES_PER_WRITE);
            self.write_messages(count, now_ns)?;
            published += count;
        }
    }

    fn write_messages(&mut self, count: u64, now_ns: u64) -> Result<()> {
        self.buffer.clear();
        for _ in 0..count {
            self.templates[self.next_queue].append(now_ns, &mut self.buffer);
            self.next_queue = (self.next_queue + 1) % self.templates.len();
        }
        // The reader learns the send time before any confirm for these tags can arrive.
        self.sent
            .send(Sent {
                first_tag: self.next_tag,
                count,
                sent_ns: now_ns,
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

struct ConfirmReader {
    stream: TcpStream,
    reader: FrameReader,
    sent: Receiver<Sent>,
    /// Send time of every unconfirmed tag from `next_tag - pending.len()`; `None` once confirmed
    /// out of order (the front is popped as soon as it is confirmed).
    pending: VecDeque<Option<u64>>,
    /// The tag after the last one moved into `pending`.
    next_tag: u64,
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
        while tag >= self.next_tag {
            let run = self
                .sent
                .recv()
                .context("a confirm for a message that was never published")?;
            assert_eq!(run.first_tag, self.next_tag, "runs arrive in tag order");
            self.pending
                .extend(std::iter::repeat_n(Some(run.sent_ns), run.count as usize));
            self.next_tag += run.count;
        }
        let base = self.next_tag - self.pending.len() as u64;
        ensure!(
            tag >= base || multiple,
            "the broker confirmed tag {tag} twice"
        );
        let now_ns = self.shared.clock.now_ns();
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
            let slot = &mut self.pending[(tag - base) as usize];
            let sent_ns = slot
                .take()
                .with_context(|| format!("the broker confirmed tag {tag} twice"))?;
            settled.push(sent_ns);
        }
        while let Some(None) = self.pending.front() {
            self.pending.pop_front();
        }
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
