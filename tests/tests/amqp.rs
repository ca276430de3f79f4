//! AMQP 0-9-1 end to end with pika 1.4.4 against the release binary (`--amqp-listen` on the
//! harness's port): the seeds' examples, RabbitMQ's six tutorials, redelivery of unacknowledged
//! messages, durability across a restart, and hostile clients on raw sockets, among them 10,000
//! channel.open on one connection and 1,000 idle connections with the broker's memory measured
//! (`scale.py`). The scripts are in `tests/clients/amqp/`; each prints a JSON summary that the
//! test checks.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use weir_tests::{python, summary, Broker, BrokerOptions};

fn run(broker: &Broker, script: &str, extra: &[&str]) -> Result<Value> {
    let url = broker.amqp_url();
    let mut args = vec![url.as_str()];
    args.extend_from_slice(extra);
    summary(&python(&format!("amqp/{script}"), &args)?)
}

fn two_shards() -> Result<Broker> {
    Broker::start(BrokerOptions::default().cpus("0-1"))
}

#[test]
fn the_seeds_examples_run_unmodified() -> Result<()> {
    let broker = two_shards()?;
    let got = run(&broker, "seeds.py", &[])?;
    assert_eq!(got["hello"], json!(["Hello World!"]), "{got}");
    assert_eq!(
        got["email_handled"],
        json!([123, 124, 125, 126, 127]),
        "{got}"
    );
    assert_eq!(got["email_left"], json!(0), "{got}");
    assert_eq!(got["my_exchange"], json!(["do it"]), "{got}");
    Ok(())
}

#[test]
fn rabbitmq_tutorials_one_to_six_pass() -> Result<()> {
    let broker = two_shards()?;
    let got = run(&broker, "tutorials.py", &[])?;
    assert_eq!(got["one"], json!(["Hello World!"]), "{got}");
    // Work queues: every task done once, shared by both prefetch-1 workers.
    assert_eq!(got["two"]["all"], json!(true), "{got}");
    for worker in ["a", "b"] {
        let done = got["two"][worker].as_array().map_or(0, Vec::len);
        assert!(done >= 2, "worker {worker} did {done} tasks: {got}");
    }
    // Publish/subscribe: both exclusive server-named queues get every message.
    let fanout = json!(["info: one", "info: two"]);
    assert_eq!(got["three"]["received"], json!([fanout, fanout]), "{got}");
    for queue in got["three"]["queues"].as_array().into_iter().flatten() {
        let name = queue.as_str().unwrap_or_default();
        assert!(name.starts_with("amq.gen-") && name.len() == 30, "{name}");
    }
    assert_eq!(
        got["four"],
        json!([["an error"], ["an info", "a warning", "an error"]]),
        "{got}"
    );
    assert_eq!(
        got["five"],
        json!([
            ["A critical kernel error", "app critical"],
            ["A critical kernel error", "kernel info"],
            [
                "A critical kernel error",
                "kernel info",
                "app critical",
                "app info"
            ]
        ]),
        "{got}"
    );
    assert_eq!(got["six"], json!([55, 6765, 832_040]), "{got}");
    Ok(())
}

#[test]
fn unacked_messages_come_back_in_order_flagged_redelivered() -> Result<()> {
    let broker = two_shards()?;
    let got = run(&broker, "redelivery.py", &[])?;
    assert_eq!(
        got["first"],
        json!(["m0", "m1", "m2", "m3", "m4", "m5"]),
        "{got}"
    );
    assert_eq!(got["first_redelivered"], json!(vec![false; 6]), "{got}");
    assert_eq!(got["second"], json!(["m2", "m3", "m4", "m5"]), "{got}");
    assert_eq!(got["second_redelivered"], json!(vec![true; 4]), "{got}");
    assert_eq!(got["left"], json!(0), "{got}");
    assert_eq!(got["unroutable"], json!(["lost"]), "{got}");
    assert_eq!(got["missing_exchange_code"], json!(404), "{got}");
    assert_eq!(got["codes"], json!([406, 404]), "{got}");
    Ok(())
}

#[test]
fn durable_queues_and_persistent_messages_survive_a_restart() -> Result<()> {
    let mut broker = two_shards()?;
    let before = run(&broker, "durable.py", &["before"])?;
    assert_eq!(
        before["taken"],
        json!(["m0", "m1", "m2", "m3", "m4"]),
        "{before}"
    );
    broker.restart()?;
    let after = run(&broker, "durable.py", &["after"])?;
    let bodies: Vec<String> = after["bodies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|body| body.as_str().map(str::to_string))
        .collect();
    // Every unacknowledged message is back, in order, flagged redelivered; the acknowledged
    // ones (m0..m3, their acks persisted by the ack store's group commit) are not.
    let unacked: Vec<String> = (4..10).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, unacked, "{after}");
    assert_eq!(after["count"], json!(6), "{after}");
    assert_eq!(after["redelivered"], json!(vec![true; 6]), "{after}");
    // The non-durable queue is gone.
    assert_eq!(after["transient"], json!(404), "{after}");
    Ok(())
}

/// A durable priority queue (`x-max-priority`) comes back from a clean restart or a SIGKILL with
/// its unacknowledged persistent messages in priority order, publish order within a priority, and
/// exactly the ones delivered before flagged redelivered (`tests/clients/amqp/priority.py`).
fn durable_priority_queue_survives(kill: bool) -> Result<()> {
    let mut broker = two_shards()?;
    let before = run(&broker, "priority.py", &["before"])?;
    // 12 is above the maximum (10) and counts as 10.
    assert_eq!(
        before["taken"],
        json!(["p12-6", "p9-3", "p5-1"]),
        "{before}"
    );
    if kill {
        broker.kill9()?;
        broker.start_again()?;
    } else {
        broker.restart()?;
    }
    let after = run(&broker, "priority.py", &["after"])?;
    let expected = ["p9-3", "p5-1", "p5-4", "p3-7", "p1-0", "pNone-2", "p0-5"];
    assert_eq!(after["bodies"], json!(expected), "{after}");
    assert_eq!(after["count"], json!(7), "{after}");
    let mut redelivered = vec![false; 7];
    redelivered[..2].fill(true);
    assert_eq!(after["redelivered"], json!(redelivered), "{after}");
    Ok(())
}

#[test]
fn a_durable_priority_queue_redelivers_in_priority_order_after_a_restart() -> Result<()> {
    durable_priority_queue_survives(false)
}

#[test]
fn a_durable_priority_queue_redelivers_in_priority_order_after_sigkill() -> Result<()> {
    durable_priority_queue_survives(true)
}

/// Small segments and a fast pass, so that a queue's log rolls many segments in a test and its
/// consumed ones go within a second.
fn small_segments() -> BrokerOptions {
    BrokerOptions::default()
        .cpus("0-1")
        .set("log.segment.bytes", "16384")
        .set("log.retention.check.interval.ms", "100")
}

