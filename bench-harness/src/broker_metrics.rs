//! `--broker-metrics HOST:PORT`: weir-bench scrapes the broker's Prometheus endpoint every
//! `--broker-metrics-interval-ms` during the run and reports, beside its own figures, what the
//! broker counted between the first and the last scrape: records and bytes in and out, fsyncs and
//! their mean time, reactor stalls, shard busy time. The scrape loop also serves the check that
//! scraping does not disturb the data path (run with and without it, alternating).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// Each metric's samples summed over their label sets.
type Totals = BTreeMap<String, f64>;

/// What the broker counted over the run (the last scrape minus the first).
#[derive(Debug, Clone, Serialize)]
pub struct BrokerView {
    pub scrapes: u64,
    /// The slowest scrape, request to whole answer read.
    pub scrape_ms_max: f64,
    pub seconds: f64,
    pub records_produced: f64,
    pub records_fetched: f64,
    pub bytes_produced: f64,
    pub bytes_fetched: f64,
    pub fsyncs: f64,
    pub fsync_ms_mean: Option<f64>,
    pub writes: f64,
    pub write_ms_mean: Option<f64>,
    pub reactor_stalls: f64,
    pub reactor_stalled_s: f64,
    /// Busy time of all shards over the run's wall time (1.0 = one shard always busy).
    pub shard_busy_cores: f64,
}

/// The scrape loop, running on its own thread until `finish`.
pub struct Poller {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<BrokerView>>,
}

impl Poller {
    /// Scrapes once now (an unreachable endpoint fails the run at once), then every `interval`.
    pub fn start(address: &str, interval: Duration) -> Result<Poller> {
        let address = address.to_owned();
        let first =
            scrape(&address).with_context(|| format!("scraping http://{address}/metrics"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || poll(&address, interval, &stop, first)
        });
        Ok(Poller { stop, thread })
    }

    /// Takes a last scrape and answers the difference.
    pub fn finish(self) -> Result<BrokerView> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(view) => view,
            Err(_) => bail!("the broker-metrics thread panicked"),
        }
    }
}

struct Scrape {
    totals: Totals,
    at: Instant,
    took: Duration,
}

fn poll(address: &str, interval: Duration, stop: &AtomicBool, first: Scrape) -> Result<BrokerView> {
    let mut scrapes = 1;
    let mut slowest = first.took;
    loop {
        let deadline = Instant::now() + interval;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let last = scrape(address)?;
        scrapes += 1;
        slowest = slowest.max(last.took);
        if stop.load(Ordering::Relaxed) {
            return Ok(view(&first, &last, scrapes, slowest));
        }
    }
}

fn view(first: &Scrape, last: &Scrape, scrapes: u64, slowest: Duration) -> BrokerView {
    let moved = |name: &str| {
        last.totals.get(name).copied().unwrap_or(0.0)
            - first.totals.get(name).copied().unwrap_or(0.0)
    };
    let mean_ms = |sum: &str, count: &str| {
        let count = moved(count);
        (count > 0.0).then(|| moved(sum) * 1e3 / count)
    };
    let seconds = last.at.duration_since(first.at).as_secs_f64();
    BrokerView {
        scrapes,
        scrape_ms_max: slowest.as_secs_f64() * 1e3,
        seconds,
        records_produced: moved("weir_records_produced_total"),
        records_fetched: moved("weir_records_fetched_total"),
        bytes_produced: moved("weir_bytes_produced_total"),
        bytes_fetched: moved("weir_bytes_fetched_total"),
        fsyncs: moved("weir_storage_fsyncs_total"),
        fsync_ms_mean: mean_ms(
            "weir_storage_fsync_latency_seconds_sum",
            "weir_storage_fsync_latency_seconds_count",
        ),
        writes: moved("weir_storage_write_latency_seconds_count"),
        write_ms_mean: mean_ms(
            "weir_storage_write_latency_seconds_sum",
            "weir_storage_write_latency_seconds_count",
        ),
        reactor_stalls: moved("weir_reactor_stalls_total"),
        reactor_stalled_s: moved("weir_reactor_stalled_seconds_total"),
        shard_busy_cores: if seconds > 0.0 {
            moved("weir_shard_busy_seconds_total") / seconds
        } else {
            0.0
        },
    }
}

/// One GET /metrics (the endpoint answers one request per connection and closes).
fn scrape(address: &str) -> Result<Scrape> {
    let start = Instant::now();
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: weir\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("not an HTTP answer");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or(""));
    }
    Ok(Scrape {
        totals: totals(body),
        at: Instant::now(),
        took: start.elapsed(),
    })
}

/// The text format's samples summed by name (labels dropped).
fn totals(body: &str) -> Totals {
    let mut totals = Totals::new();
    for line in body.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(value) = value.parse::<f64>() {
            *totals.entry(name.to_owned()).or_default() += value;
        }
    }
    totals
}

/// The report's line.
pub fn line(view: &BrokerView) -> String {
    let ms = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3} ms"));
    format!(
        "broker (/metrics, {} scrapes over {:.1} s, slowest {:.1} ms): produced {} records \
         ({:.1} MB), fetched {} records ({:.1} MB); {} writes (mean {}), {} fsyncs (mean {}); \
         reactor stalls {} ({:.3} s); shards busy {:.2} cores",
        view.scrapes,
        view.seconds,
        view.scrape_ms_max,
        view.records_produced,
        view.bytes_produced / 1e6,
        view.records_fetched,
        view.bytes_fetched / 1e6,
        view.writes,
        ms(view.write_ms_mean),
        view.fsyncs,
        ms(view.fsync_ms_mean),
        view.reactor_stalls,
        view.reactor_stalled_s,
        view.shard_busy_cores
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_label_sets_and_skip_comments() {
        let body =
            "# HELP x\n# TYPE x counter\nx_total{shard=\"0\"} 2\nx_total{shard=\"1\"} 3.5\ny 7\n";
        let totals = totals(body);
        assert_eq!(totals["x_total"], 5.5);
        assert_eq!(totals["y"], 7.0);
        assert_eq!(totals.len(), 2);
    }
}
