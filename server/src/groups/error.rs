//! `GroupError`: why the group coordinator refuses a request, in the core's own words.
//!
//! Pure data, used on every shard. Only the Kafka layer knows the Kafka error code of each
//! (`kafka/error_codes.rs`, `from_group_error`): a protocol that speaks groups differently maps
//! these its own way.

/// A refusal by the group coordinator; each names the rule that refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The coordinator is closing, or the owner shard cannot be reached: the client looks for the
    /// coordinator again and retries.
    #[error("the group coordinator is not available")]
    CoordinatorNotAvailable,
    /// Committed offsets could not be made durable (the offset log failed); clients retry.
    #[error("committed offsets could not be made durable")]
    OffsetsNotDurable,
    /// An empty group id, or one longer than the offset log can store.
    #[error("invalid group id")]
    InvalidGroupId,
    /// A session timeout outside the configured bounds.
    #[error("session timeout outside the allowed range")]
    InvalidSessionTimeout,
    /// No protocol type or protocols, or none in common with the group's other members, or a
    /// SyncGroup naming another protocol than the group's.
    #[error("protocol type or protocols inconsistent with the group")]
    InconsistentProtocol,
    /// The member id is not (or no longer) a member of the group.
    #[error("unknown member id")]
    UnknownMember,
    /// The request names another generation than the group's current one.
    #[error("illegal generation")]
    IllegalGeneration,
    /// The group is rebalancing: the member must rejoin.
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    /// A new dynamic member got its id (KIP-394) and must join again with it.
    #[error("member id required")]
    MemberIdRequired,
    /// The static member (group.instance.id) has a newer incarnation: this one is a zombie.
    #[error("fenced static member")]
    FencedInstanceId,
    /// Commit metadata longer than `GroupConfig::offset_metadata_bytes_max`.
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    /// A commit for a topic name the offset log cannot store, or a negative partition.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// The group is not known on this coordinator (no members, no committed offsets).
    #[error("group not found")]
    GroupIdNotFound,
    /// The group id is a share group's (`shares::members`): one id is one group, and Kafka's
    /// classic APIs refuse another type's group as not found.
    #[error("the group is not a classic group")]
    NotClassicGroup,
    /// The group holds `GroupConfig::group_members_max` members and handed-out ids already.
    #[error("the group is full")]
    GroupMaxSizeReached,
}
