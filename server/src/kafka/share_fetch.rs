//! ShareFetch (v1-v2, KIP-932): a share group member's fetch from the partitions this shard leads.
//! In order: the share session step (`shares::sessions`), the acknowledgements the request
//! carries (made durable before the answer), then — unless the session closes (epoch -1) —
//! records acquired for the member from each of the session's partitions, long-polling up to
//! `max_wait_ms` while none can be acquired.
//!
//! Each partition is read from its lowest available record, up to the batch that covers
//! `max_records` (or the room left under the partition's lock limit, if less); the member
//! acquires every available record of those batches (batch-aligned, as Kafka 4.2's default
//! acquire mode: `max_records` and the lock limit may be exceeded to finish a batch, as Kafka's
//! `SharePartition` does), and the answer carries those whole batches and the acquired ranges
//! with their delivery counts (clients keep only the acquired records). The batches come from
//! `share_reads`, which reads a partition's log once for the several answers a batch can still
//! need (record_limit mode, records of it released or expired).
//!
//! Version 2 (Kafka 4.2) adds `ShareAcquireMode` (KIP-1206: 1, record_limit, acquires at most
//! `max_records`, no batch alignment) and, for KIP-1222's Renew acknowledgements, `IsRenewAck`:
//! such a request only acknowledges (its acknowledgements may Renew locks) and fetches nothing,
//! and Kafka refuses it (INVALID_REQUEST) unless its `MaxWaitMs`, `MinBytes`, `MaxBytes` and
//! `MaxRecords` are all 0.
//!
//! ACLs: Read on the group (GROUP_AUTHORIZATION_FAILED) and on every topic named
//! (TOPIC_AUTHORIZATION_FAILED), checked before the session step.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::share_fetch_request::FetchTopic;
use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, LeaderIdAndEpoch, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::{ShareFetchRequest, ShareFetchResponse};
use kafka_protocol::protocol::StrBytes;

use super::error_codes as code;
use super::fetch::{first_of, Wait};
use super::share_acknowledge::{durable, settle_acks, TopicIds};
use super::share_reads;
use crate::metadata::Metadata;
use crate::partition;
use crate::queues::AcquiredRun;
use crate::security::acl::{Access, Operation};
use crate::shard::{Shard, ShardId};
use crate::shares::group_configs;
use crate::shares::partitions::{self, SharePartitionId};
use crate::shares::sessions;

/// Upper bound on a long poll, whatever the client asks.
const WAIT_MAX: Duration = Duration::from_secs(30);
/// How often a long poll looks again for records given back (released, expired) rather than
/// appended, which wake nothing.
const RELEASE_POLL: Duration = Duration::from_millis(50);
/// Records per answer when the request names no limit (librdkafka's `max.poll.records`).
const DEFAULT_MAX_RECORDS: usize = 500;
/// Bytes read from one partition per answer at most.
const PARTITION_BYTES_MAX: usize = 8 << 20;
/// Bytes asked of the log per partition read: an answer carries at most `max_records` records
/// (500 by default), which 1 MiB holds up to 2 KiB each, and the log returns at least the whole
/// batch holding the offset asked for, so a larger batch still comes. Reading 8 MiB to acquire 500
/// records of 100 B bounded share consumers at 41k records/s (docs/benchmarks.md).
const READ_BYTES_MAX: usize = 1 << 20;

/// One partition's part of the answer.
#[derive(Default)]
struct Fetched {
    error_code: i16,
    records: Bytes,
    acquired: Vec<AcquiredRecords>,
    leader: Option<ShardId>,
}

/// KIP-1206's acquire modes (ShareFetch v2's `ShareAcquireMode`).
const BATCH_OPTIMIZED: i8 = 0;
const RECORD_LIMIT: i8 = 1;

