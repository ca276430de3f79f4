//! ListGroups (v0-v5 advertised): a broker lists the groups it coordinates (clients ask every
//! broker and merge); the bootstrap port stands for the whole cluster, so it asks every shard.
//! Classic groups come from each shard's coordinator, share groups from its `shares::members`
//! (type "share", protocol type "share", as Kafka 4.2 lists them, in every version), which
//! after a restart knows the groups some shard keeps share state for (`members::announce`). The states
//! and types filters match without regard to case, as Kafka's; a type Weir does not know
//! (`consumer`, `streams`) matches nothing.

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::codec::{decode_body, CodecError, Request};
use super::dispatch::{later, Peer, Pending};
use super::error_codes as code;
use crate::groups::{self, GroupListing, GroupRequest, GroupResponse};
use crate::security::acl::{Access, Operation};
use crate::shard::mesh::on_shard;
use crate::shard::{Shard, ShardId};
use crate::shares::members::{self, ShareGroupListing};

const CLASSIC: &str = "classic";
const SHARE: &str = "share";

pub fn handle(
    shard: &Rc<Shard>,
    request: &Request,
    peer: &Peer<'_>,
    access: &Access,
) -> Result<Pending, CodecError> {
    let body: ListGroupsRequest = decode_body(request)?;
    let version = request.version;
    let shard = shard.clone();
    let access = access.clone();
    let coordinators = if peer.bootstrap {
        0..shard.count
    } else {
        shard.id.index()..shard.id.index() + 1
    };
    Ok(later(
        request.key,
        version,
        request.correlation_id,
        async move {
            let states: Vec<String> = body.states_filter.iter().map(|s| s.to_string()).collect();
            let types: Vec<String> = body.types_filter.iter().map(|t| t.to_string()).collect();
            let mut response = ListGroupsResponse::default();
            for owner in coordinators {
                if wanted(&types, CLASSIC) {
                    match groups::call(&shard, owner, GroupRequest::List(states.clone())).await {
                        Some(GroupResponse::List(listed)) => response
                            .groups
                            .extend(listed.into_iter().map(|group| listed_group(version, group))),
                        _ => response.error_code = code::COORDINATOR_NOT_AVAILABLE,
                    }
                }
                if wanted(&types, SHARE) {
                    match on_shard(&shard, ShardId(owner), |_| members::listing()).await {
                        Some(listed) => response.groups.extend(
                            listed
                                .into_iter()
                                .filter(|group| wanted(&states, group.state.name()))
                                .map(|group| listed_share_group(version, group)),
                        ),
                        None => response.error_code = code::COORDINATOR_NOT_AVAILABLE,
                    }
                }
            }
            // One id is one group (each side refuses the other's ids); a data dir from before
            // that rule may hold both for one id: it is listed once, as its classic group.
            let mut seen = HashSet::new();
            response
                .groups
                .retain(|group| seen.insert(group.group_id.to_string()));
            // Kafka: Describe on the cluster lists every group, else only those the principal
            // may describe.
            if !access.allows_cluster(Operation::Describe) {
                response
                    .groups
                    .retain(|group| access.allows_group(Operation::Describe, &group.group_id));
            }
            response
        },
    ))
}

/// An empty filter lets everything through; else `value` must be in it, whatever its case.
fn wanted(filter: &[String], value: &str) -> bool {
    filter.is_empty() || filter.iter().any(|f| f.trim().eq_ignore_ascii_case(value))
}

/// One classic group in `version`'s layout: its state from v4, its type from v5.
pub fn listed_group(version: i16, group: GroupListing) -> ListedGroup {
    shaped(
        version,
        group.group_id,
        group.protocol_type,
        group.state.name(),
        CLASSIC,
    )
}

/// One share group in `version`'s layout.
pub fn listed_share_group(version: i16, group: ShareGroupListing) -> ListedGroup {
    let state = group.state.name();
    shaped(version, group.group_id, SHARE.to_string(), state, SHARE)
}

fn shaped(
    version: i16,
    group_id: String,
    protocol_type: String,
    state: &'static str,
    group_type: &'static str,
) -> ListedGroup {
    let mut listed = ListedGroup::default();
    listed.group_id = GroupId(StrBytes::from_string(group_id));
    listed.protocol_type = StrBytes::from_string(protocol_type);
    if version >= 4 {
        listed.group_state = StrBytes::from_static_str(state);
    }
    if version >= 5 {
        listed.group_type = StrBytes::from_static_str(group_type);
    }
    listed
}
