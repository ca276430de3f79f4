//! `weir-bench peer-chart`: Weir's produce latency curves and a peer's (Apache Iggy's) on one
//! log-log latency chart, drawn by `report::latency_chart` as a run's `--plot` is. Inputs are
//! files other runs wrote: weir-bench's `--json` and iggy-bench's `report.json` (its `output -o
//! DIR` subcommand); `bench-harness/peers/iggy.sh` calls this once per produce workload.
//!
//! iggy-bench keeps no histogram in its report: only, per actor group, the mean over actors of
//! each actor's p50, p90, p95, p99, p99.9 and p99.99 of one batch's round trip (send of a batch
//! to its ack). Those six points are Iggy's curve, dotted so that nobody reads the segments
//! between them as measured. Its "max" is left out: iggy-bench takes it from a time series of
//! 10 ms averages, not from the samples, so it can sit below its own p99.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;

use crate::report::{self, Curve, Latency, Stroke};

#[derive(clap::Args, Debug)]
pub struct PeerChartArgs {
    /// iggy-bench's report.json (written by `iggy-bench ... tcp ... output -o DIR`).
    #[arg(long)]
    pub iggy: PathBuf,
    /// A weir-bench --json result, as LABEL=PATH (LABEL names the run's settings in the legend).
    /// Repeatable; each gives two curves: per produce request and per record.
    #[arg(long = "weir", value_name = "LABEL=PATH", required = true)]
    pub weir: Vec<String>,
    /// The chart's title.
    #[arg(long, default_value = "Produce latency by percentile (log-log)")]
    pub title: String,
    /// Where the SVG goes.
    #[arg(long)]
    pub out: PathBuf,
}

/// Colours of the Weir runs in order (Iggy's is orange); dashed = per record, solid = per request.
const WEIR_COLOURS: [&str; 4] = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b"];
const IGGY_COLOUR: &str = "#ff7f0e";

pub fn run(args: &PeerChartArgs) -> Result<()> {
    let iggy = read_iggy(&args.iggy)?;
    let weir = args
        .weir
        .iter()
        .map(|spec| read_weir(spec))
        .collect::<Result<Vec<_>>>()?;
    let svg = chart(&args.title, &iggy, &weir);
    std::fs::write(&args.out, svg).with_context(|| format!("writing {}", args.out.display()))
}

/// One Weir run's two produce curves, from its --json.
#[derive(Debug, Deserialize)]
pub struct WeirRun {
    #[serde(skip)]
    pub label: String,
    /// Per record: appended to the batch -> its ack read.
    pub produce_latency: Latency,
    /// Per request: written to the socket -> answered.
    pub produce_request_latency: Latency,
}

impl WeirRun {
    /// What one request carried, as a whole number: the legend's size of Weir's round trip
    /// beside Iggy's batch. Both histograms cover the same measured interval.
    fn records_per_request(&self) -> u64 {
        let requests = self.produce_request_latency.samples.max(1);
        (self.produce_latency.samples + requests / 2) / requests
    }
}

fn read_weir(spec: &str) -> Result<WeirRun> {
    let Some((label, path)) = spec.split_once('=') else {
        bail!("--weir {spec}: expected LABEL=PATH");
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut run: WeirRun =
        serde_json::from_str(&text).with_context(|| format!("{path}: not a weir-bench --json"))?;
    ensure!(
        !run.produce_request_latency.curve.is_empty(),
        "{path}: no produce latency (a consume-only run?)"
    );
    run.label = label.to_owned();
    Ok(run)
}

/// Iggy's producers, as its report gives them.
#[derive(Debug)]
pub struct IggyRun {
    /// Producers in the run (the percentiles are means over them).
    pub producers: usize,
    /// Messages per batch: what one round trip carries.
    pub messages_per_batch: u64,
    /// The percentile points, with `samples` = batches per producer (the fewest of any).
    pub latency: Latency,
}

// The parts of iggy-bench's report.json read here (core/bench/report/src/types at cc269ef);
// serde skips the rest.
#[derive(Deserialize)]
struct IggyReport {
    params: IggyParams,
    group_metrics: Vec<IggyGroup>,
    individual_metrics: Vec<IggyActor>,
}

#[derive(Deserialize)]
struct IggyParams {
    messages_per_batch: u64,
}

#[derive(Deserialize)]
struct IggyGroup {
    summary: IggyGroupSummary,
}

#[derive(Deserialize)]
struct IggyGroupSummary {
    kind: String,
    average_p50_latency_ms: f64,
    average_p90_latency_ms: f64,
    average_p95_latency_ms: f64,
    average_p99_latency_ms: f64,
    average_p999_latency_ms: f64,
    average_p9999_latency_ms: f64,
}

#[derive(Deserialize)]
struct IggyActor {
    summary: IggyActorSummary,
}

#[derive(Deserialize)]
struct IggyActorSummary {
    actor_kind: String,
    total_message_batches: u64,
}

fn read_iggy(path: &Path) -> Result<IggyRun> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_iggy(&text).with_context(|| format!("{}: iggy-bench report.json", path.display()))
}