/// A known acquire mode, and a renewing request (version 2+ only: the codec refuses the flag
/// below) that fetches nothing and says so with zero limits (KIP-1222).
fn well_formed(request: &ShareFetchRequest) -> bool {
    let limits_zero = request.max_wait_ms == 0
        && request.min_bytes == 0
        && request.max_bytes == 0
        && request.max_records == 0;
    [BATCH_OPTIMIZED, RECORD_LIMIT].contains(&request.share_acquire_mode)
        && (!request.is_renew_ack || limits_zero)
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ShareFetchRequest,
    access: Access,
) -> ShareFetchResponse {
    let mut response = ShareFetchResponse::default();
    let (group, member) = match (&request.group_id, &request.member_id) {
        (Some(group), Some(member)) if !member.is_empty() => {
            (group.0.to_string(), member.to_string())
        }
        _ => return refused(response, code::INVALID_REQUEST),
    };
    if let Some(error_code) = unauthorized(&access, &shard.metadata(), &group, &request.topics) {
        return refused(response, error_code);
    }
    response.acquisition_lock_timeout_ms = group_configs::lock_timeout_ms(shard, &group);
    if !well_formed(&request) {
        return refused(response, code::INVALID_REQUEST);
    }
    let renewing = request.is_renew_ack;
    let ids = TopicIds::new(&shard.metadata());
    let mut added = Vec::new();
    let mut acks = Vec::new();
    for topic in &request.topics {
        let Some(name) = ids.name(&topic.topic_id) else {
            return refused(response, code::UNKNOWN_TOPIC_ID);
        };
        for part in &topic.partitions {
            added.push((name.clone(), part.partition_index));
            let batches = part.acknowledgement_batches.iter();
            let batches =
                batches.map(|b| ((b.first_offset, b.last_offset), b.acknowledge_types.clone()));
            acks.push((
                (name.clone(), part.partition_index),
                batches.collect::<Vec<_>>(),
            ));
        }
    }
    acks.retain(|(_, batches)| !batches.is_empty());
    let forgotten = ids.partitions(
        request
            .forgotten_topics_data
            .iter()
            .map(|t| (t.topic_id, t.partitions.clone())),
    );
    let epoch = request.share_session_epoch;
    if epoch == 0 && !acks.is_empty() {
        return refused(response, code::INVALID_REQUEST);
    }
    let session = match sessions::step(&group, &member, epoch, &added, &forgotten) {
        Ok(session) => session,
        Err(error) => return refused(response, code::from_session_error(error)),
    };
    let settled = settle_acks(shard, &group, &member, &acks, version);
    let made_durable = durable(settled, !acks.is_empty());
    let fetching = async {
        if epoch == -1 {
            sessions::closed(&group, &member, &session);
            return BTreeMap::new();
        }
        if renewing {
            return BTreeMap::new();
        }
        // The ack store's flusher is a task of its own: let it start its write before this
        // fetch's acquisitions and copies take the shard, so the two overlap.
        futures_lite::future::yield_now().await;
        fetch_long(shard, &group, &member, &session, Limits::of(&request)).await
    };
    // Answered once both are done: the acknowledgements durable (KIP-932: the acknowledge error
    // code says they are) and the next records acquired, which did not wait for the write.
    let (ack_codes, mut results) = futures_lite::future::zip(made_durable, fetching).await;
    for (key, _) in &acks {
        results.entry(key.clone()).or_default();
    }
    response.responses = shape(shard, &ids, results, &ack_codes);
    response
}

#[derive(Clone, Copy)]
struct Limits {
    records: usize,
    bytes: usize,
    wait: Duration,
    rotate: usize,
    /// KIP-1206's record_limit mode: never more than `records`, even inside a batch.
    strict: bool,
}

impl Limits {
    fn of(request: &ShareFetchRequest) -> Limits {
        Limits {
            records: usize::try_from(request.max_records)
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or(DEFAULT_MAX_RECORDS),
            bytes: usize::try_from(request.max_bytes)
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or(usize::MAX),
            wait: Duration::from_millis(request.max_wait_ms.max(0) as u64).min(WAIT_MAX),
            rotate: request.share_session_epoch.max(0) as usize,
            strict: request.share_acquire_mode == RECORD_LIMIT,
        }
    }
}

/// Fetch rounds until a round acquires something, the wait is over, or the shard stops.
async fn fetch_long(
    shard: &Rc<Shard>,
    group: &str,
    member: &str,
    session: &[(String, i32)],
    limits: Limits,
) -> BTreeMap<(String, i32), Fetched> {
    let deadline = Instant::now() + limits.wait;
    loop {
        let results = fetch_round(shard, group, member, session, limits).await;
        let acquired = results.values().any(|f| !f.acquired.is_empty());
        let errors = results.values().any(|f| f.error_code != code::NONE);
        let now = Instant::now();
        if acquired || errors || now >= deadline || shard.shutdown.is_fired() || session.is_empty()
        {
            return results;
        }
        wait_for_any(shard, session, (deadline - now).min(RELEASE_POLL)).await;
    }
}

