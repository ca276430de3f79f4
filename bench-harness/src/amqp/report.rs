//! Results of one `weir-bench amqp` run: the figures, the end-of-run table, `--json` and the
//! `--plot` SVG (drawn by `crate::report::plot`, as for Kafka runs). Built on the main thread after
//! every worker thread is joined.

use std::fmt::Write as _;

use serde::Serialize;

use super::workload::AmqpWorkload;
use crate::report::{human_rate, Curve, Latency, Plot, SeriesPoint};

#[derive(Debug, Clone, Serialize)]
pub struct AmqpResults {
    pub workload: AmqpWorkload,
    /// The broker's product and version from connection.start, e.g. "RabbitMQ 3.10.8".
    pub broker: String,
    /// Seconds over which the rates are measured (after warm-up).
    pub publish_measured_s: f64,
    pub consume_measured_s: f64,
    /// Messages confirmed (basic.ack) by the broker per second.
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    /// Publish to confirm.
    pub publish_confirm_p50_ms: Option<f64>,
    pub publish_confirm_p99_ms: Option<f64>,
    /// Publish to delivery.
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p99_ms: Option<f64>,
    pub publish_confirm_latency: Latency,
    pub e2e_latency: Latency,
    /// Messages confirmed over the whole run (warm-up included).
    pub published_messages: u64,
    /// Messages the broker refused with basic.nack.
    pub nacked_messages: u64,
    /// Messages delivered to the consumers over the whole run.
    pub consumed_messages: u64,
    /// Deliveries flagged `redelivered` (counted in `consumed_messages` too).
    pub redelivered_messages: u64,
    pub series: Vec<SeriesPoint>,
    pub errors: Vec<String>,
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.3}"))
}

/// The table's first lines: the broker and the workload.
fn heading(results: &AmqpResults, out: &mut String) {
    let workload = &results.workload;
    let _ = writeln!(
        out,
        "broker: {} at {}\nworkload: {} queue(s), {} B messages, {}, {} publisher(s) with {} \
         unconfirmed at most, {} consumer(s) with prefetch {} acking every {}, rate {}",
        results.broker,
        workload.url,
        workload.queues.len(),
        workload.message_bytes,
        if workload.durable {
            "durable queues, persistent messages"
        } else {
            "transient queues and messages"
        },
        workload.producers,
        workload.confirm_window,
        if workload.consume {
            workload.consumers
        } else {
            0
        },
        workload.prefetch,
        workload.ack_every,
        workload
            .rate_msgs_per_s
            .map_or_else(|| "max".to_owned(), |rate| format!("{rate:.0}/s")),
    );
}

/// The end-of-run table.
pub fn table(results: &AmqpResults) -> String {
    let mut out = String::new();
    heading(results, &mut out);
    let _ = writeln!(
        out,
        "{:<10} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "msgs/s", "MB/s", "p50 ms", "p99 ms", "p99.9", "p99.99", "max ms"
    );
    for (name, rate, mb, latency) in [
        (
            "publish",
            results.publish_msgs_per_s,
            results.publish_mb_per_s,
            &results.publish_confirm_latency,
        ),
        (
            "consume",
            results.consume_msgs_per_s,
            results.consume_mb_per_s,
            &results.e2e_latency,
        ),
    ] {
        let _ = writeln!(
            out,
            "{:<10} {:>12} {:>10.1} {:>9} {:>9} {:>9} {:>9} {:>9}",
            name,
            human_rate(rate),
            mb,
            ms(latency.p50_ms),
            ms(latency.p99_ms),
            ms(latency.p999_ms),
            ms(latency.p9999_ms),
            ms(latency.max_ms)
        );
    }
    let _ = writeln!(
        out,
        "(publish latency = publish written to confirmed; consume latency = end to end, publish \
         written to delivered)\npublished (confirmed) {} messages, nacked {}, consumed {} ({} \
         redelivered)",
        results.published_messages,
        results.nacked_messages,
        results.consumed_messages,
        results.redelivered_messages
    );
    for error in &results.errors {
        let _ = writeln!(out, "ERROR: {error}");
    }
    out
}

pub fn svg(results: &AmqpResults) -> String {
    crate::report::plot(&Plot {
        series: &results.series,
        rate_names: ["publish", "consume"],
        curves: vec![
            Curve::solid(
                "publish confirm",
                "#1f77b4",
                &results.publish_confirm_latency,
            ),
            Curve::solid("end to end", "#d62728", &results.e2e_latency),
        ],
    })
}
