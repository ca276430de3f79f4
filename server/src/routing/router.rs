//! The exchange produce path, minus the transport: the `records` of one produce to an exchange
//! become batches addressed to destination partitions, ready to be sent to their owning shards.
//!
//! Runs on the shard that received the produce request, with that shard's table copy and its own
//! [`Partitioner`]; pure apart from the partitioner's round-robin counters (shard-local).
//!
//! Two ways through, chosen per request:
//! - **whole batches** when every reachable binding ignores keys and headers
//!   (`RoutingTable::key_independent_route`) and a destination has one partition: the produced
//!   batches go there as they are, records not decoded. Only the producer fields of the header
//!   (producer id, epoch, base sequence, transactional bit) are reset and the CRC recomputed over
//!   the unchanged record bytes, after the original CRC was checked: a destination partition
//!   receives routed batches from many producers through one router, so the producer's
//!   sequence numbers for the exchange mean nothing there.
//! - **regrouped records** otherwise: `records::split_records` scans the records in place (or
//!   decodes them, for compressed batches), assigns each record its topics
//!   (`RoutingTable::route_with`, memoized per distinct key) and partition (murmur2 of the key,
//!   round-robin without one) and builds one batch per destination partition.
//!
//! A destination topic that `partition_count` does not know (deleted, or never created) takes no
//! records; if it was a record's only destination the record counts as unroutable.
//! A produce to an exchange is at-least-once: an exchange has no log, so a producer's retry is
//! routed again (the destination partitions cannot tell it from a new record).

use bytes::{Bytes, BytesMut};
use weir_engine::batch::{self, attributes};

use super::exchange::{RoutingError, RoutingErrorKind};
use super::partitioner::Partitioner;
use super::records::{self, RecordsError, Reuse};
use super::table::{RouteScratch, RoutingTable};

/// A destination partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

/// What one produce to an exchange became.
#[derive(Debug, Default)]
pub struct RoutedProduce {
    /// Batches per destination partition, in `TopicPartition` order. The same partition may
    /// appear once; its bytes may hold several batches.
    pub batches: Vec<(TopicPartition, Bytes)>,
    /// Records that reached at least one destination.
    pub routed_records: u64,
    /// Records that reached none: counted by the caller and dropped.
    pub unroutable_records: u64,
    /// True if records were decoded (false: whole batches were forwarded).
    pub decoded: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error(transparent)]
    Records(#[from] RecordsError),
}

impl RouteError {
    pub fn kind(&self) -> RoutingErrorKind {
        match self {
            RouteError::Routing(error) => error.kind(),
            RouteError::Records(error) => error.kind(),
        }
    }
}

/// Routes the `records` of one produce to `exchange`. `partition_count` tells how many partitions
/// a destination topic has (`None`: it does not exist).
pub fn route_produce(
    table: &RoutingTable,
    exchange: &str,
    records: &Bytes,
    partition_count: impl Fn(&str) -> Option<u32>,
    partitioner: &mut Partitioner,
) -> Result<RoutedProduce, RouteError> {
    if !table.is_exchange(exchange) {
        return Err(RoutingError::UnknownExchange {
            name: exchange.to_string(),
        }
        .into());
    }
    if let Some(topics) = table.key_independent_route(exchange) {
        let known: Vec<(&str, u32)> = topics
            .iter()
            .filter_map(|topic| partition_count(topic).map(|count| (*topic, count)))
            .collect();
        if known.iter().all(|(_, count)| *count == 1) {
            return forward_whole(records, &known);
        }
    }
    let mut scratch = RouteScratch::default();
    let mut counts: Vec<(&str, Option<u32>)> = Vec::new();
    // Destinations borrow topic names from the table: no allocation per routed record.
    let split = records::split_records(
        records,
        |key, headers, destinations: &mut Vec<(&str, u32)>| {
            // The exchange was checked above and the table does not change during this call.
            // A record asking for a delay stops at a delayed exchange's hold queue.
            let delayed = super::delayed::asks_delay(headers);
            let Ok(topics) = table.route_with(exchange, key, headers, delayed, &mut scratch) else {
                return Reuse::ByKey;
            };
            for topic in topics {
                // Topic names borrowed from the table: a pointer comparison finds the cached
                // count, sparing a metadata lookup (string hash) per routed record.
                let cached = counts
                    .iter()
                    .find(|(name, _)| std::ptr::eq(*name, *topic))
                    .map(|(_, count)| *count);
                let count = match cached {
                    Some(count) => count,
                    None => {
                        let count = partition_count(topic).filter(|count| *count > 0);
                        counts.push((*topic, count));
                        count
                    }
                };
                if let Some(count) = count {
                    destinations.push((*topic, partitioner.partition(topic, key, count)));
                }
            }
            // A keyed record's partition is murmur2 of its key; a keyless one's is round-robin.
            if key.is_some() {
                Reuse::ByKey
            } else {
                Reuse::Never
            }
        },
    )?;
    let batches = split
        .batches
        .into_iter()
        .map(|((topic, partition), batch)| {
            let destination = TopicPartition {
                topic: topic.to_string(),
                partition,
            };
            (destination, batch)
        })
        .collect();
    Ok(RoutedProduce {
        batches,
        routed_records: split.routed,
        unroutable_records: split.unroutable,
        decoded: true,
    })
}

