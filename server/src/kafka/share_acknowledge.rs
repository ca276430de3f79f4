//! ShareAcknowledge (v1-v2, KIP-932): a share group member settles records it acquired from the
//! partitions this shard leads, without fetching more (a commit, or the final acknowledgements
//! of a closing consumer with session epoch -1). The answer comes once the acknowledgements
//! are durable. Also the pieces ShareFetch shares with it: topic ids, applying acknowledgements.
//!
//! Version 2 (Kafka 4.2, KIP-1222) adds the acknowledge type Renew (4), which restarts the
//! record's acquisition lock (`shares::partitions::AckType::Renew`), the request's `IsRenewAck`
//! flag (set by clients when a batch holds a Renew) and the lock duration in the answer. A Renew
//! in a version 1 request is INVALID_REQUEST for its partition, as Kafka answers it.
//!
//! ACLs: Read on the group (GROUP_AUTHORIZATION_FAILED) and on every topic named
//! (TOPIC_AUTHORIZATION_FAILED; Weir refuses the whole request, Kafka the topic's partitions).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::share_acknowledge_response::{
    LeaderIdAndEpoch, PartitionData, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::{ShareAcknowledgeRequest, ShareAcknowledgeResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::error_codes as code;
use crate::metadata::Metadata;
use crate::security::acl::{Access, Operation};
use crate::shard::Shard;
use crate::shares::group_configs;
use crate::shares::partitions::{self, AckError, SharePartitionId};
use crate::shares::sessions;

/// Topic ids ↔ names, from one metadata snapshot.
pub struct TopicIds {
    by_id: BTreeMap<Uuid, String>,
    by_name: BTreeMap<String, Uuid>,
}

impl TopicIds {
    pub fn new(metadata: &Metadata) -> TopicIds {
        let mut ids = TopicIds {
            by_id: BTreeMap::new(),
            by_name: BTreeMap::new(),
        };
        for (name, topic) in &metadata.topics {
            ids.by_id.insert(topic.uuid(), name.clone());
            ids.by_name.insert(name.clone(), topic.uuid());
        }
        ids
    }

    pub fn name(&self, id: &Uuid) -> Option<String> {
        self.by_id.get(id).cloned()
    }

    pub fn id(&self, name: &str) -> Option<Uuid> {
        self.by_name.get(name).copied()
    }

    /// (topic, partition) pairs of the known topics among `topics`.
    pub fn partitions(&self, topics: impl Iterator<Item = (Uuid, Vec<i32>)>) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for (id, partitions) in topics {
            if let Some(name) = self.by_id.get(&id) {
                out.extend(partitions.into_iter().map(|p| (name.clone(), p)));
            }
        }
        out
    }
}

/// Acknowledgement batches of one partition: ((first, last), types).
pub type PartitionAcks = ((String, i32), Vec<((i64, i64), Vec<i8>)>);

/// The first request version whose acknowledgements may Renew (KIP-1222), of ShareFetch and
/// ShareAcknowledge alike.
pub const RENEW_VERSION: i16 = 2;
/// KIP-1222's acknowledge type Renew.
const RENEW_TYPE: i8 = 4;

/// Applies every partition's acknowledgements, then waits until they are durable. Answers each
/// partition's acknowledge error code.
pub async fn apply_acks(
    shard: &Shard,
    group: &str,
    member: &str,
    acks: &[PartitionAcks],
    version: i16,
) -> BTreeMap<(String, i32), i16> {
    let codes = settle_acks(shard, group, member, acks, version);
    durable(codes, !acks.is_empty()).await
}

/// Applies every partition's acknowledgements to the share partitions' state (at once, in
/// memory; the ack store is told) and answers each partition's code, before they are durable:
/// a ShareFetch fetches while they become so (`share_fetch::handle`). `version` is the
/// request's: below `RENEW_VERSION` a batch with a Renew is refused (INVALID_REQUEST) and not
/// applied.
pub fn settle_acks(
    shard: &Shard,
    group: &str,
    member: &str,
    acks: &[PartitionAcks],
    version: i16,
) -> BTreeMap<(String, i32), i16> {
    let mut codes = BTreeMap::new();
    // Kafka 4.3's `share.renew.acknowledge.enable` (default true): a group that turned it off
    // gets INVALID_RECORD_STATE for a Renew, as Kafka answers it.
    let renew_enabled = crate::shares::group_configs::renew_enabled(shard, group);
    for ((topic, partition), batches) in acks {
        let id = SharePartitionId {
            group: group.to_string(),
            topic: topic.clone(),
            partition: *partition,
        };
        let mut refused: Option<AckError> = None;
        for (range, types) in batches {
            let renews = types.contains(&RENEW_TYPE);
            if renews && version < RENEW_VERSION {
                refused.get_or_insert(AckError::InvalidRequest);
                continue;
            }
            if renews && !renew_enabled {
                refused.get_or_insert(AckError::InvalidRecordState);
                continue;
            }
            if let Err(error) = partitions::acknowledge(shard, &id, member, *range, types) {
                refused.get_or_insert(error);
            }
        }
        codes.insert(
            (topic.clone(), *partition),
            refused.map_or(code::NONE, code::from_ack_error),
        );
    }
    codes
}

