//! Splitting the record batches produced to an exchange into one batch per destination
//! partition: decode (decompressing if needed), assign each record its destinations, regroup,
//! re-encode with fresh offsets and CRCs.
//!
//! Pure: runs on the shard that received the produce request, before anything is sent to the
//! shards owning the destinations; no I/O, no shared state. Only used when the route depends on
//! record keys or headers (see `RoutingTable::key_independent_route`); otherwise batches are
//! forwarded untouched and this code never runs.
//!
//! Batches are client input: every length and count is checked before the decoder allocates for
//! it, and any malformation is an error for the produce response, never a panic.
//!
//! What a routed record keeps and loses:
//! - kept: key, value, headers, timestamp; the source batch's compression codec.
//! - renumbered: offsets start at 0 in each output batch (the destination log assigns real ones).
//! - dropped: producer id, epoch and sequence (the idempotence of a produce to an exchange is
//!   the exchange's, not the destination's: a destination partition receives records from many
//!   producers through one router, so per-producer sequences would be meaningless there);
//!   transactional flags; control records (transaction markers are never routed).

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};

use super::decompress;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

/// Bytes of a RecordBatch v2 header, up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Most records accepted in one produced batch on the routing path: bounds what one batch can
/// make the decoder allocate.
pub const RECORDS_PER_BATCH_MAX: usize = 1 << 18;
/// Smallest encoded v2 record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
const RECORD_BYTES_MIN: usize = 7;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error("record batch at byte {at} is malformed: {reason}")]
    Malformed { at: usize, reason: String },
    #[error("record batch at byte {at} holds {count} records; at most {max} are routed per batch", max = RECORDS_PER_BATCH_MAX)]
    TooManyRecords { at: usize, count: i64 },
    #[error("re-encoding routed records failed: {reason}")]
    Encode { reason: String },
}

impl RecordsError {
    /// The Kafka error a produce response carries for this partition.
    pub fn kafka_error(&self) -> kafka_protocol::error::ResponseError {
        use kafka_protocol::error::ResponseError;
        match self {
            RecordsError::Malformed { .. } => ResponseError::CorruptMessage,
            RecordsError::TooManyRecords { .. } => ResponseError::MessageTooLarge,
            RecordsError::Encode { .. } => ResponseError::UnknownServerError,
        }
    }
}

/// What one produced `records` field became.
#[derive(Debug)]
pub struct SplitRecords<D> {
    /// One encoded batch per destination that received at least one record, in `D` order.
    pub batches: Vec<(D, Bytes)>,
    /// Records routed to at least one destination.
    pub routed: u64,
    /// Records no destination took: counted by the caller and dropped.
    pub unroutable: u64,
}

/// Decodes every batch in `records`, asks `assign` for each data record's destinations (it
/// pushes them into the vector it is given; duplicates are ignored), and returns one re-encoded
/// batch per destination holding that destination's records in produce order.
pub fn split_records<D, F>(records: &Bytes, mut assign: F) -> Result<SplitRecords<D>, RecordsError>
where
    D: Ord + Clone,
    F: FnMut(&Record, &mut Vec<D>),
{
    let mut groups: BTreeMap<D, (Compression, Vec<Record>)> = BTreeMap::new();
    let mut destinations: Vec<D> = Vec::new();
    let mut routed = 0u64;
    let mut unroutable = 0u64;
    let mut at = 0usize;
    while at < records.len() {
        let batch_bytes = check_batch_header(records, at)?;
        let mut batch = records.slice(at..at + batch_bytes);
        let decoded = RecordBatchDecoder::decode_with_custom_compression(
            &mut batch,
            Some(decompress::decompress_bounded),
        )
        .map_err(|error| RecordsError::Malformed {
            at,
            reason: format!("{error:#}"),
        })?;
        for mut record in decoded.records {
            if record.control {
                continue;
            }
            destinations.clear();
            assign(&record, &mut destinations);
            destinations.sort_unstable();
            destinations.dedup();
            if destinations.is_empty() {
                unroutable += 1;
                continue;
            }
            routed += 1;
            strip_producer_state(&mut record);
            let last = destinations.len() - 1;
            for (index, destination) in destinations.drain(..).enumerate() {
                let group = groups
                    .entry(destination)
                    .or_insert_with(|| (decoded.compression, Vec::new()));
                if index == last {
                    group.1.push(record);
                    break;
                }
                group.1.push(record.clone());
            }
        }
        at += batch_bytes;
    }
    let mut batches = Vec::with_capacity(groups.len());
    for (destination, (compression, mut group)) in groups {
        batches.push((destination, encode_batch(&mut group, compression)?));
    }
    Ok(SplitRecords {
        batches,
        routed,
        unroutable,
    })
}

