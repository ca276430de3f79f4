//! Request dispatch: parse the header, decode the body, route to one handler per API.
//!
//! Runs on the connection's shard. Each request is handled in two phases:
//! - `dispatch` (awaited by the reader, one request at a time): decodes, and does the work whose
//!   ORDER matters, i.e. produce appends (or sending them to the owner shard, in order);
//! - the returned `Pending` future (awaited by the writer, one at a time, in request order):
//!   everything else, and the encoded answer (`None` = no answer, for acks=0).
//!
//! So requests of a connection take effect and are answered in order, as in Kafka, while the
//! reader keeps reading ahead.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Encodable, HeaderVersion};

use super::codec::{decode_body, encode_response, parse_request, CodecError, Parsed, Response};
use super::{
    acls, admin_topics, alter_share_group_offsets, api_versions, configs,
    delete_share_group_offsets, describe_cluster, describe_share_group_offsets, fetch,
    find_coordinator, group_apis, init_producer_id, list_offsets, metadata,
    offset_for_leader_epoch, produce, sasl, scram_credentials, share_acknowledge, share_fetch,
    share_group_describe, share_group_heartbeat,
};
use crate::security::acl::Access;
use crate::security::Session;
use crate::shard::Shard;

pub type Pending = Pin<Box<dyn Future<Output = Result<Option<Response>, CodecError>>>>;

/// A completion that computes a typed response and encodes it.
pub fn later<T, F>(key: ApiKey, version: i16, correlation_id: i32, body: F) -> Pending
where
    T: Encodable + HeaderVersion + 'static,
    F: Future<Output = T> + 'static,
{
    Box::pin(async move {
        let body = body.await;
        encode_response(key, version, correlation_id, &body)
            .map(|bytes| Some(Response::single(bytes)))
    })
}

/// Decodes `$request` as `$type` and answers it later with `$handler(shard, version, body)`.
macro_rules! answer {
    ($shard:expr, $request:expr, $type:ty, $handler:path) => {{
        let body: $type = decode_body(&$request)?;
        let shard = $shard.clone();
        let version = $request.version;
        later($request.key, version, $request.correlation_id, async move {
            $handler(&shard, version, body).await
        })
    }};
    // A handler that also takes something of the connection's (a `Copy` value).
    ($shard:expr, $request:expr, $type:ty, $handler:path, $extra:expr) => {{
        let body: $type = decode_body(&$request)?;
        let shard = $shard.clone();
        let version = $request.version;
        let extra = $extra;
        later($request.key, version, $request.correlation_id, async move {
            $handler(&shard, version, body, extra).await
        })
    }};
}

/// As `answer!`, for handlers that check ACLs: `$handler(shard, version, body, access)`.
macro_rules! answer_as {
    ($shard:expr, $request:expr, $type:ty, $handler:path, $access:expr) => {{
        let body: $type = decode_body(&$request)?;
        let shard = $shard.clone();
        let version = $request.version;
        let access = $access.clone();
        later($request.key, version, $request.correlation_id, async move {
            $handler(&shard, version, body, access).await
        })
    }};
    // And something of the connection's first (a `Copy` value).
    ($shard:expr, $request:expr, $type:ty, $handler:path, $extra:expr, $access:expr) => {{
        let body: $type = decode_body(&$request)?;
        let shard = $shard.clone();
        let version = $request.version;
        let (extra, access) = ($extra, $access.clone());
        later($request.key, version, $request.correlation_id, async move {
            $handler(&shard, version, body, extra, access).await
        })
    }};
}

/// Who is on the other end of a connection.
pub struct Peer<'a> {
    /// As Kafka shows it (`/127.0.0.1`), for DescribeGroups.
    pub client_host: &'a str,
    /// Connected to the shared bootstrap port rather than a shard's own broker port.
    pub bootstrap: bool,
    /// The Kafka listener the connection came in through (an index into `config.listeners`):
    /// Metadata and FindCoordinator advertise its ports.
    pub listener: usize,
    /// Who the connection acts for (`User:ANONYMOUS` until it authenticates).
    pub session: &'a Rc<Session>,
    /// The listener requires SASL: until the session authenticates, only ApiVersions,
    /// SaslHandshake and SaslAuthenticate are served.
    pub sasl: bool,
}

/// Whether `key` may be sent on `peer`'s connection now.
fn allowed(key: ApiKey, peer: &Peer<'_>) -> bool {
    !peer.sasl
        || peer.session.is_authenticated()
        || matches!(
            key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        )
}

