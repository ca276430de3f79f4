//! A share group's dead-letter topic (KIP-1191's `errors.deadletterqueue.topic.name`): a record a
//! member rejects, or one that reaches the delivery count limit, is archived in its share
//! partition and, when a dead-letter topic is set, copied there with headers saying where it came
//! from and why. Set broker-wide (`--set errors.deadletterqueue.topic.name=dlq.NAME`; Kafka: per
//! group); the name must start with `errors.deadletterqueue.topic.name.prefix` (`dlq.`), as
//! KIP-1191 requires, and the topic must exist (a copy to a missing one is logged and dropped).
//!
//! At most once, as AMQP dead-lettering: the copy is written after the archive is recorded,
//! and a crash between the two loses it. Records of an AMQP queue's log are dead-lettered by the
//! queue itself (its `x-dead-letter-exchange`), not here.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::partition::{self, PendingAppend};
use crate::routing::decompress::decompress_bounded;
use crate::shard::Shard;
use weir_engine::batch as header;

/// Bytes read to find one record (a batch holding it is at most this large in practice).
const READ_BYTES: usize = 1 << 20;

/// A record archived without acceptance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// `rejected` or `delivery_limit`.
    pub reason: &'static str,
}

/// Copies `dead` records of `group` to the dead-letter topic in the background, if one is set.
pub fn send(shard: &Rc<Shard>, group: &str, dead: Vec<DeadRecord>) {
    let Some(target) = shard.config.shares.dead_letter_topic.clone() else {
        return;
    };
    if dead.is_empty() {
        return;
    }
    let (shard, group) = (shard.clone(), group.to_string());
    glommio::spawn_local(async move {
        for record in dead {
            if let Err(error) = copy(&shard, &group, &target, &record).await {
                tracing::warn!(group, topic = record.topic, offset = record.offset, %error,
                    "share group dead letter not written");
            }
        }
    })
    .detach();
}

async fn copy(shard: &Shard, group: &str, target: &str, dead: &DeadRecord) -> anyhow::Result<()> {
    let mut record = find(shard, dead).await?;
    let headers = [
        ("__dlq.errors.topic", dead.topic.clone()),
        ("__dlq.errors.partition", dead.partition.to_string()),
        ("__dlq.errors.offset", dead.offset.to_string()),
        ("__dlq.errors.group", group.to_string()),
        ("__dlq.errors.reason", dead.reason.to_string()),
    ];
    for (name, value) in headers {
        record.headers.insert(name.into(), Some(Bytes::from(value)));
    }
    let batch = encode(record)?;
    let metadata = shard.metadata();
    let partitions = metadata
        .topics
        .get(target)
        .map(|topic| topic.partitions.len() as i32)
        .filter(|&n| n > 0)
        .ok_or_else(|| anyhow::anyhow!("dead-letter topic {target} does not exist"))?;
    let at = dead.partition % partitions;
    let pending = PendingAppend::issue(
        shard,
        &metadata,
        target,
        at,
        Some(crate::partition::owned_records(batch)),
        false,
    )
    .await;
    match pending.finish(false).await.error {
        None => Ok(()),
        Some(error) => Err(anyhow::anyhow!("appending to {target}: {error}")),
    }
}

/// The record at `dead.offset`, read back from its log.
async fn find(shard: &Shard, dead: &DeadRecord) -> anyhow::Result<Record> {
    let read = partition::read(shard, &dead.topic, dead.partition, dead.offset, READ_BYTES).await;
    if let Some(error) = read.error {
        anyhow::bail!("reading it back: {error}");
    }
    let mut bytes = BytesMut::new();
    for chunk in &read.payload {
        bytes.extend_from_slice(chunk.as_slice());
    }
    let mut bytes = bytes.freeze();
    while let Some(found) = header::Header::new(&bytes) {
        let length = header::LOG_OVERHEAD_BYTES + found.batch_length().max(0) as usize;
        if length > bytes.len() {
            break;
        }
        let mut batch = bytes.split_to(length);
        let decoded = RecordBatchDecoder::decode_with_custom_compression(
            &mut batch,
            Some(decompress_bounded),
        )
        .map_err(|error| anyhow::anyhow!("decoding: {error:#}"))?;
        if let Some(record) = decoded
            .records
            .into_iter()
            .find(|r| r.offset == dead.offset)
        {
            return Ok(record);
        }
    }
    anyhow::bail!("offset {} not found in its log", dead.offset)
}

/// One record as a batch of its own, with the source's producer state cleared.
fn encode(mut record: Record) -> anyhow::Result<Bytes> {
    record.transactional = false;
    record.control = false;
    record.partition_leader_epoch = header::NO_PARTITION_LEADER_EPOCH;
    record.producer_id = header::NO_PRODUCER_ID;
    record.producer_epoch = header::NO_PRODUCER_EPOCH;
    record.sequence = -1;
    record.offset = 0;
    record.timestamp_type = TimestampType::Creation;
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut out, std::iter::once(&record), &options)
        .map_err(|error| anyhow::anyhow!("encoding: {error:#}"))?;
    Ok(out.freeze())
}
