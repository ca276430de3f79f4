//! Group APIs (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch,
//! DescribeGroups, ListGroups): the Kafka side of the consumer group coordinator.
//!
//! Each API has its own file beside this one that decodes the request into the domain types of
//! `groups/`, sends it to the group's owner shard (`groups::call`, over the mesh when the owner is
//! another shard) and shapes the domain answer for the request's version; `GroupError`s become
//! Kafka codes only in `error_codes::from_group_error`. An owner shard that cannot be reached is
//! answered with COORDINATOR_NOT_AVAILABLE (clients look for the coordinator again).
//! DescribeGroups is split by owner and merged; ListGroups fans out to every shard.

use std::rc::Rc;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;

use std::future::ready;

use super::codec::{decode_body, CodecError, Request};
use super::dispatch::{later, Peer, Pending};
use super::error_codes as code;
use super::{
    describe_groups, heartbeat, join_group, leave_group, list_groups, offset_commit, offset_fetch,
    sync_group,
};
use crate::security::acl::{Access, Operation};
use crate::shard::Shard;

pub fn dispatch(
    shard: &Rc<Shard>,
    request: Request,
    peer: &Peer<'_>,
    access: &Access,
) -> Result<Pending, CodecError> {
    if let Some(refusal) = membership_refusal(&request, access)? {
        return Ok(refusal);
    }
    match request.key {
        ApiKey::JoinGroup => join_group::handle(shard, &request, peer),
        ApiKey::SyncGroup => sync_group::handle(shard, &request),
        ApiKey::Heartbeat => heartbeat::handle(shard, &request),
        ApiKey::LeaveGroup => leave_group::handle(shard, &request),
        ApiKey::OffsetCommit => offset_commit::handle(shard, &request, access),
        ApiKey::OffsetFetch => offset_fetch::handle(shard, &request, access),
        ApiKey::DescribeGroups => describe_groups::handle(shard, &request, access),
        ApiKey::ListGroups => list_groups::handle(shard, &request, peer, access),
        other => Err(CodecError::UnsupportedVersion {
            key: other,
            version: request.version,
        }),
    }
}

/// Kafka: joining, syncing, heartbeating and leaving need Read on the group; a refused request
/// is answered GROUP_AUTHORIZATION_FAILED without reaching the coordinator. (The request is
/// decoded once more by its handler when allowed: these are not the data path.)
fn membership_refusal(request: &Request, access: &Access) -> Result<Option<Pending>, CodecError> {
    use kafka_protocol::messages as m;
    if !access.enabled() {
        return Ok(None);
    }
    let allowed = |group: &StrBytes| access.allows_group(Operation::Read, group);
    let denied = code::GROUP_AUTHORIZATION_FAILED;
    let (key, version, correlation_id) = (request.key, request.version, request.correlation_id);
    let refusal = match key {
        ApiKey::JoinGroup => {
            let body: m::JoinGroupRequest = decode_body(request)?;
            let answer = m::JoinGroupResponse::default().with_error_code(denied);
            (!allowed(&body.group_id)).then(|| later(key, version, correlation_id, ready(answer)))
        }
        ApiKey::SyncGroup => {
            let body: m::SyncGroupRequest = decode_body(request)?;
            let answer = m::SyncGroupResponse::default().with_error_code(denied);
            (!allowed(&body.group_id)).then(|| later(key, version, correlation_id, ready(answer)))
        }
        ApiKey::Heartbeat => {
            let body: m::HeartbeatRequest = decode_body(request)?;
            let answer = m::HeartbeatResponse::default().with_error_code(denied);
            (!allowed(&body.group_id)).then(|| later(key, version, correlation_id, ready(answer)))
        }
        ApiKey::LeaveGroup => {
            let body: m::LeaveGroupRequest = decode_body(request)?;
            let answer = m::LeaveGroupResponse::default().with_error_code(denied);
            (!allowed(&body.group_id)).then(|| later(key, version, correlation_id, ready(answer)))
        }
        _ => None,
    };
    Ok(refusal)
}

/// A static member's group.instance.id, when the request's version has the field and it is set
/// (an empty one means a dynamic member).
pub fn instance_id(supported: bool, field: &Option<StrBytes>) -> Option<String> {
    if !supported {
        return None;
    }
    field
        .as_ref()
        .map(|id| id.to_string())
        .filter(|id| !id.is_empty())
}