/// The `.log` files of partition 0 of topic `name`, sorted (their names are base offsets).
fn segment_files(broker: &Broker, name: &str) -> Result<Vec<String>> {
    let dir = broker.data_dir().join("topics").join(format!("{name}-0"));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if name.ends_with(".log") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Waits (at most 30 s) until `name`'s log is down to its active segment; answers that file.
fn wait_for_one_segment(broker: &Broker, name: &str) -> Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let files = segment_files(broker, name)?;
        if let [only] = files.as_slice() {
            return Ok(only.clone());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{name} kept {} segments: {files:?}",
            files.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A queue is consumed, not retained (issue 12): once every message of a durable queue is
/// acknowledged (and the acks persisted), its log shrinks to the active segment, on disk; a queue
/// whose first message is unacknowledged keeps every segment. Both survive a clean restart with
/// the same log start, redeliver nothing acknowledged, and keep working.
#[test]
fn fully_acknowledged_segments_are_deleted_and_unacknowledged_ones_kept() -> Result<()> {
    let mut broker = Broker::start(small_segments())?;
    let filled = run(&broker, "consumed.py", &["fill", "1000"])?;
    assert_eq!(filled["consumed"], json!(1000), "{filled}");
    assert_eq!(filled["in_order"], json!(true), "{filled}");
    assert_eq!(filled["held_first"], json!("h0"), "{filled}");
    assert_eq!(filled["held_acked"], json!(999), "{filled}");
    assert_eq!(
        filled["left"],
        json!({"consumed_q": 0, "held_q": 1}),
        "{filled}"
    );
    // ~300-byte records in 16 KiB segments: 1,000 messages roll about 20 of them.
    let held = segment_files(&broker, "held_q")?;
    assert!(held.len() >= 10, "held_q rolled: {held:?}");
    let active = wait_for_one_segment(&broker, "consumed_q")?;
    assert_ne!(active, "00000000000000000000.log", "nothing was deleted");
    // Passes run every 100 ms on both shards: give held_q's owner many of them.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let held_later = segment_files(&broker, "held_q")?;
    assert_eq!(
        held_later, held,
        "a segment holding an unacknowledged message went"
    );

    broker.restart()?;
    assert_eq!(
        segment_files(&broker, "consumed_q")?,
        std::slice::from_ref(&active)
    );
    let again = run(&broker, "consumed.py", &["refill"])?;
    assert_eq!(
        again["left"],
        json!({"consumed_q": 0, "held_q": 1}),
        "{again}"
    );
    assert_eq!(again["held"], json!([["h0", true]]), "{again}");
    assert_eq!(again["new"], json!(["n0", "n1", "n2"]), "{again}");
    assert_eq!(
        again["left_after"],
        json!({"consumed_q": 0, "held_q": 0}),
        "{again}"
    );
    // held_q is consumed now too.
    let held_active = wait_for_one_segment(&broker, "held_q")?;
    assert_eq!(Some(&held_active), held.last(), "held_q's active segment");
    Ok(())
}

/// A clean shutdown (SIGTERM) persists every ack the broker took in, however long the ack
/// store's group-commit window: with a 60 s window nothing is written before the stop, so only
/// the shutdown's flush can keep the acknowledged messages from coming back.
#[test]
fn a_clean_shutdown_persists_every_ack_taken_in() -> Result<()> {
    let options = BrokerOptions::default()
        .cpus("0-1")
        .set("weir.queue.ack.flush.ms", "60000");
    let mut broker = Broker::start(options)?;
    let acked = run(&broker, "consumed.py", &["ack", "50"])?;
    assert_eq!(acked, json!({"acked": 50, "left": 0}), "{acked}");
    broker.restart()?;
    let after = run(&broker, "consumed.py", &["after_ack"])?;
    assert_eq!(after, json!({"left": 0, "again": []}), "{after}");
    Ok(())
}

/// Segments go only below the floor the ack store has persisted, never below acks that are only
/// in memory: with a 60 s group-commit window nothing is persisted before the SIGKILL, so nothing
/// of the acknowledged queue may be deleted, and after the kill every message is still there and
/// delivered again (at-least-once), flagged redelivered. Once a clean restart has persisted the
/// acks, the segments go.
#[test]
fn segments_wait_for_their_acks_to_be_persisted_and_a_kill_redelivers_them() -> Result<()> {
    let options = small_segments().set("weir.queue.ack.flush.ms", "60000");
    let mut broker = Broker::start(options)?;
    let acked = run(&broker, "consumed.py", &["ack", "1000"])?;
    assert_eq!(acked, json!({"acked": 1000, "left": 0}), "{acked}");
    // Passes run every 100 ms: give the queue's owner many of them.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let segments = segment_files(&broker, "acked_then_stopped")?;
    assert!(segments.len() >= 10, "rolled: {segments:?}");
    assert_eq!(
        segments[0], "00000000000000000000.log",
        "deleted before persisted"
    );

    broker.kill9()?;
    broker.start_again()?;
    let after = run(&broker, "consumed.py", &["after_ack"])?;
    let expected: Vec<Value> = (0..1000).map(|i| json!([format!("a{i}"), true])).collect();
    assert_eq!(after["left"], json!(1000), "{after}");
    assert_eq!(
        after["again"],
        json!(expected),
        "every message is still in the log"
    );

    // The acks of the redeliveries are persisted by the clean shutdown; then the segments go.
    broker.restart()?;
    wait_for_one_segment(&broker, "acked_then_stopped")?;
    let last = run(&broker, "consumed.py", &["after_ack"])?;
    assert_eq!(last, json!({"left": 0, "again": []}), "{last}");
    Ok(())
}

#[test]
fn hostile_clients_get_the_right_close_and_the_broker_still_serves() -> Result<()> {
    let broker = two_shards()?;
    let port = broker.amqp_port().to_string();
    let got = summary(&python("amqp/hostile.py", &["127.0.0.1", &port])?)?;
    // A wrong protocol header is answered with AMQP 0-9-1's, then the socket closes.
    assert_eq!(
        got["wrong_header"]["answer"],
        json!("414d515000000901"),
        "{got}"
    );
    assert_eq!(got["wrong_header"]["closed"], json!(true), "{got}");
    assert_eq!(got["oversized_frame"]["code"], json!(501), "{got}");
    assert_eq!(got["unopened_channel"], json!(504), "{got}");
    assert_eq!(got["body_too_long"], json!(501), "{got}");
    assert_eq!(
        got["channel_above_max"]["channel_max"],
        json!(2047),
        "{got}"
    );
    assert_eq!(got["channel_above_max"]["code"], json!(504), "{got}");
    // Heartbeat 1 s: closed after two silent intervals (and not much later).
    assert_eq!(got["silent_peer"]["closed"], json!(true), "{got}");
    let after = got["silent_peer"]["after_s"].as_f64().unwrap_or(99.0);
    assert!((1.5..=4.0).contains(&after), "{got}");
    assert_eq!(got["still_served"], json!("still served"), "{got}");
    Ok(())
}

#[test]
fn exchanges_queues_and_refusals_behave_as_rabbitmq_and_kafka_reads_a_queue() -> Result<()> {
    let broker = two_shards()?;
    let bootstrap = broker.bootstrap();
    let got = run(&broker, "features.py", &[&bootstrap])?;
    assert_eq!(got["e2e"], json!(["through two exchanges"]), "{got}");
    assert_eq!(got["headers_all"], json!(["pdf report"]), "{got}");
    assert_eq!(
        got["headers_any"],
        json!(["pdf report", "pdf only", "a log"]),
        "{got}"
    );
    assert_eq!(got["purged"], json!(3), "{got}");
    assert_eq!(got["delete_if_empty"], json!(406), "{got}");
    assert_eq!(got["deleted_count"], json!(1), "{got}");
    assert_eq!(got["exclusive_other"], json!(405), "{got}");
    assert_eq!(got["exclusive_after_close"], json!(404), "{got}");
    assert_eq!(got["server_cancel"], json!(["watcher"]), "{got}");
    assert_eq!(got["after_nack"], json!([]), "{got}");
    assert_eq!(got["max_priority"], json!(406), "{got}");
    assert_eq!(got["tx"], json!(406), "{got}");
    assert_eq!(
        got["kafka"],
        json!([{
            "key": "audited",
            "value": "{\"order\": 1}",
            "headers": ["amqp.exchange", "amqp.properties"]
        }]),
        "{got}"
    );
    Ok(())
}

#[test]
fn sigkill_loses_no_confirmed_message_and_redelivers_no_persisted_ack() -> Result<()> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut broker = two_shards()?;
    // The publisher/consumer stays connected (20 unacked deliveries) while the broker dies.
    let mut client = Command::new(weir_tests::python_binary()?)
        .arg(weir_tests::client_path("amqp/crash.py"))
        .args([broker.amqp_url().as_str(), "before"])
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = client.stdout.take().context("client stdout")?;
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .context("no summary")??;
    let before: Value = serde_json::from_str(&line)?;
    assert_eq!(before, json!({"confirmed": 200, "taken": 70}), "{line}");
    broker.kill9()?;
    let _ = client.kill();
    let _ = client.wait();
    broker.start_again()?;
    let after = run(&broker, "crash.py", &["after"])?;
    assert_eq!(after["lost"], json!([]), "{after}");
    assert_eq!(after["acked_again"], json!([]), "{after}");
    assert_eq!(after["count"], json!(150), "{after}");
    assert_eq!(after["in_order"], json!(true), "{after}");
    assert_eq!(after["held_redelivered"], json!(true), "{after}");
    Ok(())
}

/// The crash loop: 20 SIGKILLs while a publisher with confirms writes persistent
/// messages to a durable queue and a consumer acks them (tests/clients/amqp/crash_loop.py), then
/// a drain. Every confirmed message is acknowledged by the end (none lost), and no message
/// whose ack was sent `ACK_PERSISTED_MARGIN` before a kill is delivered after it (acks are
/// group-committed every 2 ms). Messages acked in the last moments before a kill may come back:
/// they are counted and printed, as the issue asks, not failed.
#[test]
fn twenty_sigkills_lose_no_confirmed_message_and_redeliver_no_persisted_ack() -> Result<()> {
    crash_loop(20, 0.0)
}

/// The same loop with a backlog: the consumer starts 0.3 s after the publisher, so the queue
/// holds ready messages and the consumer has a full prefetch window buffered when the broker
/// dies; it keeps acking those into the dead connection for a moment. Those acks, timed after
/// the kill, once counted as acks sent half a second before the next kill (they failed the
/// old time-based check in every run); each event now belongs to its process's lifetime.
#[test]
fn sigkills_amid_a_backlog_redeliver_no_persisted_ack() -> Result<()> {
    crash_loop(20, 0.3)
}

/// `kills_total` rounds of crash_loop.py (its consumer starting `backlog_seconds` after its
/// publisher), a SIGKILL in each, then a drain and the checks of `CrashEvents::check`.
fn crash_loop(kills_total: u64, backlog_seconds: f64) -> Result<()> {
    use std::process::{Command, Stdio};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    // Small segments (16 KiB, ~160 messages): consumed ones are deleted all through the loop, so
    // a kill also lands between an ack's persistence and its segment's deletion, or amid one.
    let mut broker = Broker::start(small_segments())?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("events.log");
    let script = weir_tests::client_path("amqp/crash_loop.py");
    let backlog = backlog_seconds.to_string();
    let mut kills = Vec::new();
    for round in 0..kills_total {
        let mut client = Command::new(weir_tests::python_binary()?)
            .arg(&script)
            .args([
                broker.amqp_url().as_str(),
                log.to_str().context("log path")?,
            ])
            .args(["work", &round.to_string(), &backlog])
            .stdout(Stdio::null())
            .spawn()?;
        // A different moment in each round: 400-1,000 ms into the client's run.
        std::thread::sleep(Duration::from_millis(400 + (round * 263) % 600));
        kills.push(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64());
        broker.kill9()?;
        let _ = client.kill();
        let _ = client.wait();
        broker.start_again()?;
    }
    let url = broker.amqp_url();
    weir_tests::python(
        "amqp/crash_loop.py",
        &[&url, log.to_str().context("log path")?, "drain"],
    )?;
    let events = CrashEvents::read(&log)?;
    events.check(&kills)?;
    // No restart found a queue whose log starts above its restored floor (`consumed.rs`).
    let log = broker.log();
    anyhow::ensure!(
        !log.contains("starts above its acknowledged floor"),
        "segments went below a floor a kill took back"
    );
    // Everything is acknowledged: the queue's log goes down to its active segment.
    let active = wait_for_one_segment(&broker, "crash_loop")?;
    eprintln!("crash loop: crash_loop's log starts at {active}");
    anyhow::ensure!(
        active != "00000000000000000000.log",
        "no segment was deleted"
    );
    Ok(())
}

/// Seconds between an ack leaving the client and a kill after which it must have been persisted
/// (the ack store commits every 2 ms; the rest is margin for a loaded machine).
const ACK_PERSISTED_MARGIN: f64 = 0.25;

/// One event of crash_loop.py: a message id, when, and the broker lifetime (round) of the
/// process that logged it (`kills[lifetime]` ended it; the drain's has no kill).
struct CrashEvent {
    id: String,
    time: f64,
    lifetime: usize,
}

#[derive(Default)]
struct CrashEvents {
    confirmed: Vec<String>,
    /// Every delivery and every ack, in log order.
    got: Vec<CrashEvent>,
    acked: Vec<CrashEvent>,
}

impl CrashEvents {
    fn read(path: &std::path::Path) -> Result<CrashEvents> {
        let mut events = CrashEvents::default();
        let mut starts = 0;
        for line in std::fs::read_to_string(path)?.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let event = |id: &str, index: usize| -> Result<CrashEvent> {
                let time = words.get(index).and_then(|t| t.parse::<f64>().ok());
                Ok(CrashEvent {
                    id: id.to_string(),
                    time: time.context(line.to_string())?,
                    lifetime: starts - 1,
                })
            };
            match words.as_slice() {
                ["start"] => starts += 1,
                ["confirmed", id] => events.confirmed.push(id.to_string()),
                ["got", id, _, _] => events.got.push(event(id, 3)?),
                ["acked", id, _] => events.acked.push(event(id, 2)?),
                // A line cut by the kill is the last of its lifetime: nothing to learn from it.
                _ => {}
            }
        }
        Ok(events)
    }

    fn check(&self, kills: &[f64]) -> Result<()> {
        use std::collections::{HashMap, HashSet};
        let acked: HashSet<&str> = self.acked.iter().map(|ack| ack.id.as_str()).collect();
        let lost: Vec<&String> = self
            .confirmed
            .iter()
            .filter(|id| !acked.contains(id.as_str()))
            .collect();
        anyhow::ensure!(
            lost.is_empty(),
            "{} confirmed messages never delivered: {lost:?}",
            lost.len()
        );
        let persisted_again = self.delivered_after_a_persisted_ack(kills);
        let mut ack_counts: HashMap<&str, usize> = HashMap::new();
        for ack in &self.acked {
            *ack_counts.entry(ack.id.as_str()).or_default() += 1;
        }
        let duplicates = ack_counts.values().filter(|&&count| count > 1).count();
        eprintln!(
            "crash loop: {} kills, {} confirmed, {} delivered, {} distinct acked, {duplicates} \
             delivered again after an ack, {} of them after an ack sent over \
             {ACK_PERSISTED_MARGIN} s before its broker's kill",
            kills.len(),
            self.confirmed.len(),
            self.got.len(),
            ack_counts.len(),
            persisted_again.len()
        );
        anyhow::ensure!(
            persisted_again.is_empty(),
            "acked well before a kill and delivered after it: {}",
            self.history(&persisted_again, kills)
        );
        anyhow::ensure!(
            self.confirmed.len() > kills.len() * 10,
            "too few messages confirmed to mean anything: {}",
            self.confirmed.len()
        );
        Ok(())
    }

    /// Deliveries of a message in a lifetime after one in which its ack was sent
    /// `ACK_PERSISTED_MARGIN` before the kill: that ack must have been persisted. Lifetimes come
    /// from the script's `start` lines, not from times: an ack the client wrote after its
    /// broker was killed (into a dead socket) is timed in the next lifetime, up to a second
    /// before the next kill, and was never received by anyone.
    fn delivered_after_a_persisted_ack(&self, kills: &[f64]) -> Vec<&String> {
        let mut persisted_in: std::collections::HashMap<&str, usize> = Default::default();
        for ack in &self.acked {
            let Some(&kill) = kills.get(ack.lifetime) else {
                continue;
            };
            if ack.time < kill - ACK_PERSISTED_MARGIN {
                let earliest = persisted_in.entry(ack.id.as_str()).or_insert(ack.lifetime);
                *earliest = (*earliest).min(ack.lifetime);
            }
        }
        self.got
            .iter()
            .filter(|got| {
                persisted_in
                    .get(got.id.as_str())
                    .is_some_and(|&lifetime| lifetime < got.lifetime)
            })
            .map(|got| &got.id)
            .collect()
    }

    /// What happened to the first few of `ids`: each event as lifetime and seconds relative
    /// to that lifetime's kill ("L3 acked -0.812": an ack 812 ms before kill 3).
    fn history(&self, ids: &[&String], kills: &[f64]) -> String {
        let mut out = format!("{} deliveries", ids.len());
        for id in ids.iter().take(10) {
            out.push_str(&format!("\n  {id}:"));
            let got = self.got.iter().map(|event| ("got", event));
            let acked = self.acked.iter().map(|event| ("acked", event));
            let mut events: Vec<(&str, &CrashEvent)> = got
                .chain(acked)
                .filter(|(_, event)| &event.id == *id)
                .collect();
            events.sort_by(|a, b| a.1.time.total_cmp(&b.1.time));
            for (what, event) in events {
                let relative = kills
                    .get(event.lifetime)
                    .map_or(f64::NAN, |&k| event.time - k);
                out.push_str(&format!(" L{} {what} {relative:+.3}", event.lifetime));
            }
        }
        out
    }
}