/// Every record goes to partition 0 of each of `topics`: the produced batches are sent whole.
fn forward_whole(records: &Bytes, topics: &[(&str, u32)]) -> Result<RoutedProduce, RouteError> {
    let (batches, record_count) = reset_producer_fields(records)?;
    let mut routed = RoutedProduce {
        decoded: false,
        ..RoutedProduce::default()
    };
    if topics.is_empty() || record_count == 0 {
        routed.unroutable_records = record_count;
        return Ok(routed);
    }
    routed.routed_records = record_count;
    routed.batches = topics
        .iter()
        .map(|(topic, _)| {
            let destination = TopicPartition {
                topic: topic.to_string(),
                partition: 0,
            };
            (destination, batches.clone())
        })
        .collect();
    Ok(routed)
}

/// Checks every batch's header and CRC, drops control batches, resets the producer fields and
/// recomputes each CRC. Returns the new bytes and the number of records in them.
fn reset_producer_fields(records: &Bytes) -> Result<(Bytes, u64), RecordsError> {
    let mut output = BytesMut::with_capacity(records.len());
    let mut record_count = 0u64;
    let mut at = 0usize;
    while at < records.len() {
        let (batch, header) = records::checked_batch(records, at)?;
        let length = batch.len();
        if !header.is_control() {
            let start = output.len();
            output.extend_from_slice(batch);
            let copy = &mut output[start..];
            batch::set_attributes(copy, header.attributes() & !attributes::TRANSACTIONAL);
            batch::set_producer(
                copy,
                batch::NO_PRODUCER_ID,
                batch::NO_PRODUCER_EPOCH,
                batch::NO_SEQUENCE,
            );
            batch::seal_crc(copy);
            record_count += u64::try_from(header.record_count()).unwrap_or(0);
        }
        at += length;
    }
    Ok((output.freeze(), record_count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::exchange::{Binding, Destination, Exchange, ExchangeType};
    use crate::routing::partitioner::partition_for_key;
    use crate::routing::table::Change;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };
    use weir_engine::batch::{field, HEADER_BYTES};

    fn produced(keys: &[Option<&str>], producer_id: i64) -> Bytes {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(index, key)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: index as i64,
                sequence: if producer_id < 0 {
                    -1
                } else {
                    7 + index as i32
                },
                timestamp: 1_000 + index as i64,
                key: key.map(|key| Bytes::copy_from_slice(key.as_bytes())),
                value: Some(Bytes::from(format!("value-{index}"))),
                headers: Default::default(),
            })
            .collect();
        let mut buffer = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buffer, records.iter(), &options).unwrap();
        buffer.freeze()
    }

    fn values(batch: &Bytes) -> Vec<String> {
        let mut bytes = batch.clone();
        RecordBatchDecoder::decode_all(&mut bytes)
            .unwrap()
            .into_iter()
            .flat_map(|set| set.records)
            .map(|record| String::from_utf8(record.value.unwrap().to_vec()).unwrap())
            .collect()
    }

    fn issue_table() -> RoutingTable {
        let mut table = RoutingTable::new();
        table
            .apply(&[
                Change::DeclareExchange(Exchange::new("app", ExchangeType::Topic)),
                Change::AddBinding(Binding::new(
                    "app",
                    Destination::Topic("email_queue".into()),
                    "user.*",
                )),
                Change::AddBinding(Binding::new("app", Destination::Topic("audit".into()), "#")),
                Change::DeclareExchange(Exchange::new("fan", ExchangeType::Fanout)),
                Change::AddBinding(Binding::new("fan", Destination::Topic("audit".into()), "")),
                Change::AddBinding(Binding::new("fan", Destination::Topic("gone".into()), "")),
            ])
            .unwrap();
        table
    }

    fn partitions(topic: &str) -> Option<u32> {
        match topic {
            "email_queue" => Some(3),
            "audit" => Some(1),
            _ => None,
        }
    }

    #[test]
    fn topic_exchange_regroups_per_partition() {
        let table = issue_table();
        let records = produced(
            &[
                Some("user.registered"),
                Some("user."),
                Some("order.created"),
                Some(""),
            ],
            -1,
        );
        let mut partitioner = Partitioner::new();
        let routed = route_produce(&table, "app", &records, partitions, &mut partitioner).unwrap();
        assert!(routed.decoded);
        assert_eq!(routed.routed_records, 4);
        assert_eq!(routed.unroutable_records, 0);
        let audit = TopicPartition {
            topic: "audit".into(),
            partition: 0,
        };
        let (first, audit_batch) = &routed.batches[0];
        assert_eq!(*first, audit);
        assert_eq!(
            values(audit_batch),
            ["value-0", "value-1", "value-2", "value-3"]
        );
        // email_queue gets the two user.* records, each in its murmur2 partition.
        let email: Vec<(u32, Vec<String>)> = routed.batches[1..]
            .iter()
            .map(|(destination, batch)| {
                assert_eq!(destination.topic, "email_queue");
                (destination.partition, values(batch))
            })
            .collect();
        let mut expected: Vec<(u32, Vec<String>)> = Vec::new();
        for (key, value) in [("user.registered", "value-0"), ("user.", "value-1")] {
            let partition = partition_for_key(key.as_bytes(), 3);
            match expected.iter_mut().find(|(p, _)| *p == partition) {
                Some((_, values)) => values.push(value.to_string()),
                None => expected.push((partition, vec![value.to_string()])),
            }
        }
        expected.sort();
        assert_eq!(email, expected);
    }

    #[test]
    fn fanout_to_single_partitions_forwards_whole_batches() {
        let table = issue_table();
        let records = produced(&[Some("a"), None, Some("c")], 99);
        let mut partitioner = Partitioner::new();
        let routed = route_produce(&table, "fan", &records, partitions, &mut partitioner).unwrap();
        assert!(!routed.decoded);
        assert_eq!(routed.routed_records, 3);
        // `gone` does not exist: only audit gets the batch.
        assert_eq!(routed.batches.len(), 1);
        let (destination, batch) = &routed.batches[0];
        assert_eq!(destination.topic, "audit");
        // Record bytes untouched, producer fields reset, CRC valid.
        assert_eq!(&batch[HEADER_BYTES..], &records[HEADER_BYTES..]);
        assert_eq!(&batch[field::PRODUCER_ID], &(-1i64).to_be_bytes());
        assert_eq!(&batch[field::BASE_SEQUENCE], &(-1i32).to_be_bytes());
        assert_eq!(values(batch), ["value-0", "value-1", "value-2"]);
    }

    #[test]
    fn corrupt_batches_are_refused_on_both_paths() {
        let table = issue_table();
        let mut bytes = produced(&[Some("user.x")], -1).to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let bytes = Bytes::from(bytes);
        let mut partitioner = Partitioner::new();
        for exchange in ["app", "fan"] {
            let error =
                route_produce(&table, exchange, &bytes, partitions, &mut partitioner).unwrap_err();
            assert_eq!(
                error.kind(),
                RoutingErrorKind::CorruptRecords,
                "{exchange}: CORRUPT_MESSAGE"
            );
        }
        let error =
            route_produce(&table, "nope", &bytes, partitions, &mut partitioner).unwrap_err();
        assert_eq!(error.kind(), RoutingErrorKind::NotFound);
    }

    #[test]
    fn unroutable_records_are_counted() {
        let mut table = issue_table();
        table
            .apply(&[Change::DeclareExchange(Exchange::new(
                "lonely",
                ExchangeType::Direct,
            ))])
            .unwrap();
        let records = produced(&[Some("a"), Some("b")], -1);
        let mut partitioner = Partitioner::new();
        let routed =
            route_produce(&table, "lonely", &records, partitions, &mut partitioner).unwrap();
        assert!(routed.batches.is_empty());
        assert_eq!(routed.unroutable_records, 2);
    }
}