/// Checks the header of the batch starting at `at` and returns its total length in bytes.
pub(crate) fn check_batch_header(records: &[u8], at: usize) -> Result<usize, RecordsError> {
    let malformed = |reason: String| RecordsError::Malformed { at, reason };
    let header = records
        .get(at..at + BATCH_HEADER_BYTES)
        .ok_or_else(|| malformed(format!("fewer than {BATCH_HEADER_BYTES} bytes left")))?;
    let read_i32 = |offset: usize| {
        i32::from_be_bytes([
            header[offset],
            header[offset + 1],
            header[offset + 2],
            header[offset + 3],
        ])
    };
    let batch_length = read_i32(8);
    let magic = header[16];
    if magic != 2 {
        return Err(malformed(format!(
            "magic {magic}: only RecordBatch v2 is accepted"
        )));
    }
    let total = usize::try_from(batch_length)
        .ok()
        .and_then(|length| length.checked_add(12))
        .filter(|total| *total >= BATCH_HEADER_BYTES)
        .ok_or_else(|| malformed(format!("batch length {batch_length}")))?;
    if records.len() - at < total {
        return Err(malformed(format!(
            "batch length {batch_length} runs past the end of the records"
        )));
    }
    let record_count = read_i32(57);
    let count = usize::try_from(record_count)
        .map_err(|_| malformed(format!("record count {record_count}")))?;
    if count > RECORDS_PER_BATCH_MAX {
        return Err(RecordsError::TooManyRecords {
            at,
            count: i64::from(record_count),
        });
    }
    let compressed = header[22] & 0x07 != 0;
    if !compressed && count * RECORD_BYTES_MIN > total - BATCH_HEADER_BYTES {
        return Err(malformed(format!(
            "{count} records cannot fit in {} bytes",
            total - BATCH_HEADER_BYTES
        )));
    }
    Ok(total)
}

/// Clears what belonged to the producer's session with the exchange, not to the record.
fn strip_producer_state(record: &mut Record) {
    record.transactional = false;
    record.control = false;
    record.delete_horizon = false;
    record.partition_leader_epoch = NO_PARTITION_LEADER_EPOCH;
    record.producer_id = NO_PRODUCER_ID;
    record.producer_epoch = NO_PRODUCER_EPOCH;
}

