//! Results of a run: the figures, the end-of-run table, `--json` and the `--plot` SVG (written by
//! hand: two line charts need no plotting crate). Built on the main thread after every worker
//! thread is joined.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::workload::Workload;

/// Throughput during one interval of the run.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesPoint {
    /// Seconds since producing started, at the end of the interval.
    pub t_s: f64,
    pub produce_msgs_per_s: f64,
    pub produce_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
}

/// Percentiles of one latency histogram, in milliseconds (None: no samples).
// Deserialize: `weir-bench peer-chart` reads the curves back from a run's --json.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub p9999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// (percentile, ms) points for the percentile curve.
    pub curve: Vec<(f64, f64)>,
}

impl Latency {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Latency::default();
        }
        let at = |quantile: f64| Some(histogram.value_at_quantile(quantile) as f64 / 1e3);
        // Points evenly spaced in log10(1 / (1 - p)): 0%, 20.6%, ..., 90%, ..., 99.9999%, capped
        // where the sample count makes a percentile meaningless.
        // The maximum closes the curve one step further.
        let mut curve = Vec::new();
        for step in 0..=60 {
            let quantile = 1.0 - 10f64.powf(-f64::from(step) / 10.0);
            if step > 0 && (1.0 - quantile) * (histogram.len() as f64) < 1.0 {
                curve.push((quantile * 100.0, histogram.max() as f64 / 1e3));
                break;
            }
            curve.push((
                quantile * 100.0,
                histogram.value_at_quantile(quantile) as f64 / 1e3,
            ));
        }
        Latency {
            samples: histogram.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            p9999_ms: at(0.9999),
            max_ms: Some(histogram.max() as f64 / 1e3),
            curve,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub workload: Workload,
    pub bootstrap: String,
    pub produce_version: i16,
    pub fetch_version: i16,
    /// Seconds over which the produce rates are measured (after warm-up).
    pub produce_measured_s: f64,
    pub consume_measured_s: f64,
    pub produce_msgs_per_s: f64,
    pub produce_mb_per_s: f64,
    /// Summed over consumer groups.
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    pub produce_p50_ms: Option<f64>,
    pub produce_p99_ms: Option<f64>,
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p99_ms: Option<f64>,
    pub produce_latency: Latency,
    /// Produce requests, written to the socket -> answered (one sample per request).
    pub produce_request_latency: Latency,
    pub e2e_latency: Latency,
    /// Messages acknowledged by the broker over the whole run (warm-up included).
    pub produced_messages: u64,
    pub consumed_messages_per_group: Vec<u64>,
    pub series: Vec<SeriesPoint>,
    pub errors: Vec<String>,
    /// Exchange mode: records produced to the exchange (and routed) per second.
    pub exchange_routed_msgs_per_s: Option<f64>,
    /// Exchange mode: routed copies delivered to consumers per second (all destinations).
    pub exchange_copies_per_s: Option<f64>,
    /// --compare-plain: the same records produced to a plain topic, per second.
    pub plain_produce_msgs_per_s: Option<f64>,
    /// --compare-plain: exchange_routed_msgs_per_s / plain_produce_msgs_per_s.
    pub routed_to_plain_ratio: Option<f64>,
    /// Share mode: distinct records acquired by the share consumers.
    pub share_acquired_messages: Option<u64>,
    /// Share mode: records whose Accept the broker confirmed (also consumed_messages_per_group).
    pub share_acknowledged_messages: Option<u64>,
    /// Share mode: records acquired more than once (any fails the run).
    pub share_duplicate_messages: Option<u64>,
    /// Share mode: ShareFetch round trips, their mean time (request written to answer read),
    /// and the mean time the harness spent between an answer and its next request.
    pub share_round_trips: Option<u64>,
    pub share_round_trip_us_mean: Option<f64>,
    pub share_client_us_mean: Option<f64>,
    /// --broker-metrics: what the broker itself counted over the run.
    pub broker: Option<crate::broker_metrics::BrokerView>,
}