#[test]
fn kafka_records_to_an_amqp_exchange_or_queue_reach_amqp_consumers() -> Result<()> {
    let broker = two_shards()?;
    let bootstrap = broker.bootstrap();
    let got = run(&broker, "kafka_to_queue.py", &[&bootstrap])?;
    assert_eq!(
        got["received"],
        json!([
            ["direct", "from kafka to the queue topic"],
            ["order.created", "from amqp"],
            ["order.paid", "from kafka via the exchange"],
            ["order.shipped", "from amqp again"],
            ["é x 254 bytes", "a 400-byte key"]
        ]),
        "{got}"
    );
    assert_eq!(
        got["headers"],
        json!({
            "from kafka via the exchange": {"trace-id": "abc-123", "tenant": "acme"},
            "from kafka to the queue topic": null,
            "a 400-byte key": null,
            "from amqp": null,
            "from amqp again": null
        }),
        "Kafka headers are AMQP headers: {got}"
    );
    Ok(())
}

/// One shard, so that every connection lands on it and the broker's RSS growth is theirs alone
/// (with two, each shard's allocator arena grows on its own and a round may land on either).
fn one_shard() -> Result<Broker> {
    Broker::start(BrokerOptions::default().cpus("0"))
}

/// tests/clients/amqp/scale.py in `mode` against `broker`, which it measures through its pid.
fn scale(broker: &Broker, mode: &str, extra: &[&str]) -> Result<Value> {
    let port = broker.amqp_port().to_string();
    let pid = broker.pid()?.to_string();
    let mut args = vec![mode, "127.0.0.1", port.as_str(), pid.as_str()];
    args.extend_from_slice(extra);
    summary(&python("amqp/scale.py", &args)?)
}

