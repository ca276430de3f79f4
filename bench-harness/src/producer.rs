//! A producer: one thread that builds RecordBatch v2 batches in place and writes pipelined Produce
//! requests to each partition leader it needs, plus one acknowledgement-reader thread per leader
//! connection.
//!
//! Concurrency rule: the producer thread owns the batch buffers and the write half of every socket;
//! each reader thread owns the read half of one socket. They talk through one channel per
//! connection that carries what each in-flight request holds, and a counter of requests not yet
//! answered that is the in-flight limit. Kafka answers requests on one connection in order, so the
//! reader pairs responses with channel entries one by one.
//!
//! Batching follows the Kafka producer's accumulator: a batch becomes ready when it is full or its
//! linger expires, and ready batches go out as one request per leader when that connection has
//! room in its window. While the window is full, ready batches stay open and keep taking records
//! (up to `--batch-bytes`), so that a broker that answers slowly gets fewer, larger batches, as
//! from a Kafka client. Only a full batch waits for the window (Kafka would start another batch
//! behind it, up to `buffer.memory`). With 1,000 partitions, blocking instead at every expired
//! linger made batches of ~2 records and measured the harness, not the broker.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use hdrhistogram::Histogram;

use crate::batch::{record_bytes, BatchBuilder, VALUE_TIMESTAMP_BYTES};
use crate::stats::{self, CpuPlan, Shared};
use crate::tls::Stream;
use crate::wire;
use crate::workload::{Keys, Workload};

/// One partition a producer writes to.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub topic: usize,
    pub partition: i32,
    /// Index into `ProducerPlan::brokers`.
    pub broker: usize,
}

/// Everything one producer thread needs.
pub struct ProducerPlan {
    pub index: usize,
    pub workload: Arc<Workload>,
    pub targets: Vec<Target>,
    /// Leader addresses, indexed by `Target::broker`.
    pub brokers: Vec<String>,
    pub produce_version: i16,
    /// Messages this producer sends in total (`--messages`), if bounded by count.
    pub quota: Option<u64>,
    /// This producer's share of `--rate`, in messages per second.
    pub rate_msgs_per_s: Option<f64>,
    /// Clock time at which to stop producing (`--duration`).
    pub stop_at_ns: Option<u64>,
    pub shared: Arc<Shared>,
    pub cpus: Arc<CpuPlan>,
}

/// What one in-flight request carries, for the reader that receives its response.
struct InFlight {
    correlation_id: i32,
    messages: u64,
    /// (clock time the batch's first record was appended, records in the batch).
    batches: Vec<(u64, u64)>,
    /// Clock time the request was written to the socket.
    sent_ns: u64,
}

/// A partition's batch buffer: at most one batch, open or closed-awaiting-send.
#[derive(Default)]
struct Staging {
    buf: Vec<u8>,
    builder: Option<BatchBuilder>,
    closed: bool,
    first_append_ns: u64,
    generation: u64,
}

impl Staging {
    /// Holds a batch that still takes records.
    fn is_open(&self) -> bool {
        self.builder.is_some() && !self.closed
    }

    /// Holds the open batch of that generation (not one sent since and replaced).
    fn is_open_in(&self, generation: u64) -> bool {
        self.generation == generation && self.is_open()
    }
}

struct Link {
    stream: Stream,
    /// Closed batches for the next request.
    pending: Vec<usize>,
    /// (target, generation) of open batches whose linger expired: closed when the request goes.
    ready: Vec<(usize, u64)>,
    in_flight: Option<SyncSender<InFlight>>,
    /// Requests sent and not yet answered (the reader counts down and unparks the producer).
    outstanding: Arc<AtomicUsize>,
    reader: Option<JoinHandle<Result<Histogram<u64>>>>,
    correlation_id: i32,
}

/// Records appended between two checks of the clock, rate and linger deadlines.
const CHUNK_RECORDS: u64 = 1024;
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// Spawns the producer thread; it returns the merged produce-ack latency histogram.
pub fn spawn(plan: ProducerPlan) -> Result<JoinHandle<Result<Histogram<u64>>>> {
    std::thread::Builder::new()
        .name(format!("producer-{}", plan.index))
        .spawn(move || {
            plan.cpus.pin();
            let shared = plan.shared.clone();
            let result = Producer::new(plan).and_then(Producer::run);
            if let Err(error) = &result {
                shared.fail("producer", error);
            }
            result
        })
        .context("spawning a producer thread")
}

