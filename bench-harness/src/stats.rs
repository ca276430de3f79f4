//! Shared run state: the clock, counters every thread adds to, the first error, and latency
//! histograms.
//!
//! Shared by all harness threads through one `Arc<Shared>`. Concurrency rule: counters are relaxed
//! atomics added once per batch or request (never per record); histograms are thread-local and
//! merged by the main thread after the threads are joined; the error slot is a mutex touched only
//! when something fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, 1 µs .. 10 min, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 600_000_000, 3) {
        Ok(histogram) => histogram,
        Err(error) => panic!("constant histogram bounds are valid: {error}"),
    }
}

/// Records `count` samples of `latency_ns`, saturating at the histogram's top.
#[inline]
pub fn record(histogram: &mut Histogram<u64>, latency_ns: u64, count: u64) {
    let micros = (latency_ns / 1000).clamp(1, histogram.high());
    histogram.saturating_record_n(micros, count);
}

/// Nanoseconds since the run's origin, one clock for every thread (and so for the send time the
/// producer writes into each record and the consumer reads back).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// Counters of one direction (produce or consume).
#[derive(Debug, Default)]
pub struct Flow {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    /// Latency sum (µs × messages) and sample count for the live line's average.
    pub latency_sum_us: AtomicU64,
    pub latency_samples: AtomicU64,
    pub latency_max_us: AtomicU64,
}

impl Flow {
    pub fn add(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    pub fn add_latency(&self, latency_ns: u64, count: u64) {
        let micros = latency_ns / 1000;
        self.latency_sum_us.fetch_add(micros * count, Relaxed);
        self.latency_samples.fetch_add(count, Relaxed);
        self.latency_max_us.fetch_max(micros, Relaxed);
    }

    pub fn snapshot(&self) -> FlowSnapshot {
        FlowSnapshot {
            messages: self.messages.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            latency_sum_us: self.latency_sum_us.load(Relaxed),
            latency_samples: self.latency_samples.load(Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct FlowSnapshot {
    pub messages: u64,
    pub bytes: u64,
    pub latency_sum_us: u64,
    pub latency_samples: u64,
}

impl FlowSnapshot {
    /// Average latency in ms between two snapshots, if any sample fell between them.
    pub fn average_latency_ms_since(&self, earlier: &FlowSnapshot) -> Option<f64> {
        let samples = self.latency_samples - earlier.latency_samples;
        (samples > 0)
            .then(|| (self.latency_sum_us - earlier.latency_sum_us) as f64 / samples as f64 / 1e3)
    }
}

/// State shared by every thread of a run.
#[derive(Debug)]
pub struct Shared {
    pub clock: Clock,
    /// Clock time at which measuring starts (end of warm-up).
    pub measure_from_ns: u64,
    /// Messages sent (requests written), for the produce-side rate limiter and acks=0.
    pub sent: Flow,
    /// Messages acknowledged by the broker (acks=0: counted when written).
    pub produced: Flow,
    /// Messages read, per consumer group.
    pub consumed: Vec<Flow>,
    /// Messages the broker refused in produce responses.
    pub produce_errors: AtomicU64,
    /// AMQP: deliveries flagged `redelivered` (each is also counted as consumed).
    pub redelivered: AtomicU64,
    /// Set once every producer has finished (all acks read); `produced` is then final.
    pub producers_done: AtomicBool,
    /// Set when anything fails: every loop stops.
    pub abort: AtomicBool,
    /// Clock time of the last acknowledgement (acks=0: the last write).
    pub produce_end_ns: AtomicU64,
    /// Clock time of the last consumed message of each group.
    pub consume_end_ns: Vec<AtomicU64>,
    /// Copies of each produced message every group reads (exchange mode: the destinations).
    pub copies_per_message: u64,
    /// Produce request latency (written to the socket -> answer read), one sample per request,
    /// merged in by each ack reader when it ends: with the append-to-ack latency it tells the
    /// time a record waited in the producer (for its batch to go) from the broker's answer time.
    pub request_latency: Mutex<Histogram<u64>>,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(clock: Clock, measure_from_ns: u64, groups: usize) -> Self {
        Shared {
            clock,
            measure_from_ns,
            sent: Flow::default(),
            produced: Flow::default(),
            consumed: (0..groups).map(|_| Flow::default()).collect(),
            produce_errors: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            producers_done: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            produce_end_ns: AtomicU64::new(0),
            consume_end_ns: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            copies_per_message: 1,
            request_latency: Mutex::new(new_histogram()),
            first_error: Mutex::new(None),
        }
    }

    pub fn aborted(&self) -> bool {
        self.abort.load(Relaxed)
    }

    /// Records a thread's failure (the first one is reported) and stops the run.
    pub fn fail(&self, context: &str, error: &anyhow::Error) {
        if let Ok(mut slot) = self.first_error.lock() {
            slot.get_or_insert_with(|| format!("{context}: {error:#}"));
        }
        self.abort.store(true, Relaxed);
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|slot| slot.clone())
    }
}

/// Pins the calling thread to one CPU; failures are reported, not fatal (the run still measures).
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks against CPU_SETSIZE; pid 0 = this
    // thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Hands out CPUs to threads in turn, if the user asked for pinning.
#[derive(Debug)]
pub struct CpuPlan {
    cpus: Vec<usize>,
    next: AtomicU64,
}

impl CpuPlan {
    pub fn new(cpus: Vec<usize>) -> Self {
        CpuPlan {
            cpus,
            next: AtomicU64::new(0),
        }
    }

    /// Pins the calling thread to the next CPU of the plan (no-op without a plan).
    pub fn pin(&self) {
        if self.cpus.is_empty() {
            return;
        }
        let index = self.next.fetch_add(1, Relaxed) as usize % self.cpus.len();
        if let Err(error) = pin_current_thread(self.cpus[index]) {
            eprintln!(
                "weir-bench: cannot pin a thread to cpu {}: {error}",
                self.cpus[index]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_records_in_microseconds_and_saturates() {
        let mut histogram = new_histogram();
        record(&mut histogram, 1_500_000, 3);
        record(&mut histogram, 10, 1); // below 1 µs counts as 1 µs
        record(&mut histogram, u64::MAX, 1);
        assert_eq!(histogram.len(), 5);
        assert_eq!(histogram.min(), 1);
        assert!(histogram.max() >= 600_000_000 - 600_000);
    }

    #[test]
    fn flow_snapshot_averages() {
        let flow = Flow::default();
        let start = flow.snapshot();
        flow.add_latency(2_000_000, 2);
        flow.add_latency(4_000_000, 2);
        let end = flow.snapshot();
        assert_eq!(end.average_latency_ms_since(&start), Some(3.0));
        assert_eq!(end.average_latency_ms_since(&end), None);
    }
}