impl Results {
    /// Records the plain run's figure and the routed/plain ratio (--compare-plain); the plain
    /// run's errors become this run's.
    pub fn set_plain(&mut self, plain: &Results) {
        self.plain_produce_msgs_per_s = Some(plain.produce_msgs_per_s);
        self.routed_to_plain_ratio = self
            .exchange_routed_msgs_per_s
            .filter(|_| plain.produce_msgs_per_s > 0.0)
            .map(|routed| routed / plain.produce_msgs_per_s);
        self.errors.extend(
            plain
                .errors
                .iter()
                .map(|error| format!("plain run: {error}")),
        );
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.3}"))
}

pub fn human_rate(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// The end-of-run table.
#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
pub fn table(results: &Results) -> String {
    let workload = &results.workload;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "workload: {} topic(s) x {} partition(s), {} B messages, {} producer(s), {} group(s) x {} \
         consumer(s), acks={}, keys={:?}, batch {} B, linger {} ms, rate {}",
        workload.topics.len(),
        workload.partitions,
        workload.message_bytes,
        workload.producers,
        workload.consumer_groups,
        workload.consumers,
        workload.acks,
        workload.keys,
        workload.batch_bytes,
        workload.linger_ms,
        workload
            .rate_msgs_per_s
            .map_or_else(|| "max".to_owned(), |rate| format!("{rate:.0}/s"))
    );
    let _ = writeln!(
        out,
        "{:<10} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "msgs/s", "MB/s", "p50 ms", "p99 ms", "p99.9", "p99.99", "max ms"
    );
    let requests = &results.produce_request_latency;
    let mut rows = vec![
        (
            "produce",
            human_rate(results.produce_msgs_per_s),
            format!("{:.1}", results.produce_mb_per_s),
            &results.produce_latency,
        ),
        (
            "consume",
            human_rate(results.consume_msgs_per_s),
            format!("{:.1}", results.consume_mb_per_s),
            &results.e2e_latency,
        ),
    ];
    // acks=0: no request is answered, so there is no request row.
    if requests.samples > 0 {
        rows.push((
            "request",
            format!("{} req", requests.samples),
            String::new(),
            requests,
        ));
    }
    for (name, rate, mb, latency) in rows {
        let _ = writeln!(
            out,
            "{:<10} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            name,
            rate,
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
        "(produce latency = append to ack; request = produce request sent to answered; consume \
         latency = end to end, send to read)\n\
         produced {} messages, consumed {:?} per group",
        results.produced_messages, results.consumed_messages_per_group
    );
    if let (Some(spec), Some(routed)) = (
        &results.workload.exchange,
        results.exchange_routed_msgs_per_s,
    ) {
        let _ = writeln!(
            out,
            "exchange {} ({}, {} bindings, {} destinations): routed {} records/s, {} copies/s \
             delivered",
            spec.name,
            spec.exchange_type.name(),
            spec.bindings,
            spec.destinations.len(),
            human_rate(routed),
            results
                .exchange_copies_per_s
                .map_or_else(|| "-".to_owned(), human_rate)
        );
    }
    if let (Some(plain), Some(ratio)) = (
        results.plain_produce_msgs_per_s,
        results.routed_to_plain_ratio,
    ) {
        let _ = writeln!(
            out,
            "plain topic, same records: {} msgs/s; routed/plain = {:.0}%",
            human_rate(plain),
            ratio * 100.0
        );
    }
    if let Some(view) = &results.broker {
        let _ = writeln!(out, "{}", crate::broker_metrics::line(view));
    }
    for error in &results.errors {
        let _ = writeln!(out, "ERROR: {error}");
    }
    out
}

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 320.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 150.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 50.0;
/// The peer chart's panel: taller than a run's, the y axis spans more decades there.
const LATENCY_CHART_HEIGHT: f64 = 460.0;
const LEGEND_LINE: f64 = 20.0;

/// One chart's frame: where it sits, its size (a run's plot stacks two panels with the legend on
/// the right; the peer chart has one taller panel with the legend below) and its axis maxima.
struct Panel {
    top: f64,
    height: f64,
    margin_right: f64,
    x_max: f64,
    y_max: f64,
}

impl Panel {
    /// A panel of a run's plot: the standard height, room on the right for the legend.
    fn stacked(top: f64, x_max: f64, y_max: f64) -> Self {
        Panel {
            top,
            height: PANEL_HEIGHT,
            margin_right: MARGIN_RIGHT,
            x_max,
            y_max,
        }
    }
    fn x(&self, value: f64) -> f64 {
        MARGIN_LEFT + value / self.x_max * (WIDTH - MARGIN_LEFT - self.margin_right)
    }
    fn y(&self, value: f64) -> f64 {
        let height = self.height - MARGIN_TOP - MARGIN_BOTTOM;
        self.top + MARGIN_TOP + height - value / self.y_max * height
    }
    fn bottom(&self) -> f64 {
        self.y(0.0)
    }
}

/// A "nice" axis maximum at or above `value`.
fn nice_max(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= value {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// How a line is drawn. Dashes tell apart two measures of one run in the same colour; dots mark
/// curves known only at a few percentiles (a peer's summary), so nobody reads the straight
/// segments between them as measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stroke<'a> {
    pub colour: &'a str,
    pub dashed: bool,
    pub dots: bool,
}

impl<'a> Stroke<'a> {
    pub fn solid(colour: &'a str) -> Self {
        Stroke {
            colour,
            dashed: false,
            dots: false,
        }
    }
    fn dash_attribute(self) -> &'static str {
        if self.dashed {
            r#" stroke-dasharray="7 4""#
        } else {
            ""
        }
    }
}

fn polyline(out: &mut String, panel: &Panel, points: &[(f64, f64)], stroke: Stroke) {
    if points.is_empty() {
        return;
    }
    let coords: Vec<(f64, f64)> = points
        .iter()
        .map(|&(x, y)| (panel.x(x), panel.y(y)))
        .collect();
    let text: Vec<String> = coords
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{}" stroke-width="2"{} points="{}"/>"#,
        stroke.colour,
        stroke.dash_attribute(),
        text.join(" ")
    );
    if stroke.dots {
        for (x, y) in coords {
            let _ = writeln!(
                out,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{}"/>"#,
                stroke.colour
            );
        }
    }
}