struct Producer {
    plan: ProducerPlan,
    topic_names: Vec<String>,
    stagings: Vec<Staging>,
    links: Vec<Link>,
    lingering: VecDeque<(u64, usize, u64)>,
    framing: Vec<u8>,
    filler: Vec<u8>,
    timestamp_ms: i64,
    now_ns: u64,
    /// The send time stamped on the next record: now, or with `--rate` the record's intended
    /// send time, so that a producer that falls behind its schedule shows up in the latencies
    /// instead of hiding (no coordinated omission).
    record_time_ns: u64,
}

impl Producer {
    fn new(plan: ProducerPlan) -> Result<Self> {
        let mut links = Vec::with_capacity(plan.brokers.len());
        for address in &plan.brokers {
            let stream = crate::admin::connect(address)?;
            let outstanding = Arc::new(AtomicUsize::new(0));
            let (in_flight, reader) = if plan.workload.acks == 0 {
                (None, None)
            } else {
                // Never full: `outstanding` keeps at most `max_in_flight` entries in it.
                let (sender, receiver) = sync_channel(plan.workload.max_in_flight);
                let read_half = stream.try_clone().context("cloning a producer socket")?;
                let window = Window {
                    outstanding: outstanding.clone(),
                    producer: std::thread::current(),
                };
                let reader = spawn_ack_reader(&plan, read_half, receiver, window)?;
                (Some(sender), Some(reader))
            };
            links.push(Link {
                stream,
                pending: Vec::new(),
                ready: Vec::new(),
                in_flight,
                outstanding,
                reader,
                correlation_id: 0,
            });
        }
        ensure!(!plan.targets.is_empty(), "a producer needs partitions");
        Ok(Producer {
            topic_names: plan.workload.topics.clone(),
            stagings: (0..plan.targets.len())
                .map(|_| Staging::default())
                .collect(),
            links,
            lingering: VecDeque::new(),
            framing: Vec::new(),
            filler: vec![b'w'; plan.workload.message_bytes - VALUE_TIMESTAMP_BYTES],
            timestamp_ms: 0,
            now_ns: 0,
            record_time_ns: 0,
            plan,
        })
    }

    fn run(mut self) -> Result<Histogram<u64>> {
        let result = self.produce();
        // Readers end when their channel closes and every in-flight answer is read.
        let mut histogram = stats::new_histogram();
        let mut reader_error = None;
        for link in &mut self.links {
            link.in_flight = None;
            if let Some(reader) = link.reader.take() {
                match reader.join() {
                    Ok(Ok(part)) => histogram.add(part).context("merging histograms")?,
                    Ok(Err(error)) => reader_error = Some(error),
                    Err(_) => reader_error = Some(anyhow::anyhow!("an ack reader panicked")),
                }
            }
        }
        result?;
        match reader_error {
            Some(error) => Err(error),
            None => Ok(histogram),
        }
    }

