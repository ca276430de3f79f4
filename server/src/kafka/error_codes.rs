//! Kafka error codes Weir answers with, and the functions that map the core's domain errors
//! (partition operations, topic administration, routing, consumer groups, share groups) to them. Pure; used on
//! every shard.

use crate::groups::GroupError;
use crate::partition::PartitionError;
use crate::routing::broker::{ExchangeOutcome, ExchangeProduceError};
use crate::routing::exchange::RoutingErrorKind;
use crate::shard::controller::TopicError;
use crate::shares::members::ShareGroupError;
use crate::shares::offsets::OffsetsError;
use crate::shares::partitions::AckError;
use crate::shares::sessions::SessionError;

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REQUEST: i16 = 42;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const INVALID_CONFIG: i16 = 40;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const NOT_COORDINATOR: i16 = 16;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const FENCED_MEMBER_EPOCH: i16 = 110;
pub const INVALID_RECORD_STATE: i16 = 121;
pub const SHARE_SESSION_NOT_FOUND: i16 = 122;
pub const INVALID_SHARE_SESSION_EPOCH: i16 = 123;
pub const SHARE_SESSION_LIMIT_REACHED: i16 = 133;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
pub const SECURITY_DISABLED: i16 = 54;
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub const ILLEGAL_SASL_STATE: i16 = 34;
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
pub const RESOURCE_NOT_FOUND: i16 = 91;
pub const DUPLICATE_RESOURCE: i16 = 92;
pub const UNACCEPTABLE_CREDENTIAL: i16 = 93;

/// Kafka's name of a code the data path answers with (the metrics' `error` label).
pub fn name(code: i16) -> &'static str {
    match code {
        UNKNOWN_TOPIC_OR_PARTITION => "UNKNOWN_TOPIC_OR_PARTITION",
        TOPIC_AUTHORIZATION_FAILED => "TOPIC_AUTHORIZATION_FAILED",
        NOT_LEADER_OR_FOLLOWER => "NOT_LEADER_OR_FOLLOWER",
        CORRUPT_MESSAGE => "CORRUPT_MESSAGE",
        MESSAGE_TOO_LARGE => "MESSAGE_TOO_LARGE",
        OFFSET_OUT_OF_RANGE => "OFFSET_OUT_OF_RANGE",
        OUT_OF_ORDER_SEQUENCE_NUMBER => "OUT_OF_ORDER_SEQUENCE_NUMBER",
        INVALID_PRODUCER_EPOCH => "INVALID_PRODUCER_EPOCH",
        KAFKA_STORAGE_ERROR => "KAFKA_STORAGE_ERROR",
        _ => "UNKNOWN_SERVER_ERROR",
    }
}

/// The Kafka error code for a partition operation's error (the only place that knows both
/// vocabularies for the data path).
pub fn from_partition_error(error: PartitionError) -> i16 {
    match error {
        PartitionError::UnknownPartition => UNKNOWN_TOPIC_OR_PARTITION,
        // A stale owner view, or a log that is being deleted or a broker that is stopping
        // (`Closed`): the client refreshes its metadata and retries.
        PartitionError::NotOwner | PartitionError::Closed => NOT_LEADER_OR_FOLLOWER,
        PartitionError::CorruptBatch => CORRUPT_MESSAGE,
        PartitionError::BatchTooLarge => MESSAGE_TOO_LARGE,
        PartitionError::OffsetOutOfRange => OFFSET_OUT_OF_RANGE,
        PartitionError::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
        PartitionError::InvalidProducerEpoch => INVALID_PRODUCER_EPOCH,
        PartitionError::Storage => KAFKA_STORAGE_ERROR,
    }
}

/// The error code of an optional partition error: `NONE` when there is none.
pub fn from_partition_result(error: Option<PartitionError>) -> i16 {
    error.map_or(NONE, from_partition_error)
}

pub const POLICY_VIOLATION: i16 = 44;