pub fn parse_iggy(text: &str) -> Result<IggyRun> {
    let report: IggyReport = serde_json::from_str(text)?;
    let Some(group) = report
        .group_metrics
        .iter()
        .find(|group| group.summary.kind == "producers")
    else {
        bail!("no producers' group (a consumer benchmark?)");
    };
    let batches: Vec<u64> = report
        .individual_metrics
        .iter()
        .filter(|actor| actor.summary.actor_kind == "producer")
        .map(|actor| actor.summary.total_message_batches)
        .collect();
    let samples = batches.iter().copied().min().unwrap_or(0);
    ensure!(samples > 0, "no producer sent a batch");
    let summary = &group.summary;
    let points = [
        (50.0, summary.average_p50_latency_ms),
        (90.0, summary.average_p90_latency_ms),
        (95.0, summary.average_p95_latency_ms),
        (99.0, summary.average_p99_latency_ms),
        (99.9, summary.average_p999_latency_ms),
        (99.99, summary.average_p9999_latency_ms),
    ];
    Ok(IggyRun {
        producers: batches.len(),
        messages_per_batch: report.params.messages_per_batch,
        latency: Latency {
            samples,
            p50_ms: Some(summary.average_p50_latency_ms),
            p99_ms: Some(summary.average_p99_latency_ms),
            p999_ms: Some(summary.average_p999_latency_ms),
            p9999_ms: Some(summary.average_p9999_latency_ms),
            max_ms: None,
            curve: supported(&points, samples),
        },
    })
}

/// The points `samples` can tell apart, by `Latency::from_histogram`'s rule: a percentile p
/// needs (1 - p) x samples >= 1; the first beyond that closes the curve (it is then about the
/// maximum), the rest would repeat it.
fn supported(points: &[(f64, f64)], samples: u64) -> Vec<(f64, f64)> {
    let mut curve = Vec::new();
    for &(percentile, ms) in points {
        curve.push((percentile, ms));
        // The tolerance keeps exact products (10% of 10 samples) from rounding below 1.
        if (100.0 - percentile) / 100.0 * (samples as f64) < 1.0 - 1e-9 {
            break;
        }
    }
    curve
}

/// The SVG: Iggy's points first, then each Weir run per request and per record.
pub fn chart(title: &str, iggy: &IggyRun, weir: &[WeirRun]) -> String {
    let dotted = Stroke {
        dots: true,
        ..Stroke::solid(IGGY_COLOUR)
    };
    let mut lines: Vec<(String, Stroke, &Latency)> = vec![(iggy_name(iggy), dotted, &iggy.latency)];
    for (index, run) in weir.iter().enumerate() {
        let colour = WEIR_COLOURS[index % WEIR_COLOURS.len()];
        let dashed = Stroke {
            dashed: true,
            ..Stroke::solid(colour)
        };
        let request = &run.produce_request_latency;
        lines.push((request_name(run), Stroke::solid(colour), request));
        lines.push((record_name(run), dashed, &run.produce_latency));
    }
    let curves: Vec<Curve> = lines
        .iter()
        .map(|(name, stroke, latency)| Curve {
            name,
            stroke: *stroke,
            latency,
        })
        .collect();
    report::latency_chart(title, &curves)
}

fn request_name(run: &WeirRun) -> String {
    format!(
        "Weir {}: per produce request, written to answered ({} requests, {} records each on average)",
        run.label,
        run.produce_request_latency.samples,
        run.records_per_request()
    )
}

fn record_name(run: &WeirRun) -> String {
    format!(
        "Weir {}: per record, appended to acked ({} records)",
        run.label, run.produce_latency.samples
    )
}

