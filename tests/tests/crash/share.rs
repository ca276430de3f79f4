//! Share-group acknowledgement state in the SIGKILL loop. Each round produces a few records to
//! `crash-share` partition 0; a fresh member of one share group acquires them, accepts some
//! (answered before the kill), sends the acceptance of a few more timed to land near the kill
//! (their fate unknown), and holds the rest. After the restart a new member takes every record
//! available and accepts it. Then:
//! - no record whose acceptance was answered is delivered again;
//! - every record acquired and not acknowledged at the kill comes back;
//! - every produced record not accepted (or in flight) comes back, and nothing else does.
//!
//! Raw protocol (ShareGroupHeartbeat v1, ShareFetch v1, ShareAcknowledge v1), as the rest of
//! the suite: heartbeats go to the coordinator shard (the other answers NOT_COORDINATOR),
//! fetches and acknowledgements to the partition's leader shard.

use std::collections::BTreeSet;
use std::time::Duration;

use kafka_protocol::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch,
};
use kafka_protocol::messages::share_fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;

use super::{port, produce, text, Client};

pub const TOPIC: &str = "crash-share";
const GROUP: &str = "crash-share-group";
/// Records produced per round.
const BATCH: usize = 8;
const ACCEPT: i8 = 1;

/// What the test knows of the share group's state, by offset of `crash-share` partition 0.
#[derive(Default)]
pub struct ShareLedger {
    topic_id: uuid::Uuid,
    /// The shard port of partition 0's leader (a partition's shard does not change).
    leader_port: u16,
    produced: BTreeSet<i64>,
    /// Acceptances answered: never delivered again.
    accepted: BTreeSet<i64>,
    /// Acceptances sent near the kill, unanswered: delivered again or not.
    in_flight: BTreeSet<i64>,
    /// Acquired, never acknowledged, at the kill: must come back.
    held: BTreeSet<i64>,
    pub redelivered: usize,
}

impl ShareLedger {
    /// Records accepted, as answered.
    pub fn accepted(&self) -> usize {
        self.accepted.len()
    }
}

/// A member's connections: to the group's coordinator and to the partition's leader.
struct Member {
    id: String,
    leader: Client,
    epoch: i32,
}

impl ShareLedger {
    pub fn new(client: &mut Client) -> ShareLedger {
        let mut wanted = metadata_request::MetadataRequestTopic::default();
        wanted.name = Some(TopicName(text(TOPIC)));
        let mut request = MetadataRequest::default();
        request.topics = Some(vec![wanted]);
        let response = client.call(12, &request).unwrap();
        let topic = &response.topics[0];
        let leader = topic.partitions[0].leader_id;
        let broker = response.brokers.iter().find(|b| b.node_id == leader);
        ShareLedger {
            topic_id: topic.topic_id,
            leader_port: broker.expect("the leader is a listed broker").port as u16,
            ..ShareLedger::default()
        }
    }

    /// Produces this round's records, has a member acquire them, accept some, hold the rest,
    /// and returns the thread that accepts a few more `accept_after_ms` from now.
    pub fn before_kill(
        &mut self,
        round: usize,
        accept_after_ms: u64,
    ) -> std::thread::JoinHandle<(Vec<i64>, bool)> {
        let values: Vec<String> = (0..BATCH).map(|i| format!("share/{round}.{i}")).collect();
        let (code, base) = produce(&mut Client::connect().unwrap(), TOPIC, 0, &values).unwrap();
        assert_eq!(code, 0, "producing to {TOPIC}");
        self.produced.extend(base..base + BATCH as i64);
        let mut member = self.join(&format!("worker-{round}"));
        let acquired = member.fetch(self.topic_id);
        let mut acquired = acquired.into_iter();
        let now: Vec<i64> = acquired.by_ref().take(BATCH / 2).collect();
        assert!(member.acknowledge(self.topic_id, &now), "accepting {now:?}");
        self.accepted.extend(&now);
        let later: Vec<i64> = acquired.by_ref().take(2).collect();
        self.held.extend(acquired);
        self.in_flight.extend(&later);
        let topic_id = self.topic_id;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(accept_after_ms));
            let answered = member.acknowledge(topic_id, &later);
            (later, answered)
        })
    }

    /// After the restart: a new member takes and accepts everything available; checks it
    /// against what was accepted, held and in flight at the kill.
    pub fn verify(&mut self, round: usize, accepting: std::thread::JoinHandle<(Vec<i64>, bool)>) {
        let (late, answered) = accepting.join().unwrap();
        if answered {
            self.accepted.extend(&late);
        }
        let mut member = self.join(&format!("verifier-{round}"));
        let delivered = member.drain(self.topic_id);
        let again: Vec<_> = delivered.intersection(&self.accepted).collect();
        assert!(
            again.is_empty(),
            "round {round}: accepted, delivered again: {again:?}"
        );
        let lost: Vec<_> = self.held.difference(&delivered).collect();
        assert!(
            lost.is_empty(),
            "round {round}: held at the kill, lost: {lost:?}"
        );
        let owed: BTreeSet<i64> = (self.produced.difference(&self.accepted))
            .filter(|offset| !self.in_flight.contains(offset))
            .copied()
            .collect();
        let missing: Vec<_> = owed.difference(&delivered).collect();
        assert!(
            missing.is_empty(),
            "round {round}: never delivered: {missing:?}"
        );
        let unknown: Vec<_> = delivered.difference(&self.produced).collect();
        assert!(
            unknown.is_empty(),
            "round {round}: not produced: {unknown:?}"
        );
        self.redelivered += self.held.len();
        // Everything is settled now: what the verifier took it accepted (answered), and an
        // in-flight acceptance not delivered again took effect.
        self.accepted.extend(&self.produced);
        self.in_flight.clear();
        self.held.clear();
    }

    /// Joins `member` on the coordinator shard; its fetches go to the partition's leader.
    fn join(&self, member: &str) -> Member {
        let joined = [port() + 1, port() + 2].iter().any(|&shard| {
            let mut client = Client::connect_to(shard).unwrap();
            let mut request = ShareGroupHeartbeatRequest::default();
            request.group_id = GroupId(text(GROUP));
            request.member_id = text(member);
            request.member_epoch = 0;
            request.subscribed_topic_names = Some(vec![TopicName(text(TOPIC))]);
            let answer = client.call(1, &request).unwrap();
            assert!(matches!(answer.error_code, 0 | 16), "joining: {answer:?}");
            answer.error_code == 0
        });
        assert!(joined, "no shard coordinates {GROUP}");
        Member {
            id: member.to_string(),
            leader: Client::connect_to(self.leader_port).unwrap(),
            epoch: 0,
        }
    }
}