/// Encodes one destination's records as a single batch with offsets 0..n.
fn encode_batch(group: &mut [Record], compression: Compression) -> Result<Bytes, RecordsError> {
    for (index, record) in group.iter_mut().enumerate() {
        record.offset = index as i64;
        // The encoder starts a new batch whenever `offset - sequence` changes and writes
        // `first.sequence` as the base sequence; `offset - 1` keeps every record in one batch
        // with base sequence -1 (no sequence), as a non-idempotent producer sends.
        record.sequence = index as i32 - 1;
    }
    let mut encoded = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut encoded, group.iter(), &options).map_err(|error| {
        RecordsError::Encode {
            reason: format!("{error:#}"),
        }
    })?;
    Ok(encoded.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::TimestampType;

    fn record(offset: i64, key: Option<&str>, value: &str, headers: &[(&str, &str)]) -> Record {
        let mut record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 4242,
            producer_epoch: 3,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: 100 + offset as i32,
            timestamp: 1_700_000_000_000 + offset,
            key: key.map(|key| Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Default::default(),
        };
        for (name, value) in headers {
            record.headers.insert(
                (*name).to_string().into(),
                Some(Bytes::copy_from_slice(value.as_bytes())),
            );
        }
        record
    }

    fn produced(records: &[Record], compression: Compression) -> Bytes {
        let mut buffer = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buffer, records.iter(), &options).unwrap();
        buffer.freeze()
    }

    /// Routes by the first byte of the key: `a…` to 1, `b…` to 2, `ab…` to both, keyless nowhere.
    fn by_key(record: &Record, destinations: &mut Vec<u32>) {
        let key = record.key.as_deref().unwrap_or_default();
        if key.starts_with(b"a") {
            destinations.push(1);
        }
        if key.starts_with(b"b") || key.starts_with(b"ab") {
            destinations.push(2);
            destinations.push(2);
        }
    }

    fn decode_one(batch: &Bytes) -> kafka_protocol::records::RecordSet {
        let mut bytes = batch.clone();
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert!(bytes.is_empty(), "exactly one batch per destination");
        set
    }

    fn check(compression: Compression) {
        let input = [
            record(0, Some("a1"), "v0", &[("h", "x")]),
            record(1, Some("b1"), "v1", &[]),
            record(2, None, "v2", &[]),
            record(3, Some("ab"), "v3", &[]),
            record(4, Some("a2"), "v4", &[]),
        ];
        // Two produced batches back to back.
        let mut records = BytesMut::new();
        records.extend_from_slice(&produced(&input[..2], compression));
        records.extend_from_slice(&produced(&input[2..], compression));
        let split = split_records(&records.freeze(), by_key).unwrap();
        assert_eq!(split.routed, 4);
        assert_eq!(split.unroutable, 1);
        let destinations: Vec<u32> = split.batches.iter().map(|(d, _)| *d).collect();
        assert_eq!(destinations, [1, 2]);

        let one = decode_one(&split.batches[0].1);
        assert_eq!(one.compression, compression);
        let values: Vec<&[u8]> = one
            .records
            .iter()
            .map(|r| r.value.as_deref().unwrap())
            .collect();
        assert_eq!(values, [&b"v0"[..], b"v3", b"v4"]);
        let offsets: Vec<i64> = one.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [0, 1, 2]);
        for record in &one.records {
            assert_eq!(record.producer_id, -1);
            assert_eq!(record.producer_epoch, -1);
        }
        assert_eq!(one.records[0].timestamp, 1_700_000_000_000);
        assert_eq!(one.records[2].timestamp, 1_700_000_000_004);
        assert_eq!(one.records[0].key.as_deref(), Some(&b"a1"[..]));
        assert_eq!(
            one.records[0]
                .headers
                .iter()
                .find(|(name, _)| name.as_str() == "h")
                .and_then(|(_, value)| value.as_deref()),
            Some(&b"x"[..])
        );

        let two = decode_one(&split.batches[1].1);
        let values: Vec<&[u8]> = two
            .records
            .iter()
            .map(|r| r.value.as_deref().unwrap())
            .collect();
        assert_eq!(
            values,
            [&b"v1"[..], b"v3"],
            "one copy despite a repeated destination"
        );

        // Header facts the storage layer checks: base sequence -1, fresh valid CRC.
        let batch = &split.batches[1].1;
        assert_eq!(&batch[53..57], &(-1i32).to_be_bytes());
        let crc = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
        assert_eq!(crc, crc32c::crc32c(&batch[21..]));
    }

    #[test]
    fn regroups_uncompressed() {
        check(Compression::None);
    }

    #[test]
    fn regroups_compressed() {
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            check(compression);
        }
    }

    #[test]
    fn nothing_routed_gives_no_batches() {
        let records = produced(&[record(0, None, "v", &[])], Compression::None);
        let split = split_records(&records, by_key).unwrap();
        assert!(split.batches.is_empty());
        assert_eq!(split.unroutable, 1);
    }

    #[test]
    fn hostile_input_is_an_error() {
        let good = produced(&[record(0, Some("a"), "v", &[])], Compression::None);
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("short", good[..30].to_vec()),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("trailing garbage", [&good[..], &[1, 2, 3]].concat()),
        ];
        let mut bad_crc = good.to_vec();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        cases.push(("bad crc", bad_crc));
        let mut bad_magic = good.to_vec();
        bad_magic[16] = 1;
        cases.push(("magic 1", bad_magic));
        let mut negative_length = good.to_vec();
        negative_length[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        cases.push(("negative length", negative_length));
        let mut huge_count = good.to_vec();
        huge_count[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        cases.push(("huge record count", huge_count));
        let mut count_past_bytes = good.to_vec();
        count_past_bytes[57..61].copy_from_slice(&1000i32.to_be_bytes());
        cases.push(("count past the bytes", count_past_bytes));
        for (name, bytes) in cases {
            let result = split_records(&Bytes::from(bytes), by_key);
            assert!(result.is_err(), "{name}: accepted");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        use proptest::prelude::*;
        let good = produced(
            &[
                record(0, Some("a"), "v", &[("k", "v")]),
                record(1, Some("b"), "w", &[]),
            ],
            Compression::None,
        );
        // Flip bytes under the CRC and fix the CRC, so that the record decoder sees them.
        proptest!(|(flips in prop::collection::vec((21..good.len(), any::<u8>()), 1..4))| {
            let mut bytes = good.to_vec();
            for (index, value) in flips {
                bytes[index] = value;
            }
            let crc = crc32c::crc32c(&bytes[21..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            let _ = split_records(&Bytes::from(bytes), by_key);
        });
    }
}