fn kib(value: &Value) -> i64 {
    value.as_i64().unwrap_or(i64::MAX)
}

/// Resident memory one open channel may add to the broker (measured: 0.8 KiB; RabbitMQ 3.10
/// 28 KiB; docs/benchmarks.md, "AMQP connections and channels at scale").
const CHANNEL_RSS_BYTES_MAX: i64 = 4 << 10;
/// What a connection's channels may leave behind after it closed, over three more full floods
/// of 2,047 channels: 500 bytes a channel. Measured with glibc's malloc: 40 to 76 KiB (when the
/// bound was 512 KiB); with mimalloc the settled RSS between floods moves by up to 1.7 MiB
/// either way (where long-lived small allocations land; docs/benchmarks.md, "Back on main").
const CHANNEL_FLOODS_RSS_GROWTH_KIB_MAX: i64 = 3 << 10;

/// The 10,000 channels on one connection: channels 1..=2047 (the negotiated
/// channel-max) open, the next channel.open closes the connection with 530 NOT_ALLOWED, as
/// RabbitMQ does, including for a client whose tune-ok asked for 0 or 65535 channels; memory
/// per channel is bounded and comes back; a pika client on the same shard keeps publishing and
/// consuming throughout.
#[test]
fn hostile_ten_thousand_channel_opens_stop_at_channel_max_with_bounded_memory() -> Result<()> {
    let broker = one_shard()?;
    let got = scale(&broker, "channels", &[])?;
    let flood = &got["flood"];
    assert_eq!(flood["channel_max"], json!(2047), "{got}");
    assert_eq!(flood["opened"], json!(2047), "{got}");
    assert_eq!(flood["opened_all"], json!(true), "{got}");
    assert_eq!(flood["stopped_by"], Value::Null, "{got}");
    assert_eq!(flood["last_channel_usable"], json!(true), "{got}");
    assert_eq!(flood["opened_beyond_max"], json!(0), "{got}");
    assert_eq!(
        flood["beyond_max"]["method"],
        json!("Connection.Close"),
        "{got}"
    );
    assert_eq!(flood["beyond_max"]["code"], json!(530), "{got}");
    assert_eq!(flood["closed_after_close_ok"], json!(true), "{got}");
    let bound_kib = CHANNEL_RSS_BYTES_MAX * 2047 / 1024;
    assert!(kib(&flood["rss_growth_kib"]) < bound_kib, "{got}");
    // tune-ok channel-max 0 (no limit asked) and 65535 (more than offered) both get 2047.
    for asked in got["asked"].as_array().into_iter().flatten() {
        assert_eq!(asked["opened"], json!(2047), "{got}");
        assert_eq!(asked["close"]["code"], json!(530), "{got}");
    }
    assert_eq!(got["asked"].as_array().map(Vec::len), Some(2), "{got}");
    let rounds: Vec<i64> = got["rss_after_rounds_kib"]
        .as_array()
        .into_iter()
        .flatten()
        .map(kib)
        .collect();
    assert_eq!(rounds.len(), 5, "{got}");
    let growth = rounds[rounds.len() - 1] - rounds[1];
    assert!(growth < CHANNEL_FLOODS_RSS_GROWTH_KIB_MAX, "{got}");
    for key in ["bystander_before", "bystander_after", "fresh_after"] {
        assert_eq!(got[key], json!(true), "{key}: {got}");
    }
    assert_eq!(flood["bystander_during"], json!(true), "{got}");
    Ok(())
}

const IDLE_CONNECTIONS: usize = 1_000;
/// Resident memory one idle connection may add to the broker. Measured: 17 KiB on fresh memory,
/// 56 KiB once the allocator recycles freed memory (the 64 KiB read buffer, zeroed, is most of
/// it; see docs/benchmarks.md).
const IDLE_CONNECTION_RSS_BYTES_MAX: i64 = 96 << 10;
/// What the third and fourth rounds of 1,000 idle connections may leave behind beyond the
/// second: 1.5 KiB per connection closed since. Before the fixes that came with this test it
/// was 37 MiB (a glommio task and a shutdown waker kept per connection, and a fragmenting write
/// buffer). With mimalloc, where a round's long-lived small allocations land differs from round
/// to round, so the settled RSS after a round moves by up to 1.7 MiB either way (measured over
/// six runs; glibc's malloc: under 100 KiB, when this bound was 384 KiB).
const IDLE_ROUNDS_RSS_GROWTH_KIB_MAX: i64 = 3 << 10;

/// Raises this process's soft limit on open files to at least `wanted` (the broker inherits it).
fn raise_open_files_limit(wanted: u64) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write or read only the struct passed.
    let (got, set) = unsafe {
        let got = libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let raised = limit.rlim_cur.max(wanted.min(limit.rlim_max));
        limit.rlim_cur = raised;
        (got, libc::setrlimit(libc::RLIMIT_NOFILE, &limit))
    };
    anyhow::ensure!(got == 0 && set == 0, "getrlimit/setrlimit failed");
    anyhow::ensure!(
        limit.rlim_cur >= wanted,
        "RLIMIT_NOFILE hard limit {} < {wanted}",
        limit.rlim_max
    );
    Ok(())
}

/// The 1,000 idle connections, four rounds: each completes the handshake (heartbeat 0
/// or 600 s) and goes silent; the broker holds them all open, at a bounded cost each, while a
/// pika client keeps publishing and consuming and new connections are accepted; after half
/// close politely and half drop their sockets, every descriptor is released and later rounds
/// reuse the earlier rounds' memory (nothing is left behind per connection).
#[test]
fn hostile_thousand_idle_connections_are_held_cheaply_and_released() -> Result<()> {
    raise_open_files_limit(IDLE_CONNECTIONS as u64 + 512)?;
    let broker = one_shard()?;
    let count = IDLE_CONNECTIONS.to_string();
    let got = scale(&broker, "idle", &[&count])?;
    let rounds = got["rounds"].as_array().context("rounds")?;
    assert_eq!(rounds.len(), 4, "{got}");
    let bound_kib = IDLE_CONNECTION_RSS_BYTES_MAX * IDLE_CONNECTIONS as i64 / 1024;
    for round in rounds {
        assert_eq!(round["refused"], json!([]), "{got}");
        assert_eq!(round["alive"], json!(IDLE_CONNECTIONS), "{got}");
        assert_eq!(round["descriptors_added"], json!(IDLE_CONNECTIONS), "{got}");
        assert!(kib(&round["rss_growth_kib"]) < bound_kib, "{got}");
        assert_eq!(round["bystander_during"], json!(true), "{got}");
        assert_eq!(round["fresh_during"], json!(true), "{got}");
        assert_eq!(round["descriptors_left"], json!(0), "{got}");
    }
    let after = |index: usize| kib(&rounds[index]["rss_after_close_kib"]);
    assert!(
        after(3) - after(1) < IDLE_ROUNDS_RSS_GROWTH_KIB_MAX,
        "{got}"
    );
    assert_eq!(got["bystander_before"], json!(true), "{got}");
    assert_eq!(got["bystander_after"], json!(true), "{got}");
    Ok(())
}