    #[expect(
        clippy::too_many_lines,
        reason = "over 70 lines before the limit; split, then drop this"
    )]
    fn produce(&mut self) -> Result<()> {
        let workload = self.plan.workload.clone();
        let shared = self.plan.shared.clone();
        let clock = shared.clock;
        let start_ns = clock.now_ns();
        let target_count = self.plan.targets.len();
        let mut sticky = self.plan.index % target_count;
        let mut round_robin = self.plan.index as u64;
        let mut random_state = 0x9E37_79B9_7F4A_7C15u64 ^ (self.plan.index as u64 + 1);
        let mut sent: u64 = 0;
        let key_bytes = match workload.keys {
            Keys::None => None,
            Keys::RoundRobin | Keys::Random => Some(8),
        };
        let linger_ns = (workload.linger_ms * 1e6) as u64;
        loop {
            if shared.aborted() {
                bail!("stopped: another thread failed");
            }
            self.now_ns = clock.now_ns();
            if self.plan.stop_at_ns.is_some_and(|stop| self.now_ns >= stop)
                || self.plan.quota.is_some_and(|quota| sent >= quota)
            {
                break;
            }
            let mut due = match self.plan.rate_msgs_per_s {
                None => CHUNK_RECORDS,
                Some(rate) => {
                    let allowed = ((self.now_ns - start_ns) as f64 * rate / 1e9) as u64 + 1;
                    allowed.saturating_sub(sent).min(CHUNK_RECORDS)
                }
            };
            if let Some(quota) = self.plan.quota {
                due = due.min(quota - sent);
            }
            if due == 0 {
                self.expire_lingering()?;
                self.flush_all(false)?;
                let rate = self.plan.rate_msgs_per_s.unwrap_or(f64::INFINITY);
                let next_due_ns = start_ns + (sent as f64 * 1e9 / rate) as u64;
                let mut wake_ns = next_due_ns;
                if let Some(&(deadline, _, _)) = self.lingering.front() {
                    wake_ns = wake_ns.min(deadline);
                }
                if let Some(stop) = self.plan.stop_at_ns {
                    wake_ns = wake_ns.min(stop);
                }
                let now_ns = clock.now_ns();
                if wake_ns > now_ns {
                    // Parked: an answer that opens a window with ready batches wakes it early.
                    std::thread::park_timeout(Duration::from_nanos(wake_ns - now_ns));
                }
                continue;
            }
            self.timestamp_ms = wall_clock_ms();
            for index in 0..due {
                self.record_time_ns = match self.plan.rate_msgs_per_s {
                    None => self.now_ns,
                    Some(rate) => {
                        let intended = start_ns + ((sent + index) as f64 * 1e9 / rate) as u64;
                        intended.min(self.now_ns)
                    }
                };
                let (target, key) = match workload.keys {
                    Keys::None => (sticky, 0u64),
                    Keys::RoundRobin => {
                        round_robin += 1;
                        ((round_robin % target_count as u64) as usize, round_robin)
                    }
                    Keys::Random => {
                        random_state = xorshift(random_state);
                        ((random_state % target_count as u64) as usize, random_state)
                    }
                };
                let key_buf = key.to_be_bytes();
                let key = key_bytes.map(|_| &key_buf[..]);
                if workload.keys == Keys::None {
                    // Sticky partitioning: a full batch moves the producer to the next partition,
                    // and the record goes there (not into a one-record batch on the old one).
                    while !self.append(sticky, key, linger_ns, true)? {
                        sticky = (sticky + 1) % target_count;
                    }
                } else {
                    self.append(target, key, linger_ns, false)?;
                }
            }
            sent += due;
            self.expire_lingering()?;
            self.flush_all(false)?;
        }
        for target in 0..self.stagings.len() {
            if self.stagings[target].is_open() {
                self.close(target);
            }
        }
        self.flush_all(true)
    }

    /// Appends one record to `target`'s batch, closing the batch first if the record does not
    /// fit. With `move_on_full`, a full batch is closed and the record is *not* appended (returns
    /// false) so that the caller can move on to another partition; asking again for the same
    /// partition then appends to a fresh batch.
    fn append(
        &mut self,
        target: usize,
        key: Option<&[u8]>,
        linger_ns: u64,
        move_on_full: bool,
    ) -> Result<bool> {
        let batch_bytes_max = self.plan.workload.batch_bytes;
        let value_bytes = self.plan.workload.message_bytes;
        if let Some(builder) = &self.stagings[target].builder {
            let staging = &self.stagings[target];
            if !staging.closed {
                let next = record_bytes(builder.record_count(), key.map(<[u8]>::len), value_bytes);
                if builder.batch_bytes(&staging.buf) + next > batch_bytes_max {
                    self.close(target);
                    if move_on_full {
                        return Ok(false);
                    }
                }
            }
        }
        if self.stagings[target].closed {
            // This partition's buffer still holds a full batch waiting to be sent: send it as
            // soon as the window allows.
            let broker = self.plan.targets[target].broker;
            self.flush(broker, true)?;
        }
        let now_ns = self.record_time_ns;
        let timestamp_ms = self.timestamp_ms;
        let staging = &mut self.stagings[target];
        if staging.builder.is_none() {
            staging.buf.clear();
            staging.builder = Some(BatchBuilder::begin(&mut staging.buf, timestamp_ms));
            staging.first_append_ns = now_ns;
            staging.generation += 1;
            self.lingering
                .push_back((now_ns + linger_ns, target, staging.generation));
        }
        if let Some(builder) = &mut staging.builder {
            builder.append(&mut staging.buf, key, now_ns, &self.filler);
        }
        Ok(true)
    }

    fn close(&mut self, target: usize) {
        let staging = &mut self.stagings[target];
        assert!(!staging.closed, "a batch is closed once");
        if let Some(builder) = &staging.builder {
            builder.finish(&mut staging.buf);
            staging.closed = true;
            self.links[self.plan.targets[target].broker]
                .pending
                .push(target);
        }
    }

    /// Marks the batches whose linger expired ready; they stay open until their request goes.
    fn expire_lingering(&mut self) -> Result<()> {
        while let Some(&(deadline, target, generation)) = self.lingering.front() {
            if deadline > self.now_ns {
                break;
            }
            self.lingering.pop_front();
            if self.stagings[target].is_open_in(generation) {
                let broker = self.plan.targets[target].broker;
                self.links[broker].ready.push((target, generation));
            }
        }
        Ok(())
    }

    /// Sends what is ready for every leader (see `flush`).
    fn flush_all(&mut self, wait: bool) -> Result<()> {
        for broker in 0..self.links.len() {
            self.flush(broker, wait)?;
        }
        Ok(())
    }

    /// Whether `broker`'s connection may take another request.
    fn window_open(&self, broker: usize) -> bool {
        let link = &self.links[broker];
        link.in_flight.is_none()
            || link.outstanding.load(Ordering::Acquire) < self.plan.workload.max_in_flight
    }

    /// Sends every ready batch for `broker` (closed ones, and open ones whose linger expired) in
    /// Produce requests of at most `--max-request-bytes` each, as the window allows. With a full
    /// window it returns at once, or with `wait` waits for answers until everything ready is sent.
    fn flush(&mut self, broker: usize, wait: bool) -> Result<()> {
        loop {
            let link = &self.links[broker];
            if link.pending.is_empty() && link.ready.is_empty() {
                return Ok(());
            }
            while !self.window_open(broker) {
                if !wait {
                    return Ok(());
                }
                if self.plan.shared.aborted() {
                    bail!("stopped: another thread failed");
                }
                // The reader unparks this thread after each answer; the timeout only guards
                // against a reader that ended.
                std::thread::park_timeout(Duration::from_millis(10));
            }
            let ready = std::mem::take(&mut self.links[broker].ready);
            for (target, generation) in ready {
                if self.stagings[target].is_open_in(generation) {
                    self.close(target);
                }
            }
            if !self.links[broker].pending.is_empty() {
                self.send_request(broker)?;
            }
        }
    }

    /// Sends the first closed batches for `broker`, up to `--max-request-bytes` (at least one),
    /// as one Produce request: header and framing from one buffer and each batch straight from
    /// its staging buffer (one writev, no copy).
    #[expect(
        clippy::too_many_lines,
        reason = "over 70 lines before the limit; split, then drop this"
    )]
    fn send_request(&mut self, broker: usize) -> Result<()> {
        let link = &mut self.links[broker];
        let targets = &self.plan.targets;
        link.pending
            .sort_unstable_by_key(|&target| (targets[target].topic, targets[target].partition));
        let mut request_bytes = 0;
        let take = link
            .pending
            .iter()
            .position(|&target| {
                request_bytes += self.stagings[target].buf.len();
                request_bytes > self.plan.workload.max_request_bytes
            })
            .unwrap_or(link.pending.len())
            .max(1);
        let sending: Vec<usize> = link.pending.drain(..take).collect();
        link.correlation_id = link.correlation_id.wrapping_add(1);
        let mut in_flight = InFlight {
            correlation_id: link.correlation_id,
            messages: 0,
            batches: Vec::with_capacity(sending.len()),
            sent_ns: 0,
        };
        let mut entries = Vec::with_capacity(sending.len());
        for &target in &sending {
            let staging = &self.stagings[target];
            let records = staging
                .builder
                .as_ref()
                .map_or(0, |builder| builder.record_count() as u64);
            in_flight.messages += records;
            in_flight.batches.push((staging.first_append_ns, records));
            entries.push(wire::ProduceEntry {
                topic: targets[target].topic,
                partition: targets[target].partition,
                batch_bytes: staging.buf.len(),
            });
        }
        // Framing pieces end where a batch goes.
        let mut cuts = Vec::with_capacity(entries.len());
        wire::encode_produce_framing(
            &mut self.framing,
            &mut cuts,
            &wire::ProduceHeader {
                version: self.plan.produce_version,
                correlation_id: link.correlation_id,
                acks: self.plan.workload.acks,
                timeout_ms: PRODUCE_TIMEOUT_MS,
            },
            &self.topic_names,
            &entries,
        );
        let messages = in_flight.messages;
        // Taken before the write: a write that blocks on a full socket is the broker's time.
        in_flight.sent_ns = self.plan.shared.clock.now_ns();
        let acked_by_reader = link.in_flight.is_some();
        if let Some(sender) = &link.in_flight {
            link.outstanding.fetch_add(1, Ordering::AcqRel);
            sender.send(in_flight).map_err(|_| {
                anyhow::anyhow!("the ack reader for {} stopped", self.plan.brokers[broker])
            })?;
        }
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(cuts.len() * 2);
        let mut framing_start = 0;
        for (&framing_end, &target) in cuts.iter().zip(&sending) {
            slices.push(IoSlice::new(&self.framing[framing_start..framing_end]));
            slices.push(IoSlice::new(&self.stagings[target].buf));
            framing_start = framing_end;
        }
        wire::write_all_vectored(&mut link.stream, &mut slices)
            .with_context(|| format!("producing to {}", self.plan.brokers[broker]))?;
        let payload = messages * self.plan.workload.payload_bytes();
        let shared = &self.plan.shared;
        shared.sent.add(messages, payload);
        if !acked_by_reader {
            shared.produced.add(messages, payload);
            shared
                .produce_end_ns
                .fetch_max(shared.clock.now_ns(), std::sync::atomic::Ordering::Relaxed);
        }
        for &target in &sending {
            let staging = &mut self.stagings[target];
            staging.builder = None;
            staging.closed = false;
        }
        Ok(())
    }
}

