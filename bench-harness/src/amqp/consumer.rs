//! An AMQP consumer: one thread with one connection and channel, consuming its queues with manual
//! acknowledgements (`--prefetch` per consumer, one ack with `multiple` every `--ack-every`
//! deliveries or when the socket goes quiet), timing each message from its send time (written in
//! the body by the publisher) to its arrival.
//!
//! Concurrency rule: the thread owns its connection; it adds its counts to `Shared` in batches
//! (at most `FLUSH_MESSAGES` at a time and whenever the socket goes quiet) and stops when every
//! publisher is done and the consumers together have received everything the broker confirmed,
//! or when the main thread's drain deadline sets `stop`. It then cancels its consumers and counts
//! what the broker delivered before the cancel-ok, so that extra deliveries fail the count check.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use amq_protocol::protocol::{basic, AMQPClass};
use anyhow::{bail, ensure, Context, Result};
use hdrhistogram::Histogram;

use super::connection::{self as amqp_connection, Connection};
use super::frames::{self, Frame};
use crate::stats::{self, CpuPlan, Shared};

pub struct ConsumerPlan {
    pub index: usize,
    /// Open, with basic.qos and basic.consume done for every tag.
    pub connection: Connection,
    pub consumer_tags: Vec<String>,
    pub ack_every: u64,
    pub payload_bytes: u64,
    pub shared: Arc<Shared>,
    pub cpus: Arc<CpuPlan>,
    /// Set by the main thread when consumers must stop (drain deadline).
    pub stop: Arc<AtomicBool>,
}

/// Counts added to `Shared` after at most this many messages.
const FLUSH_MESSAGES: u64 = 256;
/// The socket read timeout: how soon a quiet consumer acks what it holds and checks for the end.
const QUIET: Duration = Duration::from_millis(20);
/// How long the broker may take to answer the cancels at the end.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(30);

pub fn spawn(plan: ConsumerPlan) -> Result<JoinHandle<Result<Histogram<u64>>>> {
    std::thread::Builder::new()
        .name(format!("amqp-consumer-{}", plan.index))
        .spawn(move || {
            plan.cpus.pin();
            let shared = plan.shared.clone();
            let result = Consumer::new(plan).and_then(Consumer::run);
            if let Err(error) = &result {
                shared.fail("consumer", error);
            }
            result
        })
        .context("spawning a consumer thread")
}

/// Where the consumer is inside a delivery (method, content header, body frames).
#[derive(Debug, Clone, Copy)]
enum Delivery {
    Idle,
    Header {
        tag: u64,
        redelivered: bool,
    },
    Body {
        tag: u64,
        left: u64,
        sent_ns: Option<u64>,
    },
}

#[derive(Default)]
struct Tally {
    messages: u64,
    latency_sum_us: u64,
    latency_samples: u64,
    last_ns: u64,
    redelivered: u64,
}

struct Consumer {
    connection: Connection,
    plan_tags: Vec<String>,
    ack_every: u64,
    payload_bytes: u64,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    delivery: Delivery,
    tally: Tally,
    /// The last delivery tag received, and how many deliveries are not yet acked.
    last_tag: u64,
    unacked: u64,
    cancels_pending: usize,
    histogram: Histogram<u64>,
    out: Vec<u8>,
}

impl Consumer {
    fn new(plan: ConsumerPlan) -> Result<Self> {
        plan.connection.stream.set_read_timeout(Some(QUIET))?;
        Ok(Consumer {
            connection: plan.connection,
            plan_tags: plan.consumer_tags,
            ack_every: plan.ack_every,
            payload_bytes: plan.payload_bytes,
            shared: plan.shared,
            stop: plan.stop,
            delivery: Delivery::Idle,
            tally: Tally::default(),
            last_tag: 0,
            unacked: 0,
            cancels_pending: 0,
            histogram: stats::new_histogram(),
            out: Vec::new(),
        })
    }

    fn run(mut self) -> Result<Histogram<u64>> {
        loop {
            if self.shared.aborted() {
                return Ok(self.histogram);
            }
            if self.stop.load(Relaxed) || self.all_received() {
                break;
            }
            self.step()?;
        }
        self.cancel()?;
        self.ack()?;
        self.flush_tally();
        self.connection.close()?;
        Ok(self.histogram)
    }

    /// True once the publishers are done and every confirmed message has been received (by all
    /// consumers together).
    fn all_received(&mut self) -> bool {
        self.flush_tally();
        self.shared.producers_done.load(Relaxed)
            && self.shared.consumed[0].messages.load(Relaxed)
                >= self.shared.produced.messages.load(Relaxed)
    }