/// One pass over the session's partitions, starting at a rotating one so that a small
/// `max_records` does not starve the last.
async fn fetch_round(
    shard: &Rc<Shard>,
    group: &str,
    member: &str,
    session: &[(String, i32)],
    limits: Limits,
) -> BTreeMap<(String, i32), Fetched> {
    let mut results = BTreeMap::new();
    let (mut records, mut bytes) = (limits.records, limits.bytes);
    let count = session.len().max(1);
    for index in 0..session.len() {
        let (topic, partition) = &session[(limits.rotate + index) % count];
        let id = SharePartitionId {
            group: group.to_string(),
            topic: topic.clone(),
            partition: *partition,
        };
        let fetched = if records == 0 || bytes == 0 {
            Fetched::default()
        } else {
            fetch_partition(shard, &id, member, records, bytes, limits.strict).await
        };
        let taken: usize = fetched.acquired.iter().map(range_len).sum();
        records = records.saturating_sub(taken);
        bytes = bytes.saturating_sub(fetched.records.len());
        results.insert((topic.clone(), *partition), fetched);
    }
    results
}

fn range_len(range: &AcquiredRecords) -> usize {
    (range.last_offset - range.first_offset + 1).max(0) as usize
}

async fn fetch_partition(
    shard: &Rc<Shard>,
    id: &SharePartitionId,
    member: &str,
    max_records: usize,
    max_bytes: usize,
    strict: bool,
) -> Fetched {
    match shard.metadata().owner(&id.topic, id.partition) {
        None => return failed(code::UNKNOWN_TOPIC_OR_PARTITION),
        Some(owner) if owner != shard.id => {
            let mut fetched = failed(code::NOT_LEADER_OR_FOLLOWER);
            fetched.leader = Some(owner);
            return fetched;
        }
        Some(_) => {}
    }
    // As Kafka's `SharePartition`: at most the room left under the lock limit is wanted...
    let (start, wanted) = match partitions::first_available(shard, id) {
        Ok(Some((start, room))) if room > 0 => (start, max_records.min(room)),
        Ok(_) => return Fetched::default(),
        Err(error) => return failed(code::from_ack_error(error)),
    };
    let (records, end) = match batches(shard, id, start, wanted, max_bytes).await {
        Ok(found) => found,
        Err(error_code) => return failed(error_code),
    };
    // ...and then, batch-aligned as Kafka 4.2's default `share.acquire.mode` (batch_optimized,
    // KIP-1206), every available record of the batches that cover it is acquired, past
    // `max_records` and the lock limit if the last batch goes past them: a batch is never split
    // between answers, so it is sent once. In record_limit mode, `wanted` at most.
    let aligned = usize::try_from(end.saturating_sub(start)).unwrap_or(0);
    let max = if strict { wanted } else { aligned.max(wanted) };
    match partitions::acquire(shard, id, member, (max, end), !strict) {
        Ok(acquired) if acquired.is_empty() => Fetched::default(),
        Ok(acquired) => Fetched {
            error_code: code::NONE,
            records,
            acquired: ranges(&acquired),
            leader: None,
        },
        Err(error) => failed(code::from_ack_error(error)),
    }
}

fn failed(error_code: i16) -> Fetched {
    Fetched {
        error_code,
        ..Fetched::default()
    }
}

/// The whole batches that answer from `start` (`share_reads`): remembered from an earlier read
/// of this partition when they can be, read from the log when not.
async fn batches(
    shard: &Rc<Shard>,
    id: &SharePartitionId,
    start: i64,
    max_records: usize,
    max_bytes: usize,
) -> Result<(Bytes, i64), i16> {
    let (topic, partition) = (id.topic.as_str(), id.partition);
    let log = shard
        .log(topic, partition)
        .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)?;
    if let Some((records, end)) =
        share_reads::remembered(&log, topic, partition, start, max_records)
    {
        crate::metrics::read(topic, [records.as_ref()]);
        return Ok((records, end));
    }
    let max_bytes = max_bytes.min(PARTITION_BYTES_MAX).min(READ_BYTES_MAX);
    let read = partition::read(shard, topic, partition, start, max_bytes).await;
    if let Some(error) = read.error {
        return Err(code::from_partition_error(error));
    }
    let chunks = &read.payload;
    Ok(share_reads::remember(
        &log,
        topic,
        partition,
        chunks,
        start,
        max_records,
    ))
}

