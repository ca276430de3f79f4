//! The Prometheus endpoint (`--metrics-listen`, `GET /metrics`) of the real broker: its counters
//! move by what real clients did (kcat produce and consume, a confluent-kafka consumer group, pika
//! publish/get/ack), as the Prometheus project's own text parser reads them
//! (`clients/metrics.py`); and hostile or broken scrapers (garbage, an oversize head, a client that
//! never finishes its request) get a clean answer or close while others are still served.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use weir_tests::{kcat, python, stdout_of, summary, Broker, BrokerOptions};

type Samples = BTreeMap<String, f64>;

fn samples_of(value: &serde_json::Value) -> Result<Samples> {
    let object = value.as_object().context("samples: not an object")?;
    object
        .iter()
        .map(|(key, value)| Ok((key.clone(), value.as_f64().context("sample value")?)))
        .collect()
}

/// One scrape, parsed by prometheus_client.
fn scrape(broker: &Broker) -> Result<Samples> {
    let url = format!("http://{}/metrics", broker.metrics_addr());
    let output = python("metrics.py", &["scrape", &url])?;
    samples_of(&summary(&output)?["samples"])
}

fn value(samples: &Samples, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

/// The sample `key`, which must be there.
fn value_of(samples: &Samples, key: &str) -> Result<f64> {
    samples
        .get(key)
        .copied()
        .with_context(|| format!("no sample {key}"))
}

/// How much `key` moved from `before` to `after`.
fn moved(before: &Samples, after: &Samples, key: &str) -> f64 {
    value(after, key) - value(before, key)
}

/// The sum of every sample of `name` whose labels include `with` (`k=v`).
fn sum_of(samples: &Samples, name: &str, with: &str) -> f64 {
    samples
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{name}{{")) && key.contains(with))
        .map(|(_, value)| value)
        .sum()
}

#[test]
fn counters_follow_kafka_and_amqp_clients() -> Result<()> {
    // flush.messages=1: every produce is fdatasynced, so the fsync counters have work to count.
    let options = BrokerOptions::default()
        .set("num.partitions", "3")
        .set("flush.messages", "1");
    let broker = Broker::start(options)?;
    let before = scrape(&broker)?;
    ensure!(value(&before, "weir_shards") == broker.shards() as f64);
    ensure!(value(&before, "process_resident_memory_bytes") > 1e6);
    let after = kafka_clients_move_counters(&broker, &before)?;
    request_counts_and_histograms_agree(&before, &after)?;
    storage_counters_follow(&before, &after)?;
    group_lag_follows_new_records(&broker)?;
    amqp_clients_move_queue_counters(&broker, &before)
}

/// kcat produces 100 records and reads them back, a confluent-kafka group reads them again: the
/// per-topic counters, offsets and gauges move by exactly that. Answers the scrape after.
fn kafka_clients_move_counters(broker: &Broker, before: &Samples) -> Result<Samples> {
    let bootstrap = broker.bootstrap();
    let lines: String = (0..100).map(|i| format!("record-{i}\n")).collect();
    stdout_of(&kcat(
        &["-b", &bootstrap, "-P", "-t", "metrics-topic"],
        lines.as_bytes(),
    )?)?;
    let consumed = stdout_of(&kcat(
        &["-b", &bootstrap, "-C", "-e", "-q", "-t", "metrics-topic"],
        b"",
    )?)?;
    ensure!(consumed.lines().count() == 100, "kcat read back {consumed}");
    summary(&python(
        "metrics.py",
        &[
            "group",
            "--bootstrap",
            &bootstrap,
            "--topic",
            "metrics-topic",
            "--group",
            "metrics-group",
            "--count",
            "100",
        ],
    )?)?;
    let after = scrape(broker)?;

    let topic = "topic=metrics-topic";
    let key = |name: &str| format!("{name}{{{topic}}}");
    ensure!(moved(before, &after, &key("weir_kafka_records_produced_total")) == 100.0);
    // kcat and the group consumer each read every record once.
    ensure!(moved(before, &after, &key("weir_kafka_records_fetched_total")) == 200.0);
    let produced_bytes = value(
        &after,
        "weir_kafka_request_bytes_total{request=produce,topic=metrics-topic}",
    );
    let fetched_bytes = value(
        &after,
        "weir_kafka_request_bytes_total{request=consume,topic=metrics-topic}",
    );
    ensure!(produced_bytes > 100.0 * 8.0, "{produced_bytes}");
    ensure!(
        fetched_bytes == 2.0 * produced_bytes,
        "{fetched_bytes} vs {produced_bytes}"
    );
    ensure!(sum_of(&after, "weir_kafka_max_offset", topic) == 100.0);
    ensure!(sum_of(&after, "weir_kafka_log_start_offset", topic) == 0.0);
    ensure!(value(&after, &key("weir_kafka_partitions")) == 3.0);
    ensure!(value(&after, "weir_kafka_consumer_groups") >= 1.0);
    Ok(after)
}

fn request_counts_and_histograms_agree(before: &Samples, after: &Samples) -> Result<()> {
    // Every request counted is in the latency histogram, and the produce requests were seen.
    let produce = "handler=produce";
    let requests = moved(
        before,
        after,
        &format!("weir_kafka_handler_requests_total{{{produce}}}"),
    );
    ensure!(requests >= 1.0, "{requests} produce requests");
    ensure!(
        value(
            after,
            &format!("weir_kafka_handler_latency_seconds_count{{{produce}}}")
        ) == value(
            after,
            &format!("weir_kafka_handler_requests_total{{{produce}}}")
        )
    );
    ensure!(
        value(
            after,
            &format!("weir_kafka_handler_latency_seconds_bucket{{{produce},le=+Inf}}")
        ) == value(
            after,
            &format!("weir_kafka_handler_requests_total{{{produce}}}")
        )
    );
    ensure!(
        moved(
            before,
            after,
            "weir_kafka_handler_requests_total{handler=fetch}"
        ) >= 2.0
    );
    ensure!(
        sum_of(
            after,
            "weir_listener_connections_accepted_total",
            "listener="
        ) >= 3.0
    );
    Ok(())
}

/// The produce was written and fdatasynced (flush.messages=1), and both reads were served from
/// the tail cache or disk; every histogram's count is its +Inf bucket.
fn storage_counters_follow(before: &Samples, after: &Samples) -> Result<()> {
    for name in [
        "weir_storage_fsync_latency_seconds",
        "weir_storage_write_latency_seconds",
    ] {
        let count = moved(before, after, &format!("{name}_count"));
        ensure!(count >= 1.0, "{name}: {count}");
        let inf = value(after, &format!("{name}_bucket{{le=+Inf}}"));
        ensure!(
            inf == value(after, &format!("{name}_count")),
            "{name}: +Inf {inf}"
        );
    }
    let fsyncs = sum_of(after, "weir_storage_fsyncs_total", "shard=")
        - sum_of(before, "weir_storage_fsyncs_total", "shard=");
    ensure!(
        fsyncs == moved(before, after, "weir_storage_fsync_latency_seconds_count"),
        "{fsyncs} fsyncs"
    );
    let reads = sum_of(after, "weir_log_reads_total", "source=")
        - sum_of(before, "weir_log_reads_total", "source=");
    ensure!(reads >= 2.0, "{reads} log reads for two readers");
    // Device reads (start-up scans, fetches from disk, read-aheads): each is at least one block.
    let device_reads = value_of(after, "weir_storage_reads_total")?;
    let device_bytes = value_of(after, "weir_storage_read_bytes_total")?;
    ensure!(
        device_bytes >= device_reads * 4096.0,
        "{device_reads} device reads of {device_bytes} bytes"
    );
    // The watcher runs on every shard (a stall is not expected, so only its presence is checked).
    let stall_rows = after
        .keys()
        .filter(|key| key.starts_with("weir_reactor_stalls_total{"))
        .count();
    ensure!(
        stall_rows == broker_shards(after),
        "{stall_rows} stall rows"
    );
    Ok(())
}

fn broker_shards(samples: &Samples) -> usize {
    value(samples, "weir_shards") as usize
}

/// The group committed all 100 records: lag 0. Thirty more records make its lag 30, per
/// partition (summed) and per group, with the committed offsets unchanged.
fn group_lag_follows_new_records(broker: &Broker) -> Result<()> {
    let group = "group=metrics-group";
    let caught_up = scrape(broker)?;
    ensure!(
        sum_of(
            &caught_up,
            "weir_kafka_consumer_group_committed_offset",
            group
        ) == 100.0
    );
    ensure!(sum_of(&caught_up, "weir_kafka_consumer_group_lag", group) == 0.0);
    // Into a partition the group committed (kcat may have put all 100 records in one).
    let partition = caught_up
        .iter()
        .find(|(key, value)| {
            key.starts_with("weir_kafka_consumer_group_committed_offset{")
                && key.contains(group)
                && **value > 0.0
        })
        .and_then(|(key, _)| key.split("partition=").nth(1)?.split(',').next())
        .context("no committed partition")?
        .to_string();
    let lines: String = (0..30).map(|i| format!("late-{i}\n")).collect();
    stdout_of(&kcat(
        &[
            "-b",
            &broker.bootstrap(),
            "-P",
            "-t",
            "metrics-topic",
            "-p",
            &partition,
        ],
        lines.as_bytes(),
    )?)?;
    let behind = scrape(broker)?;
    let lag_rows = sum_of(
        &behind,
        "weir_kafka_consumer_group_lag",
        "group=metrics-group,",
    );
    ensure!(lag_rows == 30.0, "lag over partitions {lag_rows}");
    let key = |name: &str| format!("{name}{{{group}}}");
    ensure!(value(&behind, &key("weir_kafka_consumer_group_lag_sum")) == 30.0);
    let max = value(&behind, &key("weir_kafka_consumer_group_lag_max"));
    ensure!(max > 0.0 && max <= 30.0, "lag max {max}");
    ensure!(sum_of(&behind, "weir_kafka_consumer_group_committed_offset", group) == 100.0);
    Ok(())
}

fn amqp_clients_move_queue_counters(broker: &Broker, before: &Samples) -> Result<()> {
    // AMQP: 10 published, 6 got and acked, 2 got and held while scraping, 2 left ready.
    let metrics_url = format!("http://{}/metrics", broker.metrics_addr());
    let output = python(
        "metrics.py",
        &[
            "amqp",
            "--amqp",
            &broker.amqp_url(),
            "--metrics",
            &metrics_url,
            "--queue",
            "metrics-q",
        ],
    )?;
    let during = samples_of(&summary(&output)?["during"])?;
    let queue = |name: &str| format!("{name}{{queue=metrics-q,vhost=/}}");
    let expect = |samples: &Samples, name: &str, want: f64| -> Result<()> {
        let got = value(samples, &queue(name));
        ensure!(got == want, "{name}: {got}, expected {want}");
        Ok(())
    };
    expect(&during, "rabbitmq_queue_messages_ready", 2.0)?;
    expect(&during, "rabbitmq_queue_messages_unacked", 2.0)?;
    expect(&during, "rabbitmq_queue_messages", 4.0)?;
    expect(&during, "rabbitmq_queue_messages_published_total", 10.0)?;
    expect(&during, "rabbitmq_queue_messages_delivered_total", 8.0)?;
    expect(&during, "rabbitmq_queue_messages_acked_total", 6.0)?;
    ensure!(value(&during, "rabbitmq_connections") == 1.0);
    ensure!(value(&during, "rabbitmq_channels") == 1.0);
    ensure!(value(&during, "rabbitmq_queues") == 1.0);
    ensure!(
        value(
            &during,
            "weir_kafka_records_produced_total{topic=metrics-q}"
        ) == 10.0
    );

    // The connection closed: its two deliveries went back, its channel and connection are gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        let now = scrape(broker)?;
        if value(&now, "rabbitmq_connections") == 0.0 || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    expect(&closed, "rabbitmq_queue_messages_ready", 4.0)?;
    expect(&closed, "rabbitmq_queue_messages_unacked", 0.0)?;
    ensure!(value(&closed, "rabbitmq_connections") == 0.0);
    ensure!(value(&closed, "rabbitmq_channels") == 0.0);
    ensure!(moved(before, &closed, "rabbitmq_connections_opened_total") == 1.0);
    Ok(())
}

/// Sends `request` on a fresh connection and reads until the broker closes it (bounded).
fn exchange(broker: &Broker, request: &[u8]) -> Result<String> {
    let mut stream = TcpStream::connect(broker.metrics_addr())?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .context("reading the answer to its end")?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[test]
fn bad_requests_get_clean_answers_and_a_stalled_client_blocks_no_one() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default())?;
    let ok = exchange(&broker, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    ensure!(status_line(&ok) == "HTTP/1.1 200 OK", "{ok}");
    ensure!(ok.contains("\r\n\r\n# HELP weir_shards "), "{ok}");
    let answers = [
        (
            &b"GET /other HTTP/1.1\r\n\r\n"[..],
            "HTTP/1.1 404 Not Found",
        ),
        (
            b"POST /metrics HTTP/1.1\r\n\r\n",
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (b"\x00\x01\xff garbage\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (b"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    ];
    for (request, want) in answers {
        let answer = exchange(&broker, request)?;
        ensure!(status_line(&answer) == want, "{request:?}: {answer}");
    }
    // A head that never ends, past the limit: 431, then the connection closes.
    let mut oversize = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    oversize.extend(std::iter::repeat_n(b'a', 64 << 10));
    let answer = exchange(&broker, &oversize)?;
    ensure!(
        status_line(&answer) == "HTTP/1.1 431 Request Header Fields Too Large",
        "{answer}"
    );

    // A client that sends half a request and waits: others are answered meanwhile, and it is
    // closed once its time is up.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(broker.metrics_addr())?;
    stalled.write_all(b"GET /metr")?;
    for _ in 0..3 {
        let answer = exchange(&broker, b"GET /metrics HTTP/1.1\r\n\r\n")?;
        ensure!(status_line(&answer) == "HTTP/1.1 200 OK");
    }
    ensure!(
        started.elapsed() < Duration::from_secs(2),
        "scrapes waited on a stalled client"
    );
    stalled.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut rest = Vec::new();
    let read = stalled.read_to_end(&mut rest);
    ensure!(
        read.is_ok() && rest.is_empty(),
        "the stalled client got {read:?} {rest:?}"
    );
    let waited = started.elapsed();
    ensure!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );
    // The endpoint still answers, and the Kafka side never noticed.
    let answer = exchange(&broker, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")?;
    ensure!(status_line(&answer) == "HTTP/1.1 200 OK");
    stdout_of(&kcat(&["-b", &broker.bootstrap(), "-L"], b"")?)?;
    Ok(())
}