    /// Reads and handles one frame; on a quiet socket, acks what it holds and publishes counts.
    fn step(&mut self) -> Result<()> {
        let connection = &mut self.connection;
        match connection.reader.next(&mut connection.stream)? {
            None => {
                self.ack()?;
                self.flush_tally();
                Ok(())
            }
            Some(Frame::Heartbeat) => Ok(()),
            Some(Frame::Method(_, method)) => {
                let method = *method;
                self.on_method(method)
            }
            Some(Frame::Header(channel, header)) => match self.delivery {
                Delivery::Header { tag, redelivered } if channel == amqp_connection::CHANNEL => {
                    self.tally.redelivered += u64::from(redelivered);
                    self.delivery = Delivery::Body {
                        tag,
                        left: header.body_size,
                        sent_ns: None,
                    };
                    self.maybe_complete()
                }
                other => bail!("content header on channel {channel} out of place ({other:?})"),
            },
            Some(Frame::Body(channel, body)) => match self.delivery {
                Delivery::Body { tag, left, sent_ns } if channel == amqp_connection::CHANNEL => {
                    let body_len = body.len() as u64;
                    ensure!(
                        body_len <= left,
                        "a body frame past the announced body size"
                    );
                    self.delivery = Delivery::Body {
                        tag,
                        left: left - body_len,
                        sent_ns: sent_ns.or_else(|| frames::send_time(body)),
                    };
                    self.maybe_complete()
                }
                other => bail!("content body on channel {channel} out of place ({other:?})"),
            },
        }
    }

    fn on_method(&mut self, method: AMQPClass) -> Result<()> {
        match method {
            AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver)) => {
                ensure!(
                    matches!(self.delivery, Delivery::Idle),
                    "basic.deliver in the middle of another delivery"
                );
                self.delivery = Delivery::Header {
                    tag: deliver.delivery_tag,
                    redelivered: deliver.redelivered,
                };
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::CancelOk(_)) if self.cancels_pending > 0 => {
                self.cancels_pending -= 1;
                Ok(())
            }
            other => Err(amqp_connection::unexpected(&other)),
        }
    }

    /// Counts the delivery once its whole body is in, and acks every `ack_every`.
    fn maybe_complete(&mut self) -> Result<()> {
        let Delivery::Body {
            tag,
            left: 0,
            sent_ns,
        } = self.delivery
        else {
            return Ok(());
        };
        self.delivery = Delivery::Idle;
        let now_ns = self.shared.clock.now_ns();
        if let Some(sent_ns) = sent_ns {
            let latency_ns = now_ns.saturating_sub(sent_ns);
            stats::record(&mut self.histogram, latency_ns, 1);
            self.tally.latency_sum_us += latency_ns / 1000;
            self.tally.latency_samples += 1;
        }
        self.tally.messages += 1;
        self.tally.last_ns = now_ns;
        self.last_tag = tag;
        self.unacked += 1;
        if self.unacked >= self.ack_every {
            self.ack()?;
        }
        if self.tally.messages >= FLUSH_MESSAGES {
            self.flush_tally();
        }
        Ok(())
    }

    /// Acks every delivery so far with one basic.ack (multiple).
    fn ack(&mut self) -> Result<()> {
        if self.unacked == 0 {
            return Ok(());
        }
        self.out.clear();
        frames::encode_method(
            amqp_connection::CHANNEL,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: self.last_tag,
                multiple: true,
            })),
            &mut self.out,
        )?;
        self.connection
            .stream
            .write_all(&self.out)
            .context("acking deliveries")?;
        self.out.clear();
        self.unacked = 0;
        Ok(())
    }

    fn flush_tally(&mut self) {
        let tally = std::mem::take(&mut self.tally);
        if tally.messages == 0 {
            return;
        }
        let flow = &self.shared.consumed[0];
        flow.add(tally.messages, tally.messages * self.payload_bytes);
        flow.latency_sum_us.fetch_add(tally.latency_sum_us, Relaxed);
        flow.latency_samples
            .fetch_add(tally.latency_samples, Relaxed);
        self.shared
            .redelivered
            .fetch_add(tally.redelivered, Relaxed);
        self.shared.consume_end_ns[0].fetch_max(tally.last_ns, Relaxed);
    }

    /// basic.cancel for every consumer tag; deliveries before the cancel-oks still count.
    fn cancel(&mut self) -> Result<()> {
        self.out.clear();
        for tag in &self.plan_tags {
            frames::encode_method(
                amqp_connection::CHANNEL,
                AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: frames::short_string(tag, "consumer tag")?,
                    nowait: false,
                })),
                &mut self.out,
            )?;
        }
        self.connection
            .stream
            .write_all(&self.out)
            .context("cancelling consumers")?;
        self.out.clear();
        self.cancels_pending = self.plan_tags.len();
        let deadline_ns = self.shared.clock.now_ns() + CANCEL_TIMEOUT.as_nanos() as u64;
        while self.cancels_pending > 0 || !matches!(self.delivery, Delivery::Idle) {
            ensure!(
                self.shared.clock.now_ns() < deadline_ns,
                "no basic.cancel-ok within {CANCEL_TIMEOUT:?}"
            );
            self.step()?;
        }
        Ok(())
    }
}
