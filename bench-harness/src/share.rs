//! Share mode (`--share-group NAME`, KIP-932): share consumers read a topic's backlog through a
//! share group, acknowledging every record with Accept, as librdkafka's ShareConsumer does.
//!
//! A share consumer is one thread: it joins with ShareGroupHeartbeat on the group's coordinator
//! (member id a random UUID string, epoch 0), starts one session thread per partition leader, and
//! heartbeats every 5 s until they end, then leaves (epoch -1). A session thread owns one
//! connection and one share session: ShareFetch with epoch 0, then 1, 2, ...; each request
//! carries the Accept acknowledgements of the previous answer's acquired ranges, and the last
//! acknowledgements go in a ShareAcknowledge with epoch -1, which also closes the session.
//! KIP-932 allows one ShareFetch in flight per session, so a session is request/response.
//!
//! Concurrency rule: session threads share only the `Ledger` (one bitset per partition behind a
//! mutex, taken once per acquired range) and the atomic counters in `Shared`. A record is
//! consumed when an answer acquires it, and acknowledged when the answer to the request that
//! carried its Accept says so; `Shared::consumed[0]` counts acknowledged records, so that the
//! run's usual check (every group read every record) holds the share group to every record
//! acknowledged exactly once. A record acquired twice is a duplicate and fails the run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::share_acknowledge_request::{
    self, AcknowledgePartition, AcknowledgeTopic,
};
use kafka_protocol::messages::share_fetch_request::{
    AcknowledgementBatch, FetchPartition, FetchTopic,
};
use kafka_protocol::messages::share_fetch_response::AcquiredRecords;
use kafka_protocol::messages::{
    GroupId, ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest,
    ShareFetchResponse, ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::admin::Connection;
use crate::batch::{parse_batches, parse_records, value_send_time_ns};
use crate::stats::{self, CpuPlan, Shared};
use crate::wire::{API_SHARE_ACKNOWLEDGE, API_SHARE_FETCH, API_SHARE_GROUP_HEARTBEAT};

/// KIP-932's acknowledge type Accept.
const ACCEPT: i8 = 1;
/// The share group heartbeat interval Kafka and Weir answer with.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// How long a member may wait for its first assignment.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// ShareFetch long poll: short, so that a session sees the end of the run soon.
const FETCH_WAIT_MS: i32 = 100;

/// Which records were acquired, per partition (bit i = offset start + i), and the counts.
#[derive(Debug, Default)]
pub struct Ledger {
    partitions: Mutex<BTreeMap<i32, Vec<u64>>>,
    /// Distinct records acquired.
    pub acquired: AtomicU64,
    /// Records acquired again (each also fails the run).
    pub duplicates: AtomicU64,
    /// Records acknowledged, as the broker confirmed.
    pub acknowledged: AtomicU64,
    /// ShareFetch round trips of every session, and the time spent in them (request written to
    /// answer read) and in the sessions' loops all told: the rest is the harness's own handling
    /// of each answer, so the two say which side of a round trip bounds the rate.
    pub round_trips: AtomicU64,
    pub round_trip_ns: AtomicU64,
    pub session_ns: AtomicU64,
}

impl Ledger {
    /// Mean ShareFetch round trip in µs, if there was one.
    pub fn round_trip_us(&self) -> Option<f64> {
        let trips = self.round_trips.load(Relaxed);
        (trips > 0).then(|| self.round_trip_ns.load(Relaxed) as f64 / trips as f64 / 1e3)
    }

    /// Mean time between an answer and the next request, in µs (the sessions' loops less their
    /// round trips).
    pub fn client_us(&self) -> Option<f64> {
        let trips = self.round_trips.load(Relaxed);
        let in_loops = self.session_ns.load(Relaxed);
        let rest = in_loops.saturating_sub(self.round_trip_ns.load(Relaxed));
        (trips > 0).then(|| rest as f64 / trips as f64 / 1e3)
    }

    /// Marks `first..=last` of `partition` acquired, relative to `start` (the log start of the
    /// backlog); returns how many were already marked.
    fn mark(&self, partition: i32, start: i64, first: i64, last: i64) -> Result<u64> {
        ensure!(
            first >= start && last >= first,
            "acquired range {first}..={last} of partition {partition} is before the backlog \
             ({start})"
        );
        let mut partitions = self
            .partitions
            .lock()
            .map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
        let bits = partitions.entry(partition).or_default();
        let mut seen = 0;
        for offset in first..=last {
            let index = (offset - start) as usize;
            if bits.len() <= index / 64 {
                bits.resize(index / 64 + 1, 0);
            }
            let mask = 1u64 << (index % 64);
            seen += u64::from(bits[index / 64] & mask != 0);
            bits[index / 64] |= mask;
        }
        let count = (last - first + 1) as u64;
        self.acquired.fetch_add(count - seen, Relaxed);
        self.duplicates.fetch_add(seen, Relaxed);
        Ok(seen)
    }
}

/// What one share consumer needs.
pub struct SharePlan {
    pub group: String,
    pub name: String,
    pub coordinator: String,
    pub topic: String,
    pub topic_id: Uuid,
    /// Partition -> (leader address, first offset of the backlog).
    pub partitions: BTreeMap<i32, (String, i64)>,
    pub max_records: i32,
    pub max_bytes: i32,
    pub payload_bytes: u64,
    pub shared: Arc<Shared>,
    pub ledger: Arc<Ledger>,
    pub cpus: Arc<CpuPlan>,
    pub stop: Arc<AtomicBool>,
}

pub fn spawn(plan: SharePlan) -> Result<JoinHandle<Result<Histogram<u64>>>> {
    std::thread::Builder::new()
        .name(plan.name.clone())
        .spawn(move || {
            plan.cpus.pin();
            let shared = plan.shared.clone();
            let result = consumer(&plan);
            if let Err(error) = &result {
                shared.fail("share consumer", error);
            }
            result
        })
        .context("spawning a share consumer thread")
}

/// A random member id: KIP-932 has the client pick a UUID.
fn member_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = || {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        hasher.write_u128(since_epoch.map_or(0, |d| d.as_nanos()));
        hasher.finish()
    };
    Uuid::from_u64_pair(random(), random()).to_string()
}