/// Queue declarations are metadata changes (the metadata journal): every queue a declare-ok
/// confirmed exists after a SIGKILL that lands in the middle of a stream of declarations.
#[test]
fn every_confirmed_queue_declaration_survives_kill_9() -> Result<()> {
    let mut broker = two_shards()?;
    let port = broker.amqp_port().to_string();
    let pid = broker.pid()?.to_string();
    let declaring = {
        let (port, pid) = (port.clone(), pid.clone());
        std::thread::spawn(move || {
            let args = [
                "127.0.0.1",
                port.as_str(),
                pid.as_str(),
                "100000",
                "declared",
            ];
            summary(&python("amqp/idle_queues.py", &args)?)
        })
    };
    std::thread::sleep(std::time::Duration::from_secs(3));
    broker.kill9()?;
    let got = declaring
        .join()
        .map_err(|_| anyhow::anyhow!("declaring thread panicked"))??;
    assert_eq!(got["broker_gone"], json!(true), "killed midway: {got}");
    let confirmed = got["confirmed"].as_u64().context("confirmed")?;
    assert!(
        confirmed > 0,
        "no declaration confirmed before the kill: {got}"
    );
    broker.start_again()?;
    let pid = broker.pid()?.to_string();
    let (port, confirmed) = (broker.amqp_port().to_string(), confirmed.to_string());
    let args = [
        "127.0.0.1",
        port.as_str(),
        pid.as_str(),
        confirmed.as_str(),
        "declared",
        "--check",
    ];
    let checked = summary(&python("amqp/idle_queues.py", &args)?)?;
    assert_eq!(checked["confirmed"], json!(got["confirmed"]), "{checked}");
    Ok(())
}

/// Segment descriptors are a per-shard cache (idle files close and reopen on use), so the
/// open-files limit no longer bounds the queues a broker holds: under a limit of 2,048 (which
/// used to refuse the 1,025th queue with 406, and a Kafka CreateTopics with POLICY_VIOLATION),
/// 3,000 durable queues are declared, each takes a message, the first and last give theirs back,
/// a Kafka topic is created, and the broker's descriptors stay under the limit. After a clean
/// restart (recovery opens every segment through the cache) every queue is there with its
/// message.
#[test]
fn queues_past_the_open_files_limit_are_declared_usable_and_survive_a_restart() -> Result<()> {
    const LIMIT: u64 = 2048;
    const QUEUES: &str = "3000";
    let mut broker = Broker::start(BrokerOptions::default().cpus("0-1").open_files(LIMIT))?;
    let bootstrap = broker.bootstrap();
    let pid = broker.pid()?.to_string();
    let got = run(
        &broker,
        "files_limit.py",
        &[&bootstrap, &pid, QUEUES, "declare"],
    )?;
    assert_eq!(got["declared"], json!(3000), "{got}");
    assert_eq!(got["first"], json!("m-0"), "{got}");
    assert_eq!(got["last"], json!("m-2999"), "{got}");
    assert_eq!(got["kafka_create"], json!("created"), "{got}");
    assert!(got["broker_descriptors"].as_u64() < Some(LIMIT), "{got}");
    broker.restart()?;
    let pid = broker.pid()?.to_string();
    let got = run(
        &broker,
        "files_limit.py",
        &[&bootstrap, &pid, QUEUES, "check"],
    )?;
    assert_eq!(got["message_counts"], json!({"0": 2, "1": 2998}), "{got}");
    assert_eq!(got["middle"], json!("m-1500"), "{got}");
    assert_eq!(got["first"], json!("again"), "{got}");
    assert!(got["broker_descriptors"].as_u64() < Some(LIMIT), "{got}");
    assert!(
        !broker.log().contains("Too many open files"),
        "{}",
        broker.log()
    );
    Ok(())
}

#[test]
fn direct_reply_to_rpc_replies_reach_callers_on_either_shard() -> Result<()> {
    let broker = two_shards()?;
    let got = run(&broker, "rpc_reply_to.py", &[])?;
    assert_eq!(got["caller_shards"], json!([0, 0, 1, 1]), "{got}");
    assert_eq!(got["replier_shards"], json!([0, 1]), "{got}");
    assert_eq!(got["replies"], got["requests"], "{got}");
    assert_eq!(got["wrong"], json!([]), "{got}");
    // Both paths ran: a reply to a caller on the replier's shard and one across the mesh.
    assert!(got["cross_shard"].as_u64() > Some(0), "{got}");
    assert!(got["same_shard"].as_u64() > Some(0), "{got}");
    Ok(())
}

/// A stream queue (`x-queue-type=stream`) keeps what its consumers read and acked (each reader
/// from `first` gets every message again), and its log survives a clean restart and a SIGKILL:
/// a `first` consumer then replays every confirmed message, in order, each with its log offset
/// as `x-stream-offset` (`tests/clients/amqp/stream.py`).
fn stream_survives(kill: bool) -> Result<()> {
    let mut broker = two_shards()?;
    let published = run(&broker, "stream.py", &["publish", "300"])?;
    assert_eq!(
        published,
        json!({"confirmed": 300, "first_read": 300, "in_order": true, "again": 300, "same": true}),
        "{published}"
    );
    if kill {
        broker.kill9()?;
        broker.start_again()?;
    } else {
        broker.restart()?;
    }
    let replayed = run(&broker, "stream.py", &["replay"])?;
    let expected: Vec<String> = (0..300).map(|i| format!("e{i}")).collect();
    assert_eq!(replayed["bodies"], json!(expected), "{replayed}");
    assert_eq!(replayed["in_order"], json!(true), "{replayed}");
    Ok(())
}

#[test]
fn a_stream_keeps_acked_messages_and_replays_them_after_a_restart() -> Result<()> {
    stream_survives(false)
}

#[test]
fn a_stream_replays_every_confirmed_message_after_sigkill() -> Result<()> {
    stream_survives(true)
}

/// `x-stream-offset: last` is RabbitMQ's last chunk, Weir's last record batch: after three AMQP
/// publishes (a batch each) and one batch of five records from confluent-kafka to the stream's
/// topic, a `last` consumer gets exactly the five, from the batch's first offset; after one more
/// AMQP publish, only that one (`stream_last.py`).
#[test]
fn a_streams_last_is_its_last_batch() -> Result<()> {
    let broker = two_shards()?;
    let bootstrap = broker.bootstrap();
    let got = run(&broker, "stream_last.py", &[&bootstrap])?;
    assert_eq!(got["kafka_offsets"], json!([3, 4, 5, 6, 7]), "{got}");
    let kafka_batch = json!([
        ["kafka 0", 3],
        ["kafka 1", 4],
        ["kafka 2", 5],
        ["kafka 3", 6],
        ["kafka 4", 7]
    ]);
    assert_eq!(got["last_after_kafka"], kafka_batch, "{got}");
    assert_eq!(got["last_after_amqp"], json!([["amqp 3", 8]]), "{got}");
    Ok(())
}

/// A stream is a log: a Kafka client reads its topic, the AMQP layout's records (`amqp.exchange`
/// header `""` for the default exchange), from offset 0.
#[test]
fn a_kafka_client_reads_a_streams_topic() -> Result<()> {
    let broker = two_shards()?;
    run(&broker, "stream.py", &["publish", "20"])?;
    let bootstrap = broker.bootstrap();
    let got = run(&broker, "stream.py", &["kafka", &bootstrap, "20"])?;
    assert_eq!(
        got,
        json!({"records": 20, "first": [[0, "e0", ""], [1, "e1", ""]], "in_order": true}),
        "{got}"
    );
    Ok(())
}