/// A connection's in-flight window, as its reader sees it.
struct Window {
    outstanding: Arc<AtomicUsize>,
    producer: std::thread::Thread,
}

fn spawn_ack_reader(
    plan: &ProducerPlan,
    stream: Stream,
    receiver: Receiver<InFlight>,
    window: Window,
) -> Result<JoinHandle<Result<Histogram<u64>>>> {
    let shared = plan.shared.clone();
    let cpus = plan.cpus.clone();
    let version = plan.produce_version;
    let payload_bytes = plan.workload.payload_bytes();
    std::thread::Builder::new()
        .name(format!("acks-{}", plan.index))
        .spawn(move || {
            cpus.pin();
            let result = read_acks(stream, receiver, version, payload_bytes, &shared, &window);
            // Wake a producer waiting for this window: it sees the failure and stops.
            window.producer.unpark();
            if let Err(error) = &result {
                shared.fail("produce acknowledgements", error);
            }
            result
        })
        .context("spawning an ack reader thread")
}

fn read_acks(
    mut stream: Stream,
    receiver: Receiver<InFlight>,
    version: i16,
    payload_bytes: u64,
    shared: &Shared,
    window: &Window,
) -> Result<Histogram<u64>> {
    let mut histogram = stats::new_histogram();
    let mut requests = stats::new_histogram();
    let mut frame_buf = Vec::new();
    while let Ok(in_flight) = receiver.recv() {
        let frame = wire::read_frame(&mut stream, &mut frame_buf)?;
        let mut cursor = wire::Cursor::new(frame);
        let correlation_id = cursor.i32()?;
        ensure!(
            correlation_id == in_flight.correlation_id,
            "produce response correlation id {correlation_id}, expected {}",
            in_flight.correlation_id
        );
        let mut refused = None;
        wire::parse_produce_response(&frame[4..], version, |topic, result| {
            if result.error_code != 0 && refused.is_none() {
                refused = Some(format!(
                    "{}/{}: error code {}",
                    String::from_utf8_lossy(topic),
                    result.partition,
                    result.error_code
                ));
            }
        })?;
        if let Some(refused) = refused {
            shared
                .produce_errors
                .fetch_add(in_flight.messages, std::sync::atomic::Ordering::Relaxed);
            bail!("the broker refused a produce request: {refused}");
        }
        let now_ns = shared.clock.now_ns();
        if in_flight.sent_ns >= shared.measure_from_ns {
            stats::record(&mut requests, now_ns - in_flight.sent_ns, 1);
        }
        for &(first_append_ns, records) in &in_flight.batches {
            let latency_ns = now_ns.saturating_sub(first_append_ns);
            if first_append_ns >= shared.measure_from_ns {
                stats::record(&mut histogram, latency_ns, records);
            }
            shared.produced.add_latency(latency_ns, records);
        }
        shared
            .produced
            .add(in_flight.messages, in_flight.messages * payload_bytes);
        shared
            .produce_end_ns
            .fetch_max(now_ns, std::sync::atomic::Ordering::Relaxed);
        window.outstanding.fetch_sub(1, Ordering::AcqRel);
        window.producer.unpark();
    }
    if let Ok(mut merged) = shared.request_latency.lock() {
        merged
            .add(&requests)
            .context("merging request latency histograms")?;
    }
    Ok(histogram)
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[inline]
fn xorshift(mut state: u64) -> u64 {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    state
}