/// Waits until the settled acknowledgements (`any`: there were some) are durable; a partition
/// whose acks were taken gets the ack store's error instead if they cannot be made so.
pub async fn durable(
    mut codes: BTreeMap<(String, i32), i16>,
    any: bool,
) -> BTreeMap<(String, i32), i16> {
    if any {
        if let Err(error) = partitions::sync().await {
            for code in codes.values_mut() {
                if *code == code::NONE {
                    *code = code::from_partition_error(error);
                }
            }
        }
    }
    codes
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ShareAcknowledgeRequest,
    access: Access,
) -> ShareAcknowledgeResponse {
    let mut response = ShareAcknowledgeResponse::default();
    let (group, member) = match (&request.group_id, &request.member_id) {
        (Some(group), Some(member)) if !member.is_empty() => {
            (group.0.to_string(), member.to_string())
        }
        _ => return refused(response, code::INVALID_REQUEST, "invalid request"),
    };
    // Version 2's: how long a renewed lock now runs, the group's as ShareFetch answers it.
    response.acquisition_lock_timeout_ms = group_configs::lock_timeout_ms(shard, &group);
    let epoch = request.share_session_epoch;
    if epoch == 0 {
        let text = "share session epoch 0 cannot acknowledge";
        return refused(response, code::INVALID_SHARE_SESSION_EPOCH, text);
    }
    // Kafka: Read on the group and on each topic.
    if !access.allows_group(Operation::Read, &group) {
        let text = "not authorized to read the share group";
        return refused(response, code::GROUP_AUTHORIZATION_FAILED, text);
    }
    let ids = TopicIds::new(&shard.metadata());
    let mut acks: Vec<PartitionAcks> = Vec::new();
    for topic in &request.topics {
        let Some(name) = ids.name(&topic.topic_id) else {
            return refused(response, code::UNKNOWN_TOPIC_ID, "unknown topic id");
        };
        if !access.allows_topic(Operation::Read, &name) {
            let text = "not authorized to read a topic";
            return refused(response, code::TOPIC_AUTHORIZATION_FAILED, text);
        }
        for part in &topic.partitions {
            let batches = part.acknowledgement_batches.iter();
            let batches =
                batches.map(|b| ((b.first_offset, b.last_offset), b.acknowledge_types.clone()));
            acks.push(((name.clone(), part.partition_index), batches.collect()));
        }
    }
    let session = match sessions::step(&group, &member, epoch, &[], &[]) {
        Ok(session) => session,
        Err(error) => {
            let text = error.to_string();
            return refused(response, code::from_session_error(error), &text);
        }
    };
    let codes = apply_acks(shard, &group, &member, &acks, version).await;
    if epoch == -1 {
        sessions::closed(&group, &member, &session);
    }
    response.responses = shape(&ids, codes);
    response
}

fn shape(
    ids: &TopicIds,
    codes: BTreeMap<(String, i32), i16>,
) -> Vec<ShareAcknowledgeTopicResponse> {
    let mut topics: Vec<ShareAcknowledgeTopicResponse> = Vec::new();
    for ((topic, partition), error_code) in codes {
        let Some(topic_id) = ids.id(&topic) else {
            continue;
        };
        let mut data = PartitionData::default();
        data.partition_index = partition;
        data.error_code = error_code;
        let mut leader = LeaderIdAndEpoch::default();
        leader.leader_id = -1;
        leader.leader_epoch = -1;
        data.current_leader = leader;
        match topics.last_mut() {
            Some(last) if last.topic_id == topic_id => last.partitions.push(data),
            _ => {
                let mut entry = ShareAcknowledgeTopicResponse::default();
                entry.topic_id = topic_id;
                entry.partitions.push(data);
                topics.push(entry);
            }
        }
    }
    topics
}

fn refused(
    mut response: ShareAcknowledgeResponse,
    error_code: i16,
    message: &str,
) -> ShareAcknowledgeResponse {
    response.error_code = error_code;
    response.error_message = Some(StrBytes::from_string(message.to_string()));
    response
}