/// Acquired runs (lowest first, consecutive offsets with one delivery count each) as KIP-932's
/// ranges.
fn ranges(acquired: &[AcquiredRun]) -> Vec<AcquiredRecords> {
    let ranges = acquired.iter().filter(|run| !run.is_empty()).map(|run| {
        AcquiredRecords::default()
            .with_first_offset(run.start.get())
            .with_last_offset(run.end.get() - 1)
            .with_delivery_count(i16::try_from(run.delivery_count).unwrap_or(i16::MAX))
    });
    ranges.collect()
}

/// Waits until any of the session's partitions has records past its end, or `wait`.
async fn wait_for_any(shard: &Rc<Shard>, session: &[(String, i32)], wait: Duration) {
    let mut waits: Vec<Wait<'_>> = Vec::new();
    for (topic, partition) in session {
        if let Some(log) = shard.log(topic, *partition) {
            let end = log.high_watermark();
            waits.push(Box::pin(async move { log.wait_for_data(end).await }));
        }
    }
    first_of(shard, wait, waits).await
}

/// The answer's topics: every partition fetched or acknowledged, grouped by topic id.
fn shape(
    shard: &Shard,
    ids: &TopicIds,
    results: BTreeMap<(String, i32), Fetched>,
    ack_codes: &BTreeMap<(String, i32), i16>,
) -> Vec<ShareFetchableTopicResponse> {
    let mut topics: Vec<ShareFetchableTopicResponse> = Vec::new();
    for ((topic, partition), fetched) in results {
        let Some(topic_id) = ids.id(&topic) else {
            continue;
        };
        let mut data = PartitionData::default();
        data.partition_index = partition;
        data.error_code = fetched.error_code;
        data.acknowledge_error_code = *ack_codes.get(&(topic.clone(), partition)).unwrap_or(&0);
        data.current_leader = leader(shard, fetched.leader);
        data.records = Some(fetched.records);
        data.acquired_records = fetched.acquired;
        match topics.last_mut() {
            Some(last) if last.topic_id == topic_id => last.partitions.push(data),
            _ => {
                let mut entry = ShareFetchableTopicResponse::default();
                entry.topic_id = topic_id;
                entry.partitions.push(data);
                topics.push(entry);
            }
        }
    }
    topics
}

fn leader(shard: &Shard, owner: Option<ShardId>) -> LeaderIdAndEpoch {
    let mut leader = LeaderIdAndEpoch::default();
    leader.leader_id = owner.map_or(-1, |owner| shard.advertised_broker(owner) as i32);
    leader.leader_epoch = if owner.is_some() { 0 } else { -1 };
    leader
}

/// Kafka's ACLs for ShareFetch: Read on the group, and Read on every topic it names (Weir
/// refuses the whole request for one unreadable topic, where Kafka refuses its partitions).
fn unauthorized(
    access: &Access,
    metadata: &Metadata,
    group: &str,
    topics: &[FetchTopic],
) -> Option<i16> {
    if !access.allows_group(Operation::Read, group) {
        return Some(code::GROUP_AUTHORIZATION_FAILED);
    }
    let ids = TopicIds::new(metadata);
    topics
        .iter()
        .filter_map(|topic| ids.name(&topic.topic_id))
        .any(|name| !access.allows_topic(Operation::Read, &name))
        .then_some(code::TOPIC_AUTHORIZATION_FAILED)
}

fn refused(mut response: ShareFetchResponse, error_code: i16) -> ShareFetchResponse {
    response.error_code = error_code;
    response.error_message = Some(StrBytes::from_static_str(match error_code {
        code::INVALID_REQUEST => "invalid share fetch request",
        code::UNKNOWN_TOPIC_ID => "unknown topic id",
        code::GROUP_AUTHORIZATION_FAILED => "not authorized to read the share group",
        code::TOPIC_AUTHORIZATION_FAILED => "not authorized to read a topic",
        code::SHARE_SESSION_NOT_FOUND => "share session not found",
        code::INVALID_SHARE_SESSION_EPOCH => "share session epoch is not the expected one",
        code::SHARE_SESSION_LIMIT_REACHED => "the share session limit has been reached",
        _ => "share fetch refused",
    }));
    response
}