/// One member's identity in the group.
struct Member {
    group: String,
    id: String,
    epoch: i32,
}

fn heartbeat(
    connection: &mut Connection,
    member: &mut Member,
    topic: &str,
) -> Result<ShareGroupHeartbeatResponse> {
    let request = ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(member.group.clone())))
        .with_member_id(StrBytes::from_string(member.id.clone()))
        .with_member_epoch(member.epoch)
        .with_subscribed_topic_names(
            (member.epoch == 0).then(|| vec![TopicName(StrBytes::from_string(topic.to_owned()))]),
        );
    let response: ShareGroupHeartbeatResponse =
        connection.call(API_SHARE_GROUP_HEARTBEAT, 1, &request)?;
    ensure!(
        response.error_code == 0,
        "ShareGroupHeartbeat {} epoch {}: error {} {}",
        member.group,
        member.epoch,
        response.error_code,
        response.error_message.as_deref().unwrap_or("")
    );
    if member.epoch >= 0 {
        member.epoch = response.member_epoch;
    }
    Ok(response)
}

/// Joins and waits for an assignment naming every partition of the run (Weir's and KIP-932's
/// simple assignor give every member every partition while members outnumber partitions).
fn join(connection: &mut Connection, member: &mut Member, plan: &SharePlan) -> Result<()> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        let response = heartbeat(connection, member, &plan.topic)?;
        let assigned: Vec<i32> = response
            .assignment
            .iter()
            .flat_map(|assignment| &assignment.topic_partitions)
            .filter(|topic| topic.topic_id == plan.topic_id)
            .flat_map(|topic| topic.partitions.iter().copied())
            .collect();
        if plan.partitions.keys().all(|p| assigned.contains(p)) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "share member {} was assigned {assigned:?}, not every partition, after {:?}",
            member.id,
            JOIN_TIMEOUT
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn consumer(plan: &SharePlan) -> Result<Histogram<u64>> {
    let mut coordinator = Connection::open(&plan.coordinator)?;
    let mut member = Member {
        group: plan.group.clone(),
        id: member_id(),
        epoch: 0,
    };
    join(&mut coordinator, &mut member, plan)?;
    // Sessions borrow the id while the heartbeat loop updates the member's epoch.
    let member_id = member.id.clone();
    let mut by_leader: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for (&partition, (leader, start)) in &plan.partitions {
        by_leader
            .entry(leader)
            .or_default()
            .push((partition, *start));
    }
    let mut histogram = stats::new_histogram();
    std::thread::scope(|scope| -> Result<()> {
        let sessions: Vec<_> = by_leader
            .iter()
            .map(|(leader, partitions)| {
                let session = Session {
                    plan,
                    member_id: &member_id,
                    leader,
                    starts: partitions.iter().copied().collect(),
                };
                scope.spawn(move || {
                    plan.cpus.pin();
                    session.run()
                })
            })
            .collect();
        let mut last_heartbeat = Instant::now();
        while sessions.iter().any(|session| !session.is_finished()) {
            if last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
                heartbeat(&mut coordinator, &mut member, &plan.topic)?;
                last_heartbeat = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for session in sessions {
            let part = session
                .join()
                .map_err(|_| anyhow::anyhow!("a share session thread panicked"))??;
            histogram.add(part).context("merging histograms")?;
        }
        Ok(())
    })?;
    member.epoch = -1;
    heartbeat(&mut coordinator, &mut member, &plan.topic).context("leaving the share group")?;
    Ok(histogram)
}

/// One share session: a member's fetches from one leader.
struct Session<'a> {
    plan: &'a SharePlan,
    member_id: &'a str,
    leader: &'a str,
    /// Partition -> first offset of the backlog.
    starts: BTreeMap<i32, i64>,
}

