//! Partition operations as the OWNING shard runs them: append, read, wait for data, list offsets.
//! Called directly when a request reaches the owner, or from the shard's inbox when another shard
//! forwards it. Results carry Kafka error codes (mapped once, in `error_codes`).
//!
//! `append` is synchronous so that offsets follow arrival order; only waiting is async.

use std::time::Duration;

use bytes::BytesMut;
use weir_engine::{Chunk, Log};

use super::error_codes::{self as code, from_log_error};
use crate::shard::mesh::{FetchOutcome, OffsetOutcome, ProduceOutcome};
use crate::shard::Shard;

/// A partition this shard should own but has no log for: unknown topic or a stale leader view.
fn missing(shard: &Shard, topic: &str, partition: i32) -> i16 {
    match shard.metadata().owner(topic, partition) {
        Some(_) => code::NOT_LEADER_OR_FOLLOWER,
        None => code::UNKNOWN_TOPIC_OR_PARTITION,
    }
}

/// Result of the synchronous part of a produce: the log and the offsets it assigned.
pub type Appended = Result<(Log, i64, i64, i64), i16>;

/// Splits `records` into whole RecordBatch frames (8-byte base offset, 4-byte length, body)
/// without looking inside them.
fn batch_bounds(records: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut bounds = Vec::with_capacity(1);
    let mut at = 0;
    while at < records.len() {
        let length = weir_engine::batch::batch_length_field(&records[at..])?;
        let end = at
            .checked_add(weir_engine::batch::LOG_OVERHEAD_BYTES)?
            .checked_add(usize::try_from(length).ok()?)?;
        if end > records.len() {
            return None;
        }
        bounds.push((at, end));
        at = end;
    }
    if bounds.is_empty() {
        None
    } else {
        Some(bounds)
    }
}

/// Appends the batches of one partition of a produce request. Produce v3+ carries one batch per
/// partition; several are accepted and appended in order.
pub fn append(shard: &Shard, topic: &str, partition: i32, records: Option<&[u8]>) -> Appended {
    let log = shard
        .log(topic, partition)
        .ok_or_else(|| missing(shard, topic, partition))?;
    let records = records.ok_or(code::CORRUPT_MESSAGE)?;
    let bounds = batch_bounds(records).ok_or(code::CORRUPT_MESSAGE)?;
    if bounds.len() > 1 {
        // All or nothing, as in Kafka: check every batch before appending the first. (A single
        // batch is checked once, by the engine.)
        for (start, end) in &bounds {
            weir_engine::batch::validate(&records[*start..*end])
                .map_err(|error| from_log_error(&error.into()))?;
        }
    }
    let mut first = None;
    let mut last = (0, 0);
    for (start, end) in bounds {
        // One copy per batch (not per record): the engine writes baseOffset in place.
        let appended = log
            .append(BytesMut::from(&records[start..end]))
            .map_err(|error| from_log_error(&error))?;
        first.get_or_insert(appended.base_offset);
        last = (appended.last_offset, appended.log_start_offset);
    }
    Ok((log, first.unwrap_or(last.0), last.0, last.1))
}

/// Waits as `acks` asks (0 and 1: written; -1: durable) and builds the outcome.
pub async fn finish_append(appended: Appended, acks: i16) -> ProduceOutcome {
    let (log, base_offset, last_offset, log_start_offset) = match appended {
        Ok(done) => done,
        Err(error_code) => {
            return ProduceOutcome {
                error_code,
                base_offset: -1,
                log_start_offset: -1,
            }
        }
    };
    let waited = if acks == -1 {
        log.wait_durable(last_offset).await
    } else {
        log.wait_written(last_offset).await
    };
    let error_code = match waited {
        Ok(()) => code::NONE,
        Err(error) => from_log_error(&error),
    };
    ProduceOutcome {
        error_code,
        base_offset,
        log_start_offset,
    }
}

pub async fn read(
    shard: &Shard,
    topic: &str,
    partition: i32,
    offset: i64,
    max_bytes: usize,
) -> FetchOutcome<Chunk> {
    let empty = |error_code, high_watermark, log_start_offset| FetchOutcome {
        error_code,
        high_watermark,
        log_start_offset,
        payload: Vec::new(),
    };
    let Some(log) = shard.log(topic, partition) else {
        return empty(missing(shard, topic, partition), -1, -1);
    };
    if offset == log.high_watermark() {
        return empty(code::NONE, offset, log.log_start_offset());
    }
    match log.read(offset, max_bytes).await {
        Ok(read) => FetchOutcome {
            error_code: code::NONE,
            high_watermark: read.high_watermark,
            log_start_offset: read.log_start_offset,
            payload: read.chunks,
        },
        Err(error) => empty(
            from_log_error(&error),
            log.high_watermark(),
            log.log_start_offset(),
        ),
    }
}

/// Returns when the partition has data past `offset`, after `wait`, or at once if it is unknown.
pub async fn wait_for_data(
    shard: &Shard,
    topic: &str,
    partition: i32,
    offset: i64,
    wait: Duration,
) {
    let Some(log) = shard.log(topic, partition) else {
        return;
    };
    futures_lite::future::or(log.wait_for_data(offset), glommio::timer::sleep(wait)).await;
    let _ = shard;
}

/// ListOffsets for one partition: -2 earliest, -1 latest, -3 (max timestamp) answered as latest,
/// otherwise the first offset with a timestamp at or after the one given.
pub async fn list_offset(
    shard: &Shard,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> OffsetOutcome {
    let Some(log) = shard.log(topic, partition) else {
        return OffsetOutcome {
            error_code: missing(shard, topic, partition),
            offset: -1,
            timestamp: -1,
        };
    };
    let found = |offset| OffsetOutcome {
        error_code: code::NONE,
        offset,
        timestamp: -1,
    };
    match timestamp {
        -2 => found(log.log_start_offset()),
        -1 | -3 => found(log.high_watermark()),
        _ => match log.offset_for_timestamp(timestamp).await {
            Ok(Some((offset, timestamp))) => OffsetOutcome {
                error_code: code::NONE,
                offset,
                timestamp,
            },
            Ok(None) => OffsetOutcome {
                error_code: code::NONE,
                offset: -1,
                timestamp: -1,
            },
            Err(error) => OffsetOutcome {
                error_code: from_log_error(&error),
                offset: -1,
                timestamp: -1,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body_bytes: usize) -> Vec<u8> {
        let mut out = vec![0u8; 8];
        out.extend_from_slice(&(body_bytes as i32).to_be_bytes());
        out.extend(std::iter::repeat_n(7u8, body_bytes));
        out
    }

    #[test]
    fn batch_framing() {
        let check =
            |bytes: &[u8], want: Option<Vec<(usize, usize)>>| assert_eq!(batch_bounds(bytes), want);
        check(&[], None);
        check(&frame(49), Some(vec![(0, 61)]));
        let mut two = frame(49);
        two.extend(frame(60));
        check(&two, Some(vec![(0, 61), (61, 133)]));
        check(&frame(49)[..60], None);
        let mut negative = frame(0);
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        check(&negative, None);
        check(&[0u8; 5], None);
    }
}
