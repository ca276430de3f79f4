//! Kafka error codes Weir answers with, and the one function that maps engine errors to them.
//! Pure; used on every shard.

use weir_engine::batch::BatchError;
use weir_engine::LogError;

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

/// The Kafka error code for an engine error (the only place that knows both vocabularies).
pub fn from_log_error(error: &LogError) -> i16 {
    match error {
        LogError::InvalidBatch(BatchError::Crc { .. }) => CORRUPT_MESSAGE,
        LogError::InvalidBatch(_) => CORRUPT_MESSAGE,
        LogError::BatchTooLarge { .. } => MESSAGE_TOO_LARGE,
        LogError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        LogError::OutOfOrderSequence { .. } => OUT_OF_ORDER_SEQUENCE_NUMBER,
        LogError::InvalidProducerEpoch { .. } => INVALID_PRODUCER_EPOCH,
        LogError::Corrupt { .. } | LogError::StorageFull | LogError::Io { .. } => {
            KAFKA_STORAGE_ERROR
        }
        // A closed log is being deleted or the broker is stopping: the client refreshes metadata.
        LogError::Closed => NOT_LEADER_OR_FOLLOWER,
        #[allow(unreachable_patterns)]
        _ => UNKNOWN_SERVER_ERROR,
    }
}