/// How each version shapes the coordinator's domain answers, and how requests decode into
/// domain requests. Every response is built from fully populated domain values and encoded in
/// every version the codec knows: a field set in a version that lacks it (or a null where the
/// version has no null) makes kafka-protocol refuse the response.
#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::{
        DescribeGroupsResponse, JoinGroupRequest, ListGroupsResponse, OffsetCommitRequest,
        OffsetFetchResponse, SyncGroupRequest,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::super::describe_groups::described_group;
    use super::super::join_group::{join_request, join_response};
    use super::super::leave_group::leave_response;
    use super::super::list_groups::{listed_group, listed_share_group};
    use super::super::offset_commit::{commit_request, commit_response};
    use super::super::offset_fetch::{fetch_response, group_response, Wanted};
    use super::super::sync_group::{sync_request, sync_response};
    use crate::groups::{
        ClientInfo, CommittedOffset, DescribedMember, GroupDescription, GroupError as E,
        GroupListing, GroupState, JoinOutcome, JoinedMember, LeavingMember, Synced,
        TopicPartitions,
    };
    use crate::shares::members::{ShareGroupListing, ShareGroupState};

    fn encodes<T: Encodable>(response: &T, version: i16) {
        if let Err(error) = response.encode(&mut BytesMut::new(), version) {
            panic!("{} v{version}: {error}", std::any::type_name::<T>());
        }
    }

    fn joined() -> JoinOutcome {
        let member = |id: &str, instance: Option<&str>| JoinedMember {
            member_id: id.to_string(),
            instance_id: instance.map(str::to_string),
            metadata: Bytes::from_static(b"meta"),
        };
        JoinOutcome {
            error: None,
            generation_id: 3,
            protocol_type: Some("consumer".to_string()),
            protocol_name: Some("range".to_string()),
            leader: "m1".to_string(),
            member_id: "m1".to_string(),
            members: vec![member("m1", Some("i1")), member("m2", None)],
        }
    }

    #[test]
    fn join_and_sync_answers_fit_every_version() {
        for version in 0..=9 {
            let response = join_response(version, joined());
            encodes(&response, version);
            assert_eq!(response.members.len(), 2);
            assert_eq!(
                response.members[0].group_instance_id.is_some(),
                version >= 5
            );
            let refused = join_response(version, JoinOutcome::error(E::UnknownMember, "x"));
            encodes(&refused, version);
            assert_eq!((refused.error_code, refused.generation_id), (25, -1));
            assert_eq!(refused.member_id.as_str(), "x");
            // The protocol name is nullable only from v7.
            let expected = (version < 7).then(|| StrBytes::from_static_str(""));
            assert_eq!(refused.protocol_name, expected, "v{version}");
        }
        let synced = || Synced {
            assignment: Bytes::from_static(b"p0"),
            protocol_type: Some("consumer".to_string()),
            protocol_name: Some("range".to_string()),
        };
        for version in 0..=5 {
            let response = sync_response(version, Ok(synced()));
            encodes(&response, version);
            assert_eq!(response.assignment, "p0");
            assert_eq!(response.protocol_name.is_some(), version >= 5);
            let refused = sync_response(version, Err(E::RebalanceInProgress));
            encodes(&refused, version);
            assert_eq!(refused.error_code, 27);
        }
    }

    #[test]
    fn leave_answers_per_member_from_v3() {
        let members = [
            LeavingMember {
                member_id: "m1".to_string(),
                instance_id: None,
            },
            LeavingMember {
                member_id: "m2".to_string(),
                instance_id: Some("i2".to_string()),
            },
        ];
        for version in 0..=5 {
            let results = Ok(vec![Ok(()), Err(E::FencedInstanceId)]);
            let response = leave_response(version, &members[..], results);
            encodes(&response, version);
            let closed = leave_response(version, &members[..], Err(E::CoordinatorNotAvailable));
            encodes(&closed, version);
            assert_eq!(closed.error_code, 15);
            let codes = |r: &kafka_protocol::messages::LeaveGroupResponse| {
                r.members.iter().map(|m| m.error_code).collect::<Vec<_>>()
            };
            if version >= 3 {
                assert_eq!((response.error_code, codes(&response)), (0, vec![0, 82]));
                assert_eq!(codes(&closed), vec![15, 15]);
                assert_eq!(response.members[1].group_instance_id.as_deref(), Some("i2"));
            } else {
                assert_eq!(response.error_code, 0, "the one member's result");
                assert!(response.members.is_empty());
            }
        }
    }

    #[test]
    fn commit_answers_keep_request_order() {
        let results = vec![TopicPartitions {
            name: "t".to_string(),
            partitions: vec![
                (0, Ok(())),
                (1, Err(E::OffsetMetadataTooLarge)),
                (2, Err(E::OffsetsNotDurable)),
            ],
        }];
        for version in 2..=9 {
            let response = commit_response(results.clone());
            encodes(&response, version);
            let codes: Vec<(i32, i16)> = response.topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.error_code))
                .collect();
            assert_eq!(codes, vec![(0, 0), (1, 12), (2, 15)]);
            assert_eq!(response.topics[0].name.as_str(), "t");
        }
    }

    fn fetched() -> Vec<TopicPartitions<Option<CommittedOffset>>> {
        let committed = CommittedOffset {
            offset: 25,
            leader_epoch: 3,
            metadata: Some("m".to_string()),
            commit_timestamp_ms: 1,
        };
        vec![TopicPartitions {
            name: "t".to_string(),
            partitions: vec![(1, Some(committed)), (7, None)],
        }]
    }

    #[test]
    fn offset_fetch_shapes_one_result_in_both_layouts() {
        let wanted: Wanted = Some(vec![("t".to_string(), vec![1, 7])]);
        for version in 1..=7 {
            let response = fetch_response(version, &wanted, Ok(fetched()));
            encodes(&response, version);
            let partitions: Vec<(i32, i64, i32, String)> = response.topics[0]
                .partitions
                .iter()
                .map(|p| {
                    let metadata = p.metadata.as_deref().unwrap_or("?").to_string();
                    (
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        metadata,
                    )
                })
                .collect();
            let epoch = if version >= 5 { 3 } else { -1 };
            assert_eq!(
                partitions,
                vec![(1, 25, epoch, "m".to_string()), (7, -1, -1, String::new())]
            );
            // A refusal goes where this version has room for it.
            let refused = fetch_response(version, &wanted, Err(E::InvalidGroupId));
            encodes(&refused, version);
            if version >= 2 {
                assert_eq!(refused.error_code, 24);
                assert!(refused.topics.is_empty());
            } else {
                let codes: Vec<i16> = refused.topics[0]
                    .partitions
                    .iter()
                    .map(|p| p.error_code)
                    .collect();
                assert_eq!(codes, vec![24, 24]);
            }
        }
        for version in 8..=9 {
            let mut response = OffsetFetchResponse::default();
            response.groups = vec![
                group_response("simple".to_string(), Ok(fetched())),
                group_response("".to_string(), Err(E::InvalidGroupId)),
            ];
            encodes(&response, version);
            let first = &response.groups[0];
            assert_eq!(first.group_id.as_str(), "simple");
            assert_eq!(first.topics[0].partitions[0].committed_offset, 25);
            assert_eq!(first.topics[0].partitions[0].committed_leader_epoch, 3);
            assert_eq!(first.topics[0].partitions[1].committed_offset, -1);
            assert_eq!(response.groups[1].error_code, 24);
        }
    }

    #[test]
    fn describe_and_list_answers_fit_every_version() {
        let description = GroupDescription {
            group_id: "g".to_string(),
            state: GroupState::Stable,
            protocol_type: "consumer".to_string(),
            protocol: Some("range".to_string()),
            members: vec![DescribedMember {
                member_id: "m1".to_string(),
                instance_id: Some("i1".to_string()),
                client_id: "c".to_string(),
                client_host: "/127.0.0.1".to_string(),
                metadata: Bytes::from_static(b"meta"),
                assignment: Bytes::from_static(b"p0"),
            }],
        };
        for version in 0..=6 {
            let mut response = DescribeGroupsResponse::default();
            response.groups = vec![
                described_group(version, "g".to_string(), Ok(description.clone())),
                described_group(version, "none".to_string(), Err(E::GroupIdNotFound)),
                described_group(version, "x".to_string(), Err(E::CoordinatorNotAvailable)),
            ];
            encodes(&response, version);
            let [found, missing, closed] = &response.groups[..] else {
                panic!("three groups");
            };
            assert_eq!(found.group_state.as_str(), "Stable");
            assert_eq!(found.protocol_data.as_str(), "range");
            assert_eq!(found.members[0].member_assignment, "p0");
            assert_eq!(found.members[0].group_instance_id.is_some(), version >= 4);
            // An unknown group is Dead; from v6 (KIP-1043) it is also an error.
            assert_eq!(missing.group_state.as_str(), "Dead");
            assert_eq!(missing.group_id.as_str(), "none");
            let expected = if version >= 6 { 69 } else { 0 };
            assert_eq!(missing.error_code, expected);
            assert_eq!(missing.error_message.is_some(), version >= 6);
            assert_eq!((closed.error_code, closed.group_state.as_str()), (15, ""));
        }
        let listing = GroupListing {
            group_id: "g".to_string(),
            protocol_type: "consumer".to_string(),
            state: GroupState::Empty,
        };
        for version in 0..=5 {
            let mut response = ListGroupsResponse::default();
            response.groups = vec![listed_group(version, listing.clone())];
            encodes(&response, version);
            let listed = &response.groups[0];
            assert_eq!(
                listed.group_state.as_str(),
                if version >= 4 { "Empty" } else { "" }
            );
            assert_eq!(
                listed.group_type.as_str(),
                if version >= 5 { "classic" } else { "" }
            );
        }
    }

    #[test]
    fn share_groups_list_with_their_type_from_v5() {
        for version in 0..=5 {
            let share = ShareGroupListing {
                group_id: "s".to_string(),
                state: ShareGroupState::Stable,
            };
            let mut response = ListGroupsResponse::default();
            response.groups = vec![listed_share_group(version, share)];
            encodes(&response, version);
            let listed = &response.groups[0];
            assert_eq!(listed.protocol_type.as_str(), "share");
            let shown = (listed.group_state.as_str(), listed.group_type.as_str());
            let expected = match version {
                5 => ("Stable", "share"),
                4 => ("Stable", ""),
                _ => ("", ""),
            };
            assert_eq!(shown, expected, "v{version}");
        }
    }

    /// Fields a version lacks are not taken from the request (kafka-protocol leaves them at
    /// their defaults, but a hostile client's bytes never reach them either way).
    #[test]
    fn requests_decode_into_domain_requests_by_version() {
        let mut join = JoinGroupRequest::default();
        join.group_id = StrBytes::from_static_str("g").into();
        join.rebalance_timeout_ms = 9_000;
        join.group_instance_id = Some(StrBytes::from_static_str("i1"));
        let v0 = join_request(0, join.clone(), ClientInfo::default());
        assert_eq!(v0.rebalance_timeout_ms, None);
        assert!(!v0.member_id_required);
        assert_eq!(v0.instance_id, None);
        let v5 = join_request(5, join.clone(), ClientInfo::default());
        assert_eq!(v5.rebalance_timeout_ms, Some(9_000));
        assert!(v5.member_id_required);
        assert_eq!(v5.instance_id.as_deref(), Some("i1"));
        join.group_instance_id = Some(StrBytes::from_static_str(""));
        let empty = join_request(5, join, ClientInfo::default());
        assert_eq!(
            empty.instance_id, None,
            "an empty instance id is a dynamic member"
        );

        let mut sync = SyncGroupRequest::default();
        sync.protocol_name = Some(StrBytes::from_static_str("range"));
        sync.group_instance_id = Some(StrBytes::from_static_str("i1"));
        assert_eq!(sync_request(4, sync.clone()).protocol_name, None);
        assert_eq!(sync_request(2, sync.clone()).member.instance_id, None);
        let v5 = sync_request(5, sync);
        assert_eq!(v5.protocol_name.as_deref(), Some("range"));
        assert_eq!(v5.member.instance_id.as_deref(), Some("i1"));

        let mut commit = OffsetCommitRequest::default();
        commit.group_instance_id = Some(StrBytes::from_static_str("i1"));
        let mut topic =
            kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic::default();
        topic.name = StrBytes::from_static_str("t").into();
        let mut partition =
            kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition::default(
            );
        partition.committed_leader_epoch = 4;
        topic.partitions.push(partition);
        commit.topics.push(topic);
        let epoch = |version| {
            commit_request(version, commit.clone()).topics[0].partitions[0]
                .1
                .leader_epoch
        };
        assert_eq!((epoch(5), epoch(6)), (-1, 4));
        assert_eq!(commit_request(6, commit.clone()).member.instance_id, None);
        assert_eq!(
            commit_request(7, commit).member.instance_id.as_deref(),
            Some("i1")
        );
    }
}