#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
pub async fn dispatch(
    shard: &Rc<Shard>,
    frame: Bytes,
    peer: &Peer<'_>,
) -> Result<Pending, CodecError> {
    use kafka_protocol::messages as m;
    if peer.session.is_unframed() {
        return Ok(sasl::unframed_token(shard, &frame, peer));
    }
    let request = match parse_request(frame)? {
        Parsed::UnsupportedApiVersions { correlation_id } => {
            let bytes = api_versions::unsupported(correlation_id)?;
            return Ok(Box::pin(async move { Ok(Some(Response::single(bytes))) }));
        }
        Parsed::Request(request) => request,
    };
    if !allowed(request.key, peer) {
        return Err(CodecError::Unauthenticated(request.key));
    }
    // What this request may do: one branch when the authorizer is off (the default).
    let access = Access::new(
        &shard.config.authorizer,
        shard.metadata(),
        peer.session,
        peer.client_host,
    );
    let pending = match request.key {
        ApiKey::SaslHandshake => sasl::handshake(&request, peer)?,
        ApiKey::SaslAuthenticate => sasl::authenticate(shard, &request, peer)?,
        ApiKey::DescribeUserScramCredentials => answer_as!(
            shard,
            request,
            m::DescribeUserScramCredentialsRequest,
            scram_credentials::describe,
            access
        ),
        ApiKey::AlterUserScramCredentials => answer_as!(
            shard,
            request,
            m::AlterUserScramCredentialsRequest,
            scram_credentials::alter,
            access
        ),
        ApiKey::Produce => produce::dispatch(shard, request, &access).await?,
        ApiKey::Fetch => {
            let body: m::FetchRequest = decode_body(&request)?;
            let shard = shard.clone();
            Box::pin(async move {
                fetch::handle(
                    &shard,
                    request.version,
                    request.correlation_id,
                    body,
                    access,
                )
                .await
                .map(Some)
            })
        }
        ApiKey::ApiVersions => answer!(shard, request, m::ApiVersionsRequest, api_versions::handle),
        ApiKey::Metadata => {
            answer_as!(
                shard,
                request,
                m::MetadataRequest,
                metadata::handle,
                peer.listener,
                access
            )
        }
        ApiKey::ListOffsets => answer_as!(
            shard,
            request,
            m::ListOffsetsRequest,
            list_offsets::handle,
            access
        ),
        ApiKey::CreateTopics => answer_as!(
            shard,
            request,
            m::CreateTopicsRequest,
            admin_topics::create_topics,
            access
        ),
        ApiKey::DeleteTopics => answer_as!(
            shard,
            request,
            m::DeleteTopicsRequest,
            admin_topics::delete_topics,
            access
        ),
        ApiKey::CreatePartitions => answer_as!(
            shard,
            request,
            m::CreatePartitionsRequest,
            admin_topics::create_partitions,
            access
        ),
        ApiKey::DescribeConfigs => {
            answer_as!(
                shard,
                request,
                m::DescribeConfigsRequest,
                configs::describe,
                access
            )
        }
        ApiKey::AlterConfigs => {
            answer_as!(
                shard,
                request,
                m::AlterConfigsRequest,
                configs::alter,
                access
            )
        }
        ApiKey::IncrementalAlterConfigs => answer_as!(
            shard,
            request,
            m::IncrementalAlterConfigsRequest,
            configs::incremental_alter,
            access
        ),
        ApiKey::InitProducerId => answer_as!(
            shard,
            request,
            m::InitProducerIdRequest,
            init_producer_id::handle,
            access
        ),
        ApiKey::FindCoordinator => answer_as!(
            shard,
            request,
            m::FindCoordinatorRequest,
            find_coordinator::handle,
            peer.listener,
            access
        ),
        ApiKey::OffsetForLeaderEpoch => answer_as!(
            shard,
            request,
            m::OffsetForLeaderEpochRequest,
            offset_for_leader_epoch::handle,
            access
        ),
        ApiKey::DescribeCluster => answer_as!(
            shard,
            request,
            m::DescribeClusterRequest,
            describe_cluster::handle,
            peer.listener,
            access
        ),
        ApiKey::ShareGroupHeartbeat => {
            share_group_heartbeat::dispatch(shard, &request, peer, &access)?
        }
        ApiKey::ShareGroupDescribe => answer_as!(
            shard,
            request,
            m::ShareGroupDescribeRequest,
            share_group_describe::handle,
            access
        ),
        ApiKey::DescribeShareGroupOffsets => answer_as!(
            shard,
            request,
            m::DescribeShareGroupOffsetsRequest,
            describe_share_group_offsets::handle,
            access
        ),
        ApiKey::AlterShareGroupOffsets => answer_as!(
            shard,
            request,
            m::AlterShareGroupOffsetsRequest,
            alter_share_group_offsets::handle,
            access
        ),
        ApiKey::DeleteShareGroupOffsets => answer_as!(
            shard,
            request,
            m::DeleteShareGroupOffsetsRequest,
            delete_share_group_offsets::handle,
            access
        ),
        ApiKey::ShareFetch => answer_as!(
            shard,
            request,
            m::ShareFetchRequest,
            share_fetch::handle,
            access
        ),
        ApiKey::ShareAcknowledge => answer_as!(
            shard,
            request,
            m::ShareAcknowledgeRequest,
            share_acknowledge::handle,
            access
        ),
        ApiKey::DescribeAcls => {
            answer_as!(
                shard,
                request,
                m::DescribeAclsRequest,
                acls::describe,
                access
            )
        }
        ApiKey::CreateAcls => {
            answer_as!(shard, request, m::CreateAclsRequest, acls::create, access)
        }
        ApiKey::DeleteAcls => {
            answer_as!(shard, request, m::DeleteAclsRequest, acls::delete, access)
        }
        ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::DescribeGroups
        | ApiKey::ListGroups => group_apis::dispatch(shard, request, peer, &access)?,
        // parse_request only lets through the keys of codec::SUPPORTED.
        other => {
            return Err(CodecError::UnsupportedVersion {
                key: other,
                version: request.version,
            })
        }
    };
    Ok(pending)
}