impl Member {
    /// One fetch (the first opens the share session): the offsets it acquires.
    fn fetch(&mut self, topic_id: uuid::Uuid) -> Vec<i64> {
        let mut partition = FetchPartition::default();
        partition.partition_index = 0;
        let mut fetched = FetchTopic::default();
        fetched.topic_id = topic_id;
        fetched.partitions.push(partition);
        let mut request = ShareFetchRequest::default();
        request.group_id = Some(GroupId(text(GROUP)));
        request.member_id = Some(text(&self.id));
        request.share_session_epoch = self.epoch;
        request.max_wait_ms = 100;
        request.max_records = 100;
        request.batch_size = 100;
        request.max_bytes = 1 << 20;
        request.topics.push(fetched);
        let response = self.leader.call(1, &request).unwrap();
        self.epoch += 1;
        assert_eq!(response.error_code, 0, "share fetch: {response:?}");
        // A partition with nothing to give may be left out of the answer.
        let Some(partition) = (response.responses.first()).and_then(|t| t.partitions.first())
        else {
            return Vec::new();
        };
        assert_eq!(partition.error_code, 0, "share fetch: {response:?}");
        (partition.acquired_records.iter())
            .flat_map(|range| range.first_offset..=range.last_offset)
            .collect()
    }

    /// Accepts `offsets` (contiguous); whether the broker answered that it did.
    fn acknowledge(&mut self, topic_id: uuid::Uuid, offsets: &[i64]) -> bool {
        let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
            return true;
        };
        let mut batch = AcknowledgementBatch::default();
        batch.first_offset = first;
        batch.last_offset = last;
        batch.acknowledge_types = vec![ACCEPT];
        let mut partition = AcknowledgePartition::default();
        partition.partition_index = 0;
        partition.acknowledgement_batches.push(batch);
        let mut topic = AcknowledgeTopic::default();
        topic.topic_id = topic_id;
        topic.partitions.push(partition);
        let mut request = ShareAcknowledgeRequest::default();
        request.group_id = Some(GroupId(text(GROUP)));
        request.member_id = Some(text(&self.id));
        request.share_session_epoch = self.epoch;
        request.topics.push(topic);
        self.epoch += 1;
        let Ok(response) = self.leader.call(1, &request) else {
            return false; // the broker died first
        };
        let code = response.responses[0].partitions[0].error_code;
        assert_eq!((response.error_code, code), (0, 0), "{response:?}");
        true
    }

    /// Takes and accepts everything available, until a fetch finds nothing.
    fn drain(&mut self, topic_id: uuid::Uuid) -> BTreeSet<i64> {
        let mut delivered = BTreeSet::new();
        loop {
            let acquired = self.fetch(topic_id);
            if acquired.is_empty() {
                return delivered;
            }
            for run in contiguous(&acquired) {
                assert!(self.acknowledge(topic_id, &run), "accepting {run:?}");
            }
            for offset in acquired {
                assert!(delivered.insert(offset), "offset {offset} delivered twice");
            }
        }
    }
}

/// `offsets` (ascending) as runs of consecutive offsets.
fn contiguous(offsets: &[i64]) -> Vec<Vec<i64>> {
    let mut runs: Vec<Vec<i64>> = Vec::new();
    for &offset in offsets {
        match runs.last_mut() {
            Some(run) if run.last() == Some(&(offset - 1)) => run.push(offset),
            _ => runs.push(vec![offset]),
        }
    }
    runs
}