/// The Kafka error code for a kind of routing refusal.
pub fn from_routing_kind(kind: RoutingErrorKind) -> i16 {
    match kind {
        RoutingErrorKind::InvalidName => INVALID_TOPIC_EXCEPTION,
        RoutingErrorKind::InvalidConfig => INVALID_CONFIG,
        RoutingErrorKind::NotFound => UNKNOWN_TOPIC_OR_PARTITION,
        RoutingErrorKind::AlreadyExists => TOPIC_ALREADY_EXISTS,
        RoutingErrorKind::LimitReached => POLICY_VIOLATION,
        RoutingErrorKind::InvalidRequest => INVALID_REQUEST,
        RoutingErrorKind::CorruptRecords => CORRUPT_MESSAGE,
        RoutingErrorKind::TooManyRecords => MESSAGE_TOO_LARGE,
        RoutingErrorKind::Internal => UNKNOWN_SERVER_ERROR,
        RoutingErrorKind::Storage => KAFKA_STORAGE_ERROR,
    }
}

/// The Kafka error code for a controller refusal.
pub fn from_topic_error(error: &TopicError) -> i16 {
    match error {
        TopicError::UnknownTopic => UNKNOWN_TOPIC_OR_PARTITION,
        TopicError::InvalidName(_) => INVALID_TOPIC_EXCEPTION,
        TopicError::AlreadyExists(_) => TOPIC_ALREADY_EXISTS,
        TopicError::InvalidPartitions(_) => INVALID_PARTITIONS,
        TopicError::InvalidConfig(_) => INVALID_CONFIG,
        TopicError::Routing { kind, .. } => from_routing_kind(*kind),
        TopicError::Storage => KAFKA_STORAGE_ERROR,
    }
}

/// A controller item's outcome as an admin response carries it: error code and message.
pub fn from_topic_result(result: &Result<(), TopicError>) -> (i16, Option<String>) {
    match result {
        Ok(()) => (NONE, None),
        Err(error) => (from_topic_error(error), error.message()),
    }
}

/// The Kafka error code for a produce to an exchange.
pub fn from_exchange_outcome(outcome: ExchangeOutcome) -> i16 {
    match outcome {
        Ok(()) => NONE,
        Err(ExchangeProduceError::Refused(kind)) => from_routing_kind(kind),
        Err(ExchangeProduceError::Partition(error)) => from_partition_error(error),
    }
}

/// The Kafka error code for a group coordinator refusal.
pub fn from_group_error(error: GroupError) -> i16 {
    match error {
        // A closing coordinator, an unreachable owner shard or an offset log that failed: the
        // client looks for the coordinator again and retries.
        GroupError::CoordinatorNotAvailable | GroupError::OffsetsNotDurable => {
            COORDINATOR_NOT_AVAILABLE
        }
        GroupError::InvalidGroupId => INVALID_GROUP_ID,
        GroupError::InvalidSessionTimeout => INVALID_SESSION_TIMEOUT,
        GroupError::InconsistentProtocol => INCONSISTENT_GROUP_PROTOCOL,
        GroupError::UnknownMember => UNKNOWN_MEMBER_ID,
        GroupError::IllegalGeneration => ILLEGAL_GENERATION,
        GroupError::RebalanceInProgress => REBALANCE_IN_PROGRESS,
        GroupError::MemberIdRequired => MEMBER_ID_REQUIRED,
        GroupError::FencedInstanceId => FENCED_INSTANCE_ID,
        GroupError::OffsetMetadataTooLarge => OFFSET_METADATA_TOO_LARGE,
        GroupError::UnknownTopicOrPartition => UNKNOWN_TOPIC_OR_PARTITION,
        GroupError::GroupIdNotFound | GroupError::NotClassicGroup => GROUP_ID_NOT_FOUND,
        GroupError::GroupMaxSizeReached => GROUP_MAX_SIZE_REACHED,
    }
}

/// The error code of a group result: `NONE` when it succeeded.
pub fn from_group_result<T>(result: &Result<T, GroupError>) -> i16 {
    match result {
        Ok(_) => NONE,
        Err(error) => from_group_error(*error),
    }
}

/// The Kafka error code for a share group coordinator's refusal.
pub fn from_share_group_error(error: ShareGroupError) -> i16 {
    match error {
        ShareGroupError::UnknownMember => UNKNOWN_MEMBER_ID,
        ShareGroupError::FencedEpoch => FENCED_MEMBER_EPOCH,
        ShareGroupError::GroupFull => GROUP_MAX_SIZE_REACHED,
        ShareGroupError::InvalidRequest(_) => INVALID_REQUEST,
    }
}