fn axes(out: &mut String, panel: &Panel, title: &str, y_label: &str) {
    let left = panel.x(0.0);
    let right = panel.x(panel.x_max);
    let bottom = panel.bottom();
    let top = panel.y(panel.y_max);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="16" font-weight="bold">{title}</text>"#,
        left,
        panel.top + 25.0
    );
    let _ = writeln!(
        out,
        r##"<path d="M{left:.1},{top:.1} V{bottom:.1} H{right:.1}" stroke="#333" fill="none"/>"##
    );
    for tick in 0..=4 {
        let value = panel.y_max * f64::from(tick) / 4.0;
        let y = panel.y(value);
        let _ = writeln!(
            out,
            r##"<line x1="{left:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            left - 5.0,
            y + 4.0,
            axis_label(value)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="15" y="{:.1}" font-size="12" transform="rotate(-90 15 {:.1})" text-anchor="middle">{y_label}</text>"#,
        (top + bottom) / 2.0,
        (top + bottom) / 2.0
    );
}

fn axis_label(value: f64) -> String {
    if value >= 1e6 {
        format!("{}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{}k", value / 1e3)
    } else if value >= 10.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// The legend beside a stacked panel, in its right margin.
fn legend(out: &mut String, panel: &Panel, entries: &[(&str, Stroke)]) {
    let x = WIDTH - panel.margin_right + 15.0;
    legend_at(out, x, panel.top + MARGIN_TOP + 10.0, entries);
}

/// Legend entries one per line from (x, y): a sample of the line, then its name.
fn legend_at(out: &mut String, x: f64, y: f64, entries: &[(&str, Stroke)]) {
    for (index, (name, stroke)) in entries.iter().enumerate() {
        let y = y + index as f64 * LEGEND_LINE;
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-width="3"{}/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            x + 28.0,
            stroke.colour,
            stroke.dash_attribute(),
            x + 34.0,
            y + 4.0,
            escape(name)
        );
        if stroke.dots {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{y:.1}" r="3.5" fill="{}"/>"#,
                x + 14.0,
                stroke.colour
            );
        }
    }
}