/// Accept acknowledgements not yet sent, per partition.
type Pending = BTreeMap<i32, Vec<(i64, i64)>>;

impl Session<'_> {
    /// True once every record of the backlog has been acquired by some member.
    fn done(&self) -> bool {
        let shared = &self.plan.shared;
        shared.aborted()
            || self.plan.stop.load(Relaxed)
            || self.plan.ledger.acquired.load(Relaxed) >= shared.produced.messages.load(Relaxed)
    }

    fn run(&self) -> Result<Histogram<u64>> {
        let mut connection = Connection::open(self.leader)?;
        let mut histogram = stats::new_histogram();
        let mut pending = Pending::new();
        let mut epoch = 0i32;
        let ledger = &self.plan.ledger;
        let started = Instant::now();
        while !self.done() {
            let request = self.fetch_request(epoch, &pending);
            let sent_at = Instant::now();
            let response: ShareFetchResponse = connection
                .call(API_SHARE_FETCH, 1, &request)
                .with_context(|| format!("ShareFetch from {}", self.leader))?;
            ledger.round_trips.fetch_add(1, Relaxed);
            ledger
                .round_trip_ns
                .fetch_add(sent_at.elapsed().as_nanos() as u64, Relaxed);
            ensure!(
                response.error_code == 0,
                "ShareFetch epoch {epoch}: error {} {}",
                response.error_code,
                response.error_message.as_deref().unwrap_or("")
            );
            let sent = std::mem::take(&mut pending);
            self.settle(&response, &sent)?;
            for topic in &response.responses {
                for data in &topic.partitions {
                    ensure!(
                        data.error_code == 0,
                        "ShareFetch {}/{}: error {}",
                        self.plan.topic,
                        data.partition_index,
                        data.error_code
                    );
                    let ranges = self.take(data.partition_index, &data.acquired_records)?;
                    self.read(
                        data.records.as_ref(),
                        &data.acquired_records,
                        &mut histogram,
                    )?;
                    pending
                        .entry(data.partition_index)
                        .or_default()
                        .extend(ranges);
                }
            }
            // Epochs run 1, 2, ... and wrap to 1 (0 opens a session, -1 closes it).
            epoch = epoch.checked_add(1).unwrap_or(1);
        }
        ledger
            .session_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
        self.close(&mut connection, &pending)?;
        Ok(histogram)
    }

    fn fetch_request(&self, epoch: i32, pending: &Pending) -> ShareFetchRequest {
        // The first request opens the session with every partition; later ones name only the
        // partitions they acknowledge records of.
        let partitions = self
            .starts
            .keys()
            .filter(|partition| epoch == 0 || pending.contains_key(partition))
            .map(|&partition| {
                FetchPartition::default()
                    .with_partition_index(partition)
                    .with_partition_max_bytes(self.plan.max_bytes)
                    .with_acknowledgement_batches(accepts(pending.get(&partition)))
            })
            .collect::<Vec<_>>();
        let topics = if partitions.is_empty() {
            Vec::new()
        } else {
            vec![FetchTopic::default()
                .with_topic_id(self.plan.topic_id)
                .with_partitions(partitions)]
        };
        ShareFetchRequest::default()
            .with_group_id(Some(GroupId(StrBytes::from_string(
                self.plan.group.clone(),
            ))))
            .with_member_id(Some(StrBytes::from_string(self.member_id.to_owned())))
            .with_share_session_epoch(epoch)
            .with_max_wait_ms(FETCH_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(self.plan.max_bytes)
            .with_max_records(self.plan.max_records)
            .with_batch_size(self.plan.max_records)
            .with_topics(topics)
    }

    /// Marks an answer's acquired ranges in the ledger; a record acquired before is an error.
    fn take(&self, partition: i32, acquired: &[AcquiredRecords]) -> Result<Vec<(i64, i64)>> {
        let Some(&start) = self.starts.get(&partition) else {
            bail!("ShareFetch answered partition {partition} the session does not hold");
        };
        let mut ranges = Vec::with_capacity(acquired.len());
        for range in acquired {
            let seen =
                self.plan
                    .ledger
                    .mark(partition, start, range.first_offset, range.last_offset)?;
            ensure!(
                seen == 0,
                "{seen} record(s) of {partition}:{}..={} acquired again (delivery count {})",
                range.first_offset,
                range.last_offset,
                range.delivery_count
            );
            ranges.push((range.first_offset, range.last_offset));
        }
        Ok(ranges)
    }

    /// Checks the records of the acquired ranges (CRC, send time) and records their latency.
    fn read(
        &self,
        records: Option<&Bytes>,
        acquired: &[AcquiredRecords],
        histogram: &mut Histogram<u64>,
    ) -> Result<()> {
        let expected: i64 = acquired
            .iter()
            .map(|range| range.last_offset - range.first_offset + 1)
            .sum();
        let shared = &self.plan.shared;
        let now_ns = shared.clock.now_ns();
        let mut found = 0i64;
        let mut foreign = false;
        parse_batches(records.map_or(&[][..], |bytes| &bytes[..]), |batch| {
            if batch.is_control() {
                return Ok(());
            }
            parse_records(batch.records, batch.record_count, |record| {
                let offset = batch.base_offset + i64::from(record.offset_delta);
                let wanted = acquired
                    .iter()
                    .any(|range| (range.first_offset..=range.last_offset).contains(&offset));
                if !wanted {
                    return;
                }
                found += 1;
                match record.value.and_then(value_send_time_ns) {
                    Some(send_ns) if send_ns <= now_ns => {
                        stats::record(histogram, now_ns - send_ns, 1);
                    }
                    _ => foreign = true,
                }
            })
        })?;
        ensure!(!foreign, "a record carries no weir-bench send time");
        ensure!(
            found == expected,
            "an answer acquired {expected} records but carried {found} of them"
        );
        Ok(())
    }

    /// Credits the acknowledgements a request carried once its answer says they were applied.
    fn settle(&self, response: &ShareFetchResponse, sent: &Pending) -> Result<()> {
        for topic in &response.responses {
            for data in &topic.partitions {
                let Some(ranges) = sent.get(&data.partition_index) else {
                    continue;
                };
                ensure!(
                    data.acknowledge_error_code == 0,
                    "acknowledging {}/{}: error {}",
                    self.plan.topic,
                    data.partition_index,
                    data.acknowledge_error_code
                );
                self.credit(ranges);
            }
        }
        Ok(())
    }

    fn credit(&self, ranges: &[(i64, i64)]) {
        let count: u64 = ranges
            .iter()
            .map(|(first, last)| (last - first + 1) as u64)
            .sum();
        let shared = &self.plan.shared;
        self.plan.ledger.acknowledged.fetch_add(count, Relaxed);
        shared.consumed[0].add(count, count * self.plan.payload_bytes);
        shared.consume_end_ns[0].fetch_max(shared.clock.now_ns(), Relaxed);
    }

    /// Sends the last acknowledgements and closes the session (ShareAcknowledge, epoch -1).
    fn close(&self, connection: &mut Connection, pending: &Pending) -> Result<()> {
        let partitions: Vec<AcknowledgePartition> = pending
            .iter()
            .map(|(&partition, ranges)| {
                AcknowledgePartition::default()
                    .with_partition_index(partition)
                    .with_acknowledgement_batches(
                        ranges
                            .iter()
                            .map(|&(first, last)| {
                                share_acknowledge_request::AcknowledgementBatch::default()
                                    .with_first_offset(first)
                                    .with_last_offset(last)
                                    .with_acknowledge_types(vec![ACCEPT])
                            })
                            .collect(),
                    )
            })
            .collect();
        let request = ShareAcknowledgeRequest::default()
            .with_group_id(Some(GroupId(StrBytes::from_string(
                self.plan.group.clone(),
            ))))
            .with_member_id(Some(StrBytes::from_string(self.member_id.to_owned())))
            .with_share_session_epoch(-1)
            .with_topics(if partitions.is_empty() {
                Vec::new()
            } else {
                vec![AcknowledgeTopic::default()
                    .with_topic_id(self.plan.topic_id)
                    .with_partitions(partitions)]
            });
        let response: ShareAcknowledgeResponse = connection
            .call(API_SHARE_ACKNOWLEDGE, 1, &request)
            .with_context(|| format!("closing the share session on {}", self.leader))?;
        ensure!(
            response.error_code == 0,
            "ShareAcknowledge epoch -1: error {}",
            response.error_code
        );
        for topic in &response.responses {
            for data in &topic.partitions {
                ensure!(
                    data.error_code == 0,
                    "ShareAcknowledge {}/{}: error {}",
                    self.plan.topic,
                    data.partition_index,
                    data.error_code
                );
                if let Some(ranges) = pending.get(&data.partition_index) {
                    self.credit(ranges);
                }
            }
        }
        Ok(())
    }
}

/// One Accept batch per acquired range.
fn accepts(ranges: Option<&Vec<(i64, i64)>>) -> Vec<AcknowledgementBatch> {
    ranges
        .into_iter()
        .flatten()
        .map(|&(first, last)| {
            AcknowledgementBatch::default()
                .with_first_offset(first)
                .with_last_offset(last)
                .with_acknowledge_types(vec![ACCEPT])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_counts_each_record_once() {
        let ledger = Ledger::default();
        assert_eq!(ledger.mark(0, 100, 100, 199).unwrap(), 0);
        assert_eq!(ledger.mark(1, 0, 0, 9).unwrap(), 0);
        assert_eq!(ledger.mark(0, 100, 190, 209).unwrap(), 10);
        assert_eq!(ledger.acquired.load(Relaxed), 100 + 10 + 10);
        assert_eq!(ledger.duplicates.load(Relaxed), 10);
        assert!(ledger.mark(0, 100, 99, 99).is_err());
    }
}