/// The Kafka error code for a refused share-group offsets request.
pub fn from_offsets_error(error: OffsetsError) -> i16 {
    match error {
        OffsetsError::NonEmptyGroup => NON_EMPTY_GROUP,
        OffsetsError::NotShareGroup => GROUP_ID_NOT_FOUND,
        OffsetsError::CoordinatorNotAvailable => COORDINATOR_NOT_AVAILABLE,
    }
}

/// The Kafka error code for a share session's refusal.
pub fn from_session_error(error: SessionError) -> i16 {
    match error {
        SessionError::NotFound => SHARE_SESSION_NOT_FOUND,
        SessionError::InvalidEpoch => INVALID_SHARE_SESSION_EPOCH,
        SessionError::LimitReached => SHARE_SESSION_LIMIT_REACHED,
    }
}

/// The Kafka error code for a partition's refused acknowledgements.
pub fn from_ack_error(error: AckError) -> i16 {
    match error {
        AckError::InvalidRecordState => INVALID_RECORD_STATE,
        AckError::InvalidRequest => INVALID_REQUEST,
        AckError::Partition(error) => from_partition_error(error),
        AckError::Unsupported => INVALID_REQUEST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes clients have always seen, pinned: a change here is a change in behaviour.
    #[test]
    fn domain_errors_keep_their_kafka_codes() {
        use PartitionError as P;
        let partition = [
            (P::UnknownPartition, 3),
            (P::NotOwner, 6),
            (P::Closed, 6),
            (P::CorruptBatch, 2),
            (P::BatchTooLarge, 10),
            (P::OffsetOutOfRange, 1),
            (P::OutOfOrderSequence, 45),
            (P::InvalidProducerEpoch, 47),
            (P::Storage, 56),
        ];
        for (error, code) in partition {
            assert_eq!(from_partition_error(error), code, "{error:?}");
        }
        use RoutingErrorKind as R;
        let routing = [
            (R::InvalidName, 17),
            (R::InvalidConfig, 40),
            (R::NotFound, 3),
            (R::AlreadyExists, 36),
            (R::LimitReached, 44),
            (R::InvalidRequest, 42),
            (R::CorruptRecords, 2),
            (R::TooManyRecords, 10),
            (R::Internal, -1),
            (R::Storage, 56),
        ];
        for (kind, code) in routing {
            assert_eq!(from_routing_kind(kind), code, "{kind:?}");
        }
        let topic = [
            (TopicError::UnknownTopic, 3),
            (TopicError::InvalidName(String::new()), 17),
            (TopicError::AlreadyExists(String::new()), 36),
            (TopicError::InvalidPartitions(String::new()), 37),
            (TopicError::InvalidConfig(String::new()), 40),
            (TopicError::Storage, 56),
        ];
        for (error, code) in topic {
            assert_eq!(from_topic_error(&error), code, "{error:?}");
        }
    }

    /// Group refusals keep the codes the coordinator answered with before it was protocol-free,
    /// checked against kafka-protocol's own table of codes.
    #[test]
    fn group_errors_keep_their_kafka_codes() {
        use kafka_protocol::error::ResponseError as K;
        use GroupError as G;
        let group = [
            (G::CoordinatorNotAvailable, K::CoordinatorNotAvailable),
            (G::OffsetsNotDurable, K::CoordinatorNotAvailable),
            (G::InvalidGroupId, K::InvalidGroupId),
            (G::InvalidSessionTimeout, K::InvalidSessionTimeout),
            (G::InconsistentProtocol, K::InconsistentGroupProtocol),
            (G::UnknownMember, K::UnknownMemberId),
            (G::IllegalGeneration, K::IllegalGeneration),
            (G::RebalanceInProgress, K::RebalanceInProgress),
            (G::MemberIdRequired, K::MemberIdRequired),
            (G::FencedInstanceId, K::FencedInstanceId),
            (G::OffsetMetadataTooLarge, K::OffsetMetadataTooLarge),
            (G::UnknownTopicOrPartition, K::UnknownTopicOrPartition),
            (G::GroupIdNotFound, K::GroupIdNotFound),
            (G::GroupMaxSizeReached, K::GroupMaxSizeReached),
        ];
        for (error, kafka) in group {
            assert_eq!(from_group_error(error), kafka.code(), "{error:?}");
        }
        assert_eq!(from_group_result(&Ok::<(), GroupError>(())), NONE);
        assert_eq!(from_group_result::<()>(&Err(G::UnknownMember)), 25);
    }
}