/// Text for SVG content: names come from the command line (labels, titles) and may hold `<` or `&`.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One percentile curve of a latency panel.
pub struct Curve<'a> {
    /// The legend's words for it.
    pub name: &'a str,
    pub stroke: Stroke<'a>,
    pub latency: &'a Latency,
}

impl<'a> Curve<'a> {
    pub fn solid(name: &'a str, colour: &'a str, latency: &'a Latency) -> Self {
        Curve {
            name,
            stroke: Stroke::solid(colour),
            latency,
        }
    }
}

/// What one SVG shows: throughput over time for the two directions, and latency curves.
pub struct Plot<'a> {
    pub series: &'a [SeriesPoint],
    /// Legend names of the two throughput lines (sending side, receiving side).
    pub rate_names: [&'a str; 2],
    pub curves: Vec<Curve<'a>>,
}

/// The Kafka run's plot: produce and consume rates; produce ack, request and end-to-end curves.
pub fn svg(results: &Results) -> String {
    plot(&Plot {
        series: &results.series,
        rate_names: ["produce", "consume"],
        curves: vec![
            Curve::solid("produce ack", "#1f77b4", &results.produce_latency),
            Curve::solid(
                "produce request",
                "#2ca02c",
                &results.produce_request_latency,
            ),
            Curve::solid("end to end", "#d62728", &results.e2e_latency),
        ],
    })
}

/// Throughput over time (top) and latency percentile curves (bottom) as an SVG document.
pub fn plot(plot: &Plot) -> String {
    let mut out = String::new();
    let height = PANEL_HEIGHT * 2.0;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"#
    );
    throughput_panel(&mut out, plot);
    let panel = Panel::stacked(PANEL_HEIGHT, 1.0, 1.0);
    let panel = latency_panel(
        &mut out,
        panel,
        "Latency by percentile (log-log)",
        &plot.curves,
    );
    legend(&mut out, &panel, &legend_entries(&plot.curves));
    out.push_str("</svg>\n");
    out
}

/// One latency panel alone, taller than a run's plot, with the legend below it (one line per
/// curve, so that each can say in full what it measures): the peer comparison's chart.
pub fn latency_chart(title: &str, curves: &[Curve]) -> String {
    let panel = Panel {
        top: 0.0,
        height: LATENCY_CHART_HEIGHT,
        // Room for the last percentile label, centred on the right edge.
        margin_right: 45.0,
        x_max: 1.0,
        y_max: 1.0,
    };
    let height = LATENCY_CHART_HEIGHT + 10.0 + LEGEND_LINE * curves.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"#
    );
    latency_panel(&mut out, panel, title, curves);
    legend_at(
        &mut out,
        MARGIN_LEFT,
        LATENCY_CHART_HEIGHT + 5.0,
        &legend_entries(curves),
    );
    out.push_str("</svg>\n");
    out
}

fn legend_entries<'a>(curves: &'a [Curve<'a>]) -> Vec<(&'a str, Stroke<'a>)> {
    curves
        .iter()
        .map(|curve| (curve.name, curve.stroke))
        .collect()
}