fn iggy_name(iggy: &IggyRun) -> String {
    let mut name = format!(
        "Iggy: per batch round trip, send of {} messages to ack ({} batches",
        iggy.messages_per_batch, iggy.latency.samples
    );
    if iggy.producers > 1 {
        // iggy-bench's group figures: each producer's percentile, averaged.
        name += &format!(
            " per producer; mean of {} producers' percentiles",
            iggy.producers
        );
    }
    name + ")"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// iggy-bench cc269ef's report.json of `-b 2000 -m 100 -P 1000 pinned-producer --producers 2
    /// --streams 2 tcp` (iggy.sh's 100b-2p, 2026-12-08 01:00 UTC), as written.
    const IGGY_REPORT: &str = include_str!("../tests/fixtures/iggy-report-100b-2p.json");
    /// weir-bench --json of the matched Weir run of the same sitting.
    const WEIR_PATH: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/weir-matched-100b-2p.json"
    );

    #[test]
    fn iggy_report_gives_its_producers_percentiles() {
        let iggy = parse_iggy(IGGY_REPORT).unwrap();
        assert_eq!(iggy.producers, 2);
        assert_eq!(iggy.messages_per_batch, 1000);
        assert_eq!(iggy.latency.samples, 2000);
        assert_eq!(iggy.latency.p99_ms, Some(5.08));
        assert_eq!(iggy.latency.max_ms, None);
        assert_eq!(
            iggy.latency.curve,
            vec![
                (50.0, 0.59),
                (90.0, 2.104),
                (95.0, 3.403),
                (99.0, 5.08),
                (99.9, 5.776),
                (99.99, 5.956)
            ]
        );
    }

    #[test]
    fn iggy_report_without_producers_is_refused() {
        let consumers = IGGY_REPORT.replace(r#""kind":"producers""#, r#""kind":"consumers""#);
        assert_ne!(consumers, IGGY_REPORT);
        let error = parse_iggy(&consumers).unwrap_err();
        assert!(error.to_string().contains("producers"), "{error}");
        assert!(parse_iggy("{}").is_err());
    }

    #[test]
    fn iggy_points_stop_where_the_samples_do() {
        let points = [
            (50.0, 1.0),
            (90.0, 2.0),
            (95.0, 3.0),
            (99.0, 4.0),
            (99.9, 5.0),
        ];
        let percentiles = |samples| -> Vec<f64> {
            let curve = supported(&points, samples);
            curve.iter().map(|point| point.0).collect()
        };
        assert_eq!(percentiles(1000), [50.0, 90.0, 95.0, 99.0, 99.9]);
        assert_eq!(percentiles(200), [50.0, 90.0, 95.0, 99.0, 99.9]);
        // 10 samples: p90 is the 1-in-10, p95 closes the curve, the rest is dropped.
        assert_eq!(percentiles(10), [50.0, 90.0, 95.0]);
        assert_eq!(percentiles(1), [50.0]);
    }

    #[test]
    fn weir_runs_read_with_their_label() {
        let run = read_weir(&format!("matched={WEIR_PATH}")).unwrap();
        assert_eq!(run.label, "matched");
        assert_eq!(run.produce_request_latency.samples, 14_435);
        assert_eq!(run.records_per_request(), 1859);
        assert!(read_weir(WEIR_PATH).is_err());
    }

    #[test]
    fn chart_draws_both_brokers() {
        let iggy = parse_iggy(IGGY_REPORT).unwrap();
        let weir = read_weir(&format!("matched={WEIR_PATH}")).unwrap();
        let svg = chart("100b-2p", &iggy, &[weir]);
        let iggy_lines: Vec<&str> = svg
            .lines()
            .filter(|line| {
                line.starts_with(&format!(r#"<polyline fill="none" stroke="{IGGY_COLOUR}""#))
            })
            .collect();
        assert_eq!(iggy_lines.len(), 1, "{svg}");
        assert_eq!(
            iggy_lines[0].matches(',').count(),
            6,
            "one vertex per percentile"
        );
        let dots = format!(r#"fill="{IGGY_COLOUR}""#);
        assert_eq!(
            svg.matches(&dots).count(),
            6 + 1,
            "six points and the legend's"
        );
        let weir = format!(r#"<polyline fill="none" stroke="{}""#, WEIR_COLOURS[0]);
        assert_eq!(svg.matches(&weir).count(), 2, "per request and per record");
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            2,
            "per record, line and legend"
        );
        for legend in [
            "Iggy: per batch round trip, send of 1000 messages to ack (2000 batches per producer; mean of 2 producers' percentiles)",
            "Weir matched: per produce request, written to answered (14435 requests, 1859 records each on average)",
            "Weir matched: per record, appended to acked (26841252 records)",
        ] {
            assert!(svg.contains(legend), "{legend} missing from {svg}");
        }
    }
}