/// `x-max-age` is the stream's `retention.ms`: a second after 200 messages went into 4 KiB
/// segments, every sealed segment is gone and a `first` consumer starts in the active one.
#[test]
fn a_streams_max_age_deletes_its_old_segments() -> Result<()> {
    let broker = Broker::start(
        BrokerOptions::default()
            .cpus("0-1")
            .set("log.retention.check.interval.ms", "100"),
    )?;
    run(&broker, "stream.py", &["aged", "200"])?;
    wait_for_one_segment(&broker, "aged_events")?;
    let got = run(&broker, "stream.py", &["first", "aged_events"])?;
    let first = got["first"].as_i64().unwrap_or(0);
    assert!(first > 150, "the sealed segments are gone: {got}");
    assert_eq!(got["count"].as_i64(), Some(200 - first), "{got}");
    Ok(())
}

/// `x-max-length-bytes` is the stream's `retention.bytes`: with 4 KiB segments
/// (`x-stream-max-segment-size-bytes`) the oldest whole segments go once the log passes
/// 20,000 bytes, and a `first` consumer starts at the oldest message kept.
#[test]
fn a_streams_max_length_bytes_deletes_its_oldest_segments() -> Result<()> {
    let broker = Broker::start(
        BrokerOptions::default()
            .cpus("0-1")
            .set("log.retention.check.interval.ms", "100"),
    )?;
    run(&broker, "stream.py", &["retention", "500"])?;
    // ~300-byte records: 500 of them are ~150 KB in ~40 segments; ~20 KB are kept.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let kept = loop {
        let files = segment_files(&broker, "small_events")?;
        if files.len() <= 8 {
            break files;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "small_events kept {} segments",
            files.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        kept.len() >= 2,
        "retention keeps x-max-length-bytes: {kept:?}"
    );
    let got = run(&broker, "stream.py", &["first", "small_events"])?;
    let first = got["first"].as_i64().unwrap_or(0);
    assert!(first > 300, "the oldest messages are gone: {got}");
    assert_eq!(got["count"].as_i64(), Some(500 - first), "{got}");
    assert_eq!(got["last"][1], json!(499), "{got}");
    Ok(())
}

/// A stream is not held in memory: 60,000 messages of 2 KiB (~130 MB of log) neither come into
/// memory when the broker restarts (a stream only reopens) nor while a `first` consumer reads
/// them all, in order (its reader holds one read's worth). The tail cache is made small, so the
/// broker's RSS is what the stream path holds.
#[test]
fn a_large_stream_is_read_from_the_log_not_held_in_memory() -> Result<()> {
    let options = BrokerOptions::default()
        .cpus("0-1")
        .set("weir.tail.cache.shard.bytes", "1048576");
    let mut broker = Broker::start(options)?;
    run(&broker, "stream.py", &["big", "60000", "2048"])?;
    broker.restart()?;
    let pid = broker.pid()?.to_string();
    let got = run(&broker, "stream.py", &["read_all", "big_events", &pid])?;
    assert_eq!(got["count"], json!(60_000), "{got}");
    assert_eq!(got["in_order"], json!(true), "{got}");
    let before = got["rss_before_kib"].as_i64().unwrap_or(i64::MAX);
    let max = got["rss_max_kib"].as_i64().unwrap_or(i64::MAX);
    // The log is ~130 MB; a restart that rebuilt it in memory, or a reader that kept what it
    // read, would pass this many times over.
    assert!(before < 100 << 10, "RSS after the restart: {before} KiB");
    assert!(
        max - before < 40 << 10,
        "RSS grew from {before} to {max} KiB while reading"
    );
    Ok(())
}

/// The `x-delayed-message` exchange (`tests/clients/amqp/delayed.py live`): the plugin's declare
/// refusals, delays in mixed order delivered in due order and never early with `x-delay`
/// negated, no delay routed at once, a topic-typed one routing by pattern, mandatory returned at
/// publish (as the plugin) yet routed when due, a deleted exchange dropping what it held.
#[test]
fn delayed_messages_are_routed_in_due_order_never_early() -> Result<()> {
    let broker = two_shards()?;
    let got = run(&broker, "delayed.py", &["live"])?;
    let refusal = json!([
        406,
        "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type"
    ]);
    assert_eq!(got["missing_type"], refusal, "{got}");
    assert_eq!(got["invalid_type"], refusal, "{got}");
    assert_eq!(got["redeclare"][0], json!(406), "{got}");
    let order = json!(["none", "zero", "negative", "d300", "d600", "d900"]);
    assert_eq!(got["order"], order, "{got}");
    assert_eq!(got["early"], json!([]), "{got}");
    assert_eq!(got["late"], json!([]), "{got}");
    let x_delay = json!({"none": null, "zero": 0, "negative": -50, "d300": -300,
                         "d600": -600, "d900": -900});
    assert_eq!(got["x_delay"], x_delay, "{got}");
    let topic = json!({"immediately": false, "routed": ["orders.paid"]});
    assert_eq!(got["topic"], topic, "{got}");
    let mandatory = json!({"returned": ["mandatory"], "routed": ["mandatory"]});
    assert_eq!(got["mandatory"], mandatory, "{got}");
    assert_eq!(got["after_delete"], json!(0), "{got}");
    assert_eq!(got["hold_queue_get"], json!(403), "{got}");
    Ok(())
}

/// Held messages survive a clean restart or a SIGKILL with their due times: each confirmed one
/// arrives once, in due order, never before its due time, and no later than a second after it
/// unless it fell due while the broker was down (then at once after the start).
fn delayed_messages_survive(kill: bool) -> Result<()> {
    let mut broker = two_shards()?;
    let before = run(&broker, "delayed.py", &["before"])?;
    if kill {
        broker.kill9()?;
        broker.start_again()?;
    } else {
        broker.restart()?;
    }
    let sent = before["sent"].to_string();
    let after = run(&broker, "delayed.py", &["after", &sent])?;
    let order = json!(["r300", "r4000", "r4500", "r5000", "r6000"]);
    assert_eq!(after["order"], order, "{after}");
    assert_eq!(after["early"], json!([]), "{after}");
    assert_eq!(after["left"], json!(0), "{after}");
    for body in ["r4000", "r4500", "r5000", "r6000"] {
        let lateness = after["lateness"][body].as_f64().context("lateness")?;
        assert!(lateness < 1.0, "{body} late by {lateness} s: {after}");
    }
    assert_eq!(after["x_delay"]["r6000"], json!(-6000), "{after}");
    Ok(())
}

#[test]
fn delayed_messages_keep_their_due_times_across_a_restart() -> Result<()> {
    delayed_messages_survive(false)
}

#[test]
fn delayed_messages_keep_their_due_times_across_sigkill() -> Result<()> {
    delayed_messages_survive(true)
}

/// A message reaches a delayed exchange through an exchange-to-exchange binding
/// (`delayed.py e2e`): with `x-delay` it waits there, never early, and arrives with `x-delay`
/// negated, while the front exchange's own binding took it at once; without, it passes at once.
#[test]
fn delayed_messages_wait_behind_an_exchange_to_exchange_binding() -> Result<()> {
    let broker = two_shards()?;
    let got = run(&broker, "delayed.py", &["e2e"])?;
    assert_eq!(got["front"], json!(["e0", "e800"]), "{got}");
    assert_eq!(got["order"], json!(["e0", "e800"]), "{got}");
    assert_eq!(got["early"], json!([]), "{got}");
    assert_eq!(got["x_delay"], json!({"e0": null, "e800": -800}), "{got}");
    let lateness = got["lateness"]["e800"].as_f64().context("lateness")?;
    assert!(lateness < 0.5, "e800 late by {lateness} s: {got}");
    Ok(())
}