fn throughput_panel(out: &mut String, plot: &Plot) {
    let series = plot.series;
    let t_max = series.last().map_or(1.0, |point| point.t_s);
    let rate_max = series
        .iter()
        .map(|point| point.produce_msgs_per_s.max(point.consume_msgs_per_s))
        .fold(0.0, f64::max);
    let panel = Panel::stacked(0.0, nice_max(t_max), nice_max(rate_max));
    axes(out, &panel, "Throughput over time", "messages/s");
    for tick in 0..=5 {
        let value = panel.x_max * f64::from(tick) / 5.0;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}s</text>"#,
            panel.x(value),
            panel.bottom() + 16.0,
            axis_label(value)
        );
    }
    let produce: Vec<(f64, f64)> = series
        .iter()
        .map(|point| (point.t_s, point.produce_msgs_per_s))
        .collect();
    let consume: Vec<(f64, f64)> = series
        .iter()
        .map(|point| (point.t_s, point.consume_msgs_per_s))
        .collect();
    let (sent, received) = (Stroke::solid("#1f77b4"), Stroke::solid("#d62728"));
    polyline(out, &panel, &produce, sent);
    polyline(out, &panel, &consume, received);
    legend(
        out,
        &panel,
        &[(plot.rate_names[0], sent), (plot.rate_names[1], received)],
    );
}

/// The percentile axis: x = log10(1 / (1 - p)), so 50% = 0.3, 90% = 1, 99% = 2, ..., capped at
/// six nines (HdrHistogram's plots): the tail gets as much width as the median.
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-6);
    -rest.log10()
}

