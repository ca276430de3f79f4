//! ShareGroupDescribe (v1, KIP-932): each group is described on its coordinator shard
//! (`groups::owner_shard`), whichever shard the request reached, and the answers come back in
//! request order. As in Kafka 4.2: an empty group id is INVALID_GROUP_ID, a group the
//! coordinator does not know (or a classic group's id) GROUP_ID_NOT_FOUND, the assignor is
//! "simple". After a restart a group with share state and no members is known, Empty
//! (`shares::members::announce`).

use std::rc::Rc;

use kafka_protocol::messages::share_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    GroupId, ShareGroupDescribeRequest, ShareGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::error_codes as code;
use crate::groups::owner_shard;
use crate::metadata::Metadata;
use crate::security::acl::{Access, Operation};
use crate::shard::mesh::on_shard;
use crate::shard::{Shard, ShardId};
use crate::shares::members::{self, DescribedMember, ShareGroupDescription};

/// KIP-932's one assignor name; Weir's assignment is described in `shares::members`.
const ASSIGNOR: &str = "simple";

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: ShareGroupDescribeRequest,
    access: Access,
) -> ShareGroupDescribeResponse {
    let mut response = ShareGroupDescribeResponse::default();
    for group in request.group_ids {
        let group_id = group.0.to_string();
        if group_id.is_empty() {
            response
                .groups
                .push(refused(group_id, code::INVALID_GROUP_ID, None));
            continue;
        }
        // Kafka: Describe on the group.
        if !access.allows_group(Operation::Describe, &group_id) {
            let refusal = refused(group_id, code::GROUP_AUTHORIZATION_FAILED, None);
            response.groups.push(refusal);
            continue;
        }
        let owner = ShardId(owner_shard(&group_id, shard.count));
        let wanted = group_id.clone();
        let found = on_shard(shard, owner, move |shard| {
            let classic = shard.groups.borrow().clone();
            let is_classic = classic.is_some_and(|classic| classic.has_group(&wanted));
            (members::describe(&wanted), is_classic)
        });
        let described = match found.await {
            Some((Some(description), _)) => described_group(&shard.metadata(), description),
            Some((None, is_classic)) => {
                let message = if is_classic {
                    format!("Group {group_id} is not a share group.")
                } else {
                    format!("Group {group_id} not found.")
                };
                refused(group_id, code::GROUP_ID_NOT_FOUND, Some(message))
            }
            // The coordinator shard is stopping.
            None => refused(group_id, code::COORDINATOR_NOT_AVAILABLE, None),
        };
        response.groups.push(described);
    }
    response
}

fn refused(group_id: String, error_code: i16, message: Option<String>) -> DescribedGroup {
    let mut described = DescribedGroup::default();
    described.group_id = GroupId(StrBytes::from_string(group_id));
    described.error_code = error_code;
    described.error_message = message.map(StrBytes::from_string);
    described
}

pub fn described_group(metadata: &Metadata, group: ShareGroupDescription) -> DescribedGroup {
    let mut described = DescribedGroup::default();
    described.group_id = GroupId(StrBytes::from_string(group.group_id));
    described.group_state = StrBytes::from_static_str(group.state.name());
    described.group_epoch = group.group_epoch;
    described.assignment_epoch = group.assignment_epoch;
    described.assignor_name = StrBytes::from_static_str(ASSIGNOR);
    described.members = group
        .members
        .into_iter()
        .map(|member| described_member(metadata, member))
        .collect();
    described
}

fn described_member(metadata: &Metadata, member: DescribedMember) -> Member {
    let mut out = Member::default();
    out.member_id = StrBytes::from_string(member.member_id);
    out.member_epoch = member.member_epoch;
    out.client_id = StrBytes::from_string(member.client.client_id);
    out.client_host = StrBytes::from_string(member.client.client_host);
    out.subscribed_topic_names = member
        .subscribed
        .into_iter()
        .map(|topic| TopicName(StrBytes::from_string(topic)))
        .collect();
    let mut assignment = Assignment::default();
    for (topic, partitions) in member.assignment {
        let mut assigned = TopicPartitions::default();
        // A topic deleted since the assignment keeps its name and shows the nil id.
        assigned.topic_id = metadata
            .topics
            .get(&topic)
            .map_or(uuid::Uuid::nil(), |meta| meta.uuid());
        assigned.topic_name = TopicName(StrBytes::from_string(topic));
        assigned.partitions = (0..partitions).collect();
        assignment.topic_partitions.push(assigned);
    }
    out.assignment = assignment;
    out
}