/// A Kafka producer (confluent-kafka, acks=all) produces to a delayed exchange
/// (`delayed.py kafka`): the record whose header `x-delay` is `800` is acknowledged once held
/// (at once, not when due), arrives no earlier than 800 ms later with `x-delay` -800; the one
/// without the header arrives at once.
#[test]
fn delayed_messages_produced_by_kafka_clients_wait() -> Result<()> {
    let broker = two_shards()?;
    let bootstrap = broker.bootstrap();
    let got = run(&broker, "delayed.py", &["kafka", &bootstrap])?;
    assert_eq!(got["order"], json!(["knone", "k800"]), "{got}");
    assert_eq!(got["early"], json!([]), "{got}");
    assert_eq!(
        got["x_delay"],
        json!({"knone": null, "k800": -800}),
        "{got}"
    );
    let acked = got["acked_after"]["k800"].as_f64().context("acked")?;
    assert!(
        acked < 0.5,
        "acknowledged after {acked} s, not once held: {got}"
    );
    let lateness = got["lateness"]["k800"].as_f64().context("lateness")?;
    assert!(lateness < 0.5, "k800 late by {lateness} s: {got}");
    Ok(())
}

/// Messages held by both new paths (an exchange-to-exchange binding, a Kafka produce) survive a
/// SIGKILL and arrive at their original due times (`delayed.py paths_before`, `paths_after`).
#[test]
fn delayed_messages_from_every_path_survive_sigkill() -> Result<()> {
    let mut broker = two_shards()?;
    let bootstrap = broker.bootstrap();
    let before = run(&broker, "delayed.py", &["paths_before", &bootstrap])?;
    assert_eq!(before["acked"], json!(true), "{before}");
    broker.kill9()?;
    broker.start_again()?;
    let sent = before["sent"].to_string();
    let after = run(&broker, "delayed.py", &["paths_after", &sent])?;
    assert_eq!(after["order"], json!(["e4000", "k4500"]), "{after}");
    assert_eq!(after["early"], json!([]), "{after}");
    for body in ["e4000", "k4500"] {
        let lateness = after["lateness"][body].as_f64().context("lateness")?;
        assert!(lateness < 1.0, "{body} late by {lateness} s: {after}");
    }
    assert_eq!(after["x_delay"]["k4500"], json!(-4500), "{after}");
    Ok(())
}

/// AMQP → Kafka → AMQP (`tests/clients/amqp/kafka_headers.py`): a Kafka consumer of a queue's
/// topic sees each AMQP header as a record header (text as bytes, numbers and booleans as text,
/// tables left out) beside `amqp.properties`, and the record produced back into a queue reaches
/// an AMQP consumer with its original typed headers and properties.
#[test]
fn amqp_headers_reach_kafka_consumers_and_come_back_typed() -> Result<()> {
    let broker = two_shards()?;
    let bootstrap = broker.bootstrap();
    let got = run(&broker, "kafka_headers.py", &[&bootstrap])?;
    let kafka = json!({"amqp.exchange": "", "amqp.properties": "present", "tenant": "acme",
                       "size": "42", "urgent": "true", "ratio": "1099511627776"});
    assert_eq!(got["kafka_headers"], kafka, "{got}");
    let headers = json!({"tenant": "acme", "size": 42, "urgent": true, "nested": {"a": 1},
                         "ratio": 1099511627776_i64});
    assert_eq!(got["back"]["headers"], headers, "{got}");
    assert_eq!(got["back"]["content_type"], json!("text/plain"), "{got}");
    assert_eq!(got["back"]["body"], json!("payload"), "{got}");
    Ok(())
}

/// A broker whose `amqp.disk.free.limit` is the filesystem's free space plus 1 TB (so the disk
/// alarm is on however the free space moves) blocks the pika connection that publishes: it is
/// told "low on disk" and its publish is never read to its end (nothing stored), while the
/// connection that only consumes is still answered and not told, as RabbitMQ 3.10 does under
/// `rabbitmqctl set_disk_free_limit` (the script's outcome there is the same). Unblocking:
/// `the_disk_alarm_unblocks_publishers_when_space_is_back`.
#[test]
fn the_disk_alarm_blocks_publishers_with_connection_blocked() -> Result<()> {
    let limit = (free_bytes_of_tmp()? + 1_000_000_000_000).to_string();
    let got = alarm_clients(&[("amqp.disk.free.limit", &limit)])?;
    assert_alarm_outcome(&got, json!([["blocked", "low on disk"]]), 0);
    Ok(())
}

/// `disk_alarm.py` (a pika publisher with confirms and a consumer-only connection) against a
/// broker on two CPUs started with `sets`.
fn alarm_clients(sets: &[(&str, &str)]) -> Result<Value> {
    let options = sets.iter().fold(
        BrokerOptions::default().cpus("0-1"),
        |options, (key, value)| options.set(key, value),
    );
    let broker = Broker::start(options)?;
    run(&broker, "disk_alarm.py", &[])
}

/// What `disk_alarm.py` saw: the publisher's blocked/unblocked events, none for the consumer,
/// and the messages stored.
fn assert_alarm_outcome(got: &Value, publisher_events: Value, message_count: u64) {
    assert_eq!(got["publisher_events"], publisher_events, "{got}");
    assert_eq!(got["consumer_events"], json!([]), "{got}");
    assert_eq!(got["message_count"], json!(message_count), "{got}");
}

/// The same clients against a broker with a 1-byte limit: nothing is blocked and the publish is
/// stored.
#[test]
fn without_the_disk_alarm_nothing_is_blocked() -> Result<()> {
    let got = alarm_clients(&[("amqp.disk.free.limit", "1")])?;
    assert_alarm_outcome(&got, json!([]), 1);
    Ok(())
}

/// The disk alarm's whole cycle on a real filesystem: a broker whose limit is 1 GiB below the
/// free space of its data directory's filesystem, a pika publisher with confirms whose first
/// publish is stored, then a file (`disk_alarm_unblock.py`) that leaves 512 MiB less than the
/// limit free. The next publish is held: connection.blocked "low on disk", no confirm, and the
/// queue still counts one message 3 s later. The file deleted, connection.unblocked comes and
/// the held publish is stored and confirmed. The margins (1 GiB before the file, 512 MiB after it) are
/// what other processes on the machine may write or delete meanwhile without changing the
/// outcome.
#[test]
fn the_disk_alarm_unblocks_publishers_when_space_is_back() -> Result<()> {
    let temp = std::env::temp_dir();
    let limit = free_bytes(&temp)?
        .checked_sub(1 << 30)
        .context("less than 1 GiB free for the test")?;
    let broker = Broker::start(
        BrokerOptions::default()
            .cpus("0-1")
            .set("amqp.disk.free.limit", &limit.to_string()),
    )?;
    let directory = broker
        .data_dir()
        .parent()
        .context("data dir has a parent")?;
    let filler = directory.join("disk-alarm-filler");
    let got = run(
        &broker,
        "disk_alarm_unblock.py",
        &[&filler.display().to_string(), &limit.to_string()],
    )?;
    let _ = std::fs::remove_file(&filler);
    assert!(got.get("error").is_none(), "{got}");
    let free_with_file = got["free_with_file"].as_u64().context("free_with_file")?;
    assert!(
        free_with_file < limit,
        "the file did not cross the limit: {got}"
    );
    assert_eq!(got["events_before_publish"], json!([]), "{got}");
    let events = json!([["blocked", "low on disk"], ["unblocked"]]);
    assert_eq!(got["events"], events, "{got}");
    assert_eq!(got["count_before"], json!(1), "{got}");
    assert_eq!(got["count_while_blocked"], json!(1), "{got}");
    assert_eq!(got["count_after"], json!(2), "{got}");
    let deleted_at = got["deleted_at"].as_f64().context("deleted_at")?;
    let confirmed_at = got["confirmed_at"].as_f64().context("confirmed_at")?;
    assert!(
        deleted_at <= confirmed_at,
        "confirmed before the file went: {got}"
    );
    Ok(())
}

/// A broker whose `amqp.vm.memory.high.watermark.absolute` is 1 byte has the memory alarm on
/// from its first check: the publishing pika connection is told RabbitMQ's reason, `low on
/// memory` (RabbitMQ 3.10 under `rabbitmqctl set_vm_memory_high_watermark absolute 1`), and its
/// publish is not stored; the consumer-only connection is answered and not told.
#[test]
fn the_memory_alarm_blocks_publishers_with_rabbitmqs_reason() -> Result<()> {
    let got = alarm_clients(&[("amqp.vm.memory.high.watermark.absolute", "1")])?;
    assert_alarm_outcome(&got, json!([["blocked", "low on memory"]]), 0);
    Ok(())
}