/// The label of the percentile with `nines` nines: 90%, 99%, 99.9%, ...
fn nines_label(nines: u32) -> String {
    match nines {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        2 => "99%".to_owned(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

/// The decades a log latency axis spans: from the one holding the smallest positive value to the
/// one above the largest (at least one decade; 1 µs is the histogram's resolution).
fn decades(values: impl Iterator<Item = f64>) -> (i32, i32) {
    let (mut low, mut high) = (f64::INFINITY, 0.0f64);
    for value in values.filter(|value| *value > 0.0 && value.is_finite()) {
        low = low.min(value);
        high = high.max(value);
    }
    if high <= 0.0 {
        return (0, 1);
    }
    let low = (low.max(1e-3).log10().floor() as i32).max(-3);
    let high = (high.log10().ceil() as i32).max(low + 1);
    (low, high)
}

/// Latency by percentile on log-log axes: x as `nines`, y as log10(ms), so that p50 to p99.99
/// and microseconds to seconds all stay readable in one panel. `frame` gives the panel's place
/// and size; its axis maxima are set here from the curves. Returns the panel drawn, for the legend.
fn latency_panel(out: &mut String, frame: Panel, title: &str, curves: &[Curve]) -> Panel {
    let curves_points: Vec<Vec<(f64, f64)>> = curves
        .iter()
        .map(|curve| {
            let points = curve.latency.curve.iter();
            points
                .map(|&(percentile, ms)| (nines(percentile), ms))
                .collect()
        })
        .collect();
    let (low, high) = decades(curves_points.iter().flatten().map(|point| point.1));
    let x_max = curves_points
        .iter()
        .flatten()
        .map(|point| point.0)
        .fold(2.0, f64::max)
        .ceil();
    // Plotted in log space: y = log10(ms) - low decade, so the panel's linear mapping applies.
    let panel = Panel {
        x_max,
        y_max: f64::from(high - low),
        ..frame
    };
    let floor = 10f64.powi(low);
    let log_y = |ms: f64| (ms.max(floor).log10() - f64::from(low)).max(0.0);
    latency_axes(out, &panel, title, low, high);
    let mut ticks: Vec<(f64, String)> = vec![(nines(50.0), "50%".to_owned())];
    ticks.extend((1..=x_max as u32).map(|nine| (f64::from(nine), nines_label(nine))));
    for (x, label) in ticks {
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{label}</text>"##,
            panel.y(panel.y_max),
            panel.bottom(),
            panel.bottom() + 16.0,
            x = panel.x(x),
        );
    }
    for (points, curve) in curves_points.iter().zip(curves) {
        let points: Vec<(f64, f64)> = points.iter().map(|&(x, ms)| (x, log_y(ms))).collect();
        polyline(out, &panel, &points, curve.stroke);
    }
    panel
}

/// The latency panel's frame: a gridline and label per decade of milliseconds from `low` to
/// `high`, lighter lines at 2x and 5x, and the axis titles.
fn latency_axes(out: &mut String, panel: &Panel, title: &str, low: i32, high: i32) {
    let (left, right) = (panel.x(0.0), panel.x(panel.x_max));
    let (top, bottom) = (panel.y(panel.y_max), panel.bottom());
    let _ = writeln!(
        out,
        r#"<text x="{left:.1}" y="{:.1}" font-size="16" font-weight="bold">{}</text>"#,
        panel.top + 25.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r##"<path d="M{left:.1},{top:.1} V{bottom:.1} H{right:.1}" stroke="#333" fill="none"/>"##
    );
    for decade in low..=high {
        let y = panel.y(f64::from(decade - low));
        let _ = writeln!(
            out,
            r##"<line x1="{left:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="#bbb"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            left - 5.0,
            y + 4.0,
            ms_label(decade)
        );
        if decade < high {
            for minor in [2.0f64, 5.0] {
                let y = panel.y(f64::from(decade - low) + minor.log10());
                let _ = writeln!(
                    out,
                    r##"<line x1="{left:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="#eee"/>"##
                );
            }
        }
    }
    let _ = writeln!(
        out,
        r#"<text x="15" y="{:.1}" font-size="12" transform="rotate(-90 15 {:.1})" text-anchor="middle">milliseconds (log)</text>"#,
        (top + bottom) / 2.0,
        (top + bottom) / 2.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">percentile (log of 1/(1-p))</text>"#,
        (left + right) / 2.0,
        bottom + 34.0
    );
}

/// 10^decade milliseconds as an axis label: 0.001, 0.01, ..., 1, 10, 100, 1000.
fn ms_label(decade: i32) -> String {
    if decade >= 0 {
        format!("{}", 10u64.pow(decade as u32))
    } else {
        format!("{:.*}", (-decade) as usize, 10f64.powi(decade))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats;

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let mut histogram = stats::new_histogram();
        for micros in 1..=10_000u64 {
            stats::record(&mut histogram, micros * 1000, 1);
        }
        let latency = Latency::from_histogram(&histogram);
        assert_eq!(latency.samples, 10_000);
        let p99 = latency.p99_ms.unwrap();
        assert!((9.85..=9.95).contains(&p99), "{p99}");
        assert!(latency.curve.len() > 30);
        assert!(latency.curve.windows(2).all(|pair| pair[0].1 <= pair[1].1));
        assert_eq!(
            Latency::from_histogram(&stats::new_histogram()).p99_ms,
            None
        );
    }

    #[test]
    fn nice_axis_maxima() {
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(2.2), 2.5);
        assert_eq!(nice_max(1_300_000.0), 2_000_000.0);
        assert_eq!(nice_max(0.0), 1.0);
    }

    #[test]
    fn latency_chart_escapes_names_and_lists_them_below() {
        let mut histogram = stats::new_histogram();
        stats::record(&mut histogram, 2_000_000, 1);
        let latency = Latency::from_histogram(&histogram);
        let svg = latency_chart("a < b", &[Curve::solid("x & y", "#123456", &latency)]);
        assert!(svg.contains(">a &lt; b</text>"), "{svg}");
        assert!(svg.contains(">x &amp; y</text>"), "{svg}");
        assert!(svg.contains(r##"<polyline fill="none" stroke="#123456""##));
        // The legend's line sits under the panel, not in a right-hand margin.
        let legend = svg.lines().find(|line| line.contains("x &amp; y")).unwrap();
        assert!(legend.contains(&format!(r#"y1="{:.1}""#, LATENCY_CHART_HEIGHT + 5.0)));
    }

    #[test]
    fn log_latency_axes() {
        assert_eq!(decades([0.35, 12.0].into_iter()), (-1, 2));
        assert_eq!(decades([1.0].into_iter()), (0, 1));
        assert_eq!(decades([0.0, 0.0].into_iter()), (0, 1));
        assert_eq!(decades([0.000_1, 0.002].into_iter()), (-3, -2));
        assert_eq!(ms_label(-2), "0.01");
        assert_eq!(ms_label(3), "1000");
        assert_eq!(nines_label(4), "99.99%");
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
    }
}
