//! ListGroups (v0-v4 advertised): a broker lists the groups it coordinates (clients ask every
//! broker and merge); the bootstrap port stands for the whole cluster, so it asks every shard.

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::codec::{decode_body, CodecError, Request};
use super::dispatch::{later, Peer, Pending};
use super::error_codes as code;
use crate::groups::{self, GroupListing, GroupRequest, GroupResponse};
use crate::shard::Shard;

pub fn handle(
    shard: &Rc<Shard>,
    request: &Request,
    peer: &Peer<'_>,
) -> Result<Pending, CodecError> {
    let body: ListGroupsRequest = decode_body(request)?;
    let version = request.version;
    let shard = shard.clone();
    let owners = if peer.bootstrap {
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
            let mut response = ListGroupsResponse::default();
            for owner in owners {
                match groups::call(&shard, owner, GroupRequest::List(states.clone())).await {
                    Some(GroupResponse::List(listed)) => response
                        .groups
                        .extend(listed.into_iter().map(|group| listed_group(version, group))),
                    _ => response.error_code = code::COORDINATOR_NOT_AVAILABLE,
                }
            }
            response
        },
    ))
}

/// One group in `version`'s layout: its state from v4, its type (always classic) from v5.
pub fn listed_group(version: i16, group: GroupListing) -> ListedGroup {
    let mut listed = ListedGroup::default();
    listed.group_id = GroupId(StrBytes::from_string(group.group_id));
    listed.protocol_type = StrBytes::from_string(group.protocol_type);
    if version >= 4 {
        listed.group_state = StrBytes::from_static_str(group.state.name());
    }
    if version >= 5 {
        listed.group_type = StrBytes::from_static_str("classic");
    }
    listed
}