/// Both alarms on: one connection.blocked whose reason names both, as RabbitMQ 3.10 words it
/// whichever alarm came first (`low on disk & memory`).
#[test]
fn both_alarms_block_with_both_resources_in_the_reason() -> Result<()> {
    let limit = (free_bytes_of_tmp()? + 1_000_000_000_000).to_string();
    let got = alarm_clients(&[
        ("amqp.disk.free.limit", &limit),
        ("amqp.vm.memory.high.watermark", "0"),
    ])?;
    assert_alarm_outcome(&got, json!([["blocked", "low on disk & memory"]]), 0);
    Ok(())
}

/// The memory alarm's whole cycle on the broker's real resident memory: a first broker's idle
/// RSS is measured; a second one starts with the watermark 128 MiB above it (what a broker
/// keeps after writing fast: up to 32 MiB of pooled write buffers per shard, and as much again
/// of slack). A pika filler
/// publishing 1 MB messages with confirms to a queue without consumers (a queue holds its
/// ready messages in memory) is blocked once the RSS passes the watermark, with nothing more
/// stored; a consumer-only connection is still answered and gets a message; a second
/// publisher's publish is held. Deleting the filled queue frees its memory (each shard hands
/// freed memory back to the OS once a second, `server/src/allocator.rs`: the RSS ends below
/// the watermark, which the test checks), and both publishers are unblocked;
/// the held publish is stored and confirmed (`memory_alarm_unblock.py`).
#[test]
fn the_memory_alarm_unblocks_publishers_when_memory_is_freed() -> Result<()> {
    let idle = {
        let broker = two_shards()?;
        std::thread::sleep(std::time::Duration::from_secs(1));
        resident_bytes(broker.pid()?)?
    };
    let watermark = idle + (128 << 20);
    let broker = Broker::start(BrokerOptions::default().cpus("0-1").set(
        "amqp.vm.memory.high.watermark.absolute",
        &watermark.to_string(),
    ))?;
    let pid = broker.pid()?.to_string();
    let got = run(&broker, "memory_alarm_unblock.py", &[&pid])?;
    let at_least = |key: &str| got[key].as_u64().unwrap_or(0);
    assert_eq!(got["stalled"], json!(true), "never blocked: {got}");
    assert!(at_least("resident_blocked") > watermark, "{got}");
    let filled = at_least("filled");
    assert!(filled > 0, "{got}");
    assert_eq!(got["fill_count"], json!(filled), "{got}");
    assert_eq!(got["got_bytes"], json!(1_000_000), "{got}");
    assert!(blocked_then_unblocked(&got["filler_events"]), "{got}");
    assert!(blocked_then_unblocked(&got["publisher_events"]), "{got}");
    assert_eq!(got["count_while_blocked"], json!(0), "{got}");
    assert_eq!(got["held_count"], json!(1), "{got}");
    let deleted_at = got["deleted_at"].as_f64().context("deleted_at")?;
    let confirmed_at = got["confirmed_at"].as_f64().context("confirmed_at")?;
    assert!(
        deleted_at <= confirmed_at,
        "confirmed before the queue went: {got}"
    );
    assert!(at_least("resident_after") < watermark, "{got}");
    Ok(())
}

/// Whether `events` (a connection's blocked / unblocked notices) is one or more "blocked, low on
/// memory" each followed by "unblocked". While the filler fills, the RSS can sit at the
/// watermark: the shards' once-a-second collection takes it just below (the alarm clears, as
/// RabbitMQ's does) and the next publish above it again (seen once in CI: two pairs). What may
/// not happen: an unblock without a block, two blocks in a row, or ending blocked.
fn blocked_then_unblocked(events: &serde_json::Value) -> bool {
    let pair = [json!(["blocked", "low on memory"]), json!(["unblocked"])];
    let Some(events) = events.as_array() else {
        return false;
    };
    !events.is_empty()
        && events.len() % 2 == 0
        && events.chunks(2).all(|two| two == pair.as_slice())
}

/// A process's resident set size in bytes (`/proc/PID/statm`).
fn resident_bytes(pid: u32) -> Result<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .with_context(|| format!("statm {statm:?}"))?;
    // SAFETY: sysconf has no preconditions.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page_bytes)?)
}

/// Free bytes on the filesystem of the temporary directory the harness puts data directories
/// in.
fn free_bytes_of_tmp() -> Result<u64> {
    free_bytes(&std::env::temp_dir())
}

/// Bytes available to an unprivileged user on the filesystem of `path` (statvfs, as the broker
/// and `df` compute them).
fn free_bytes(path: &std::path::Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path_c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path_c` is NUL-terminated and `stat` is a valid out pointer.
    let result = unsafe { libc::statvfs(path_c.as_ptr(), stat.as_mut_ptr()) };
    ensure!(
        result == 0,
        "statvfs {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: statvfs succeeded and filled it.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The record counts of the batches in a segment file, in file order (an active segment's file
/// has zeros after its last batch: a zero `batchLength` ends the walk).
fn batch_record_counts(path: &std::path::Path) -> Result<Vec<i32>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    let field =
        |at: usize| i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let mut counts = Vec::new();
    let mut at = 0;
    while at + 61 <= bytes.len() {
        let length = field(at + 8);
        if length <= 0 {
            break;
        }
        counts.push(field(at + 57));
        at += 12 + length as usize;
    }
    Ok(counts)
}

/// The batches of partition 0 of `name`, as record counts, over its segments in order.
fn batches_of(broker: &Broker, name: &str) -> Result<Vec<i32>> {
    let dir = broker.data_dir().join("topics").join(format!("{name}-0"));
    let mut counts = Vec::new();
    for file in segment_files(broker, name)? {
        counts.extend(batch_record_counts(&dir.join(file))?);
    }
    Ok(counts)
}

/// Publishes that reach the broker in one read go to their queue as one batch of a record each
/// (`publish_run.rs`), and every observable stays per message: each is confirmed, a Kafka
/// consumer of the queue's topic reads each at its own offset, and a publish to a missing
/// exchange amid a run closes the channel with 404 after the publishes before it are stored
/// (and none after it).
#[test]
fn a_run_of_publishes_is_one_batch_and_a_bad_publish_amid_it_errors_as_alone() -> Result<()> {
    let broker = two_shards()?;
    let bootstrap = broker.bootstrap();
    let got = run(&broker, "runs.py", &["queue", &bootstrap])?;
    assert_eq!(got["acked"], json!(40), "{got}");
    assert_eq!(got["nacked"], json!([]), "{got}");
    assert_eq!(got["bad_code"], json!(404), "{got}");
    let kafka: Vec<Value> = (0..50).map(|i| json!([i, format!("r{i}")])).collect();
    assert_eq!(got["kafka"], json!(kafka), "{got}");
    let held: Vec<String> = (0..50).map(|i| format!("r{i}")).collect();
    assert_eq!(got["queue"], json!(held), "{got}");
    let counts = batches_of(&broker, "runs")?;
    assert_eq!(counts.iter().sum::<i32>(), 50, "{counts:?}");
    assert!(
        counts.iter().any(|&count| count > 1),
        "no run was stored as one batch: {counts:?}"
    );
    Ok(())
}

/// A stream consumer at a numeric `x-stream-offset` inside a batch of several messages starts
/// at that message, not at the batch's first.
#[test]
fn a_stream_consumer_starts_at_its_offset_inside_a_batch_of_several() -> Result<()> {
    let broker = two_shards()?;
    let got = run(&broker, "runs.py", &["stream"])?;
    assert_eq!(got["acked"], json!(20), "{got}");
    assert_eq!(got["nacked"], json!([]), "{got}");
    let from =
        |start: i64| -> Vec<Value> { (start..20).map(|i| json!([format!("e{i}"), i])).collect() };
    assert_eq!(got["read"]["7"], json!(from(7)), "{got}");
    assert_eq!(got["read"]["first"], json!(from(0)), "{got}");
    let counts = batches_of(&broker, "run_stream")?;
    assert_eq!(counts.iter().sum::<i32>(), 20, "{counts:?}");
    // The case this test is for: offset 7 is in a batch that starts before it.
    let mut base = 0;
    let inside = counts.iter().any(|&count| {
        let holds = base < 7 && 7 < base + count;
        base += count;
        holds
    });
    assert!(inside, "offset 7 does not sit inside a batch: {counts:?}");
    Ok(())
}
