//! RecordBatch v2: the harness's own encoder (producer hot path) and parser (consumer hot path).
//!
//! Owned by whichever producer or fetcher thread holds the buffer; nothing here is shared or
//! allocates per record: a batch is written in place at the end of a caller's reused `Vec<u8>`,
//! and parsing borrows the fetched bytes.
//!
//! Layout (Kafka's `DefaultRecordBatch`, all integers big-endian):
//! ```text
//!  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 = 2
//! 17 crc u32 (CRC32C of bytes 21..end) | 21 attributes i16 | 23 lastOffsetDelta i32
//! 27 firstTimestamp i64 | 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16
//! 53 baseSequence i32 | 57 recordCount i32 | 61 records...
//! record: length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//!         keyLength varint | key | valueLength varint | value | headerCount varint
//! ```
//! Every value written by the harness starts with the send time (u64 little-endian nanoseconds
//! since the run's clock origin), which is how the consumer measures end-to-end latency.

use anyhow::{bail, ensure, Context, Result};
use weir_engine::batch::{self as header, attributes, HeaderFields};

/// Bytes before the first record.
pub const BATCH_HEADER_BYTES: usize = header::HEADER_BYTES;
/// The prefix of every value: the send time in nanoseconds since the run's clock origin.
pub const VALUE_TIMESTAMP_BYTES: usize = 8;

/// Bytes a zigzag varint takes for `value`.
pub fn varint_bytes(value: i64) -> usize {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let mut bytes = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        bytes += 1;
    }
    bytes
}

/// Appends `value` as a zigzag varint (Kafka's record-level integer encoding).
#[inline]
pub fn put_varint(buf: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        buf.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    buf.push(zigzag as u8);
}

/// Reads a zigzag varint at `*position`, advancing it. Fetched bytes are untrusted: overlong or
/// truncated varints are errors.
#[inline(always)]
pub fn get_varint(bytes: &[u8], position: &mut usize) -> Result<i64> {
    // Fast path: most record fields (attributes, deltas, lengths < 64) are one byte.
    if let Some(&byte) = bytes.get(*position) {
        if byte < 0x80 {
            *position += 1;
            let zigzag = u64::from(byte);
            return Ok(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64));
        }
    }
    get_varint_slow(bytes, position)
}

#[inline(never)]
fn get_varint_slow(bytes: &[u8], position: &mut usize) -> Result<i64> {
    let mut zigzag: u64 = 0;
    let mut shift = 0;
    loop {
        let Some(&byte) = bytes.get(*position) else {
            bail!("truncated varint at byte {}", *position);
        };
        *position += 1;
        zigzag |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64));
        }
        shift += 7;
        if shift > 63 {
            bail!("varint longer than 10 bytes");
        }
    }
}

/// Bytes one record takes on the wire, length prefix included.
pub fn record_bytes(offset_delta: i32, key_bytes: Option<usize>, value_bytes: usize) -> usize {
    let body = record_body_bytes(offset_delta, key_bytes, value_bytes);
    varint_bytes(body as i64) + body
}

fn record_body_bytes(offset_delta: i32, key_bytes: Option<usize>, value_bytes: usize) -> usize {
    let key = match key_bytes {
        None => varint_bytes(-1),
        Some(bytes) => varint_bytes(bytes as i64) + bytes,
    };
    1 + varint_bytes(0) // attributes, timestampDelta (always 0: all records share firstTimestamp)
        + varint_bytes(i64::from(offset_delta))
        + key
        + varint_bytes(value_bytes as i64)
        + value_bytes
        + varint_bytes(0) // no headers
}

/// A batch being written at the end of a caller's buffer. `begin` reserves the header, `append`
/// writes records, `finish` patches lengths, counts and the CRC.
#[derive(Debug)]
pub struct BatchBuilder {
    start: usize,
    record_count: i32,
    timestamp_ms: i64,
}

impl BatchBuilder {
    pub fn begin(buf: &mut Vec<u8>, timestamp_ms: i64) -> Self {
        let start = buf.len();
        // The header is written in `finish`, once the records and their count are known.
        buf.resize(start + BATCH_HEADER_BYTES, 0);
        BatchBuilder {
            start,
            record_count: 0,
            timestamp_ms,
        }
    }

    pub fn record_count(&self) -> i32 {
        self.record_count
    }

    /// Bytes of this batch written so far (header included).
    pub fn batch_bytes(&self, buf: &[u8]) -> usize {
        buf.len() - self.start
    }

    /// Appends one record whose value is `send_time_ns` (8 bytes LE) followed by `filler`.
    #[inline]
    pub fn append(
        &mut self,
        buf: &mut Vec<u8>,
        key: Option<&[u8]>,
        send_time_ns: u64,
        filler: &[u8],
    ) {
        let offset_delta = self.record_count;
        let value_bytes = VALUE_TIMESTAMP_BYTES + filler.len();
        let body = record_body_bytes(offset_delta, key.map(<[u8]>::len), value_bytes);
        buf.reserve(body + 5);
        put_varint(buf, body as i64);
        buf.push(0); // attributes
        buf.push(0); // timestampDelta = 0
        put_varint(buf, i64::from(offset_delta));
        match key {
            None => put_varint(buf, -1),
            Some(key) => {
                put_varint(buf, key.len() as i64);
                buf.extend_from_slice(key);
            }
        }
        put_varint(buf, value_bytes as i64);
        buf.extend_from_slice(&send_time_ns.to_le_bytes());
        buf.extend_from_slice(filler);
        buf.push(0); // headerCount = 0
        self.record_count += 1;
    }

    /// Patches the header; the batch is then complete at `buf[start..]`.
    pub fn finish(&self, buf: &mut [u8]) {
        assert!(self.record_count > 0, "an empty batch is never sent");
        let batch = &mut buf[self.start..];
        let fields = HeaderFields {
            base_offset: 0, // the broker assigns it
            partition_leader_epoch: header::NO_PARTITION_LEADER_EPOCH,
            attributes: 0, // no compression, create time
            last_offset_delta: self.record_count - 1,
            first_timestamp: self.timestamp_ms,
            max_timestamp: self.timestamp_ms,
            producer_id: header::NO_PRODUCER_ID, // not idempotent
            producer_epoch: header::NO_PRODUCER_EPOCH,
            base_sequence: header::NO_SEQUENCE,
            record_count: self.record_count,
        };
        header::write_header(batch, &fields);
    }
}

/// One complete batch from a fetch response, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub record_count: i32,
    pub attributes: i16,
    /// Everything after the 61-byte header.
    pub records: &'a [u8],
}

impl BatchView<'_> {
    pub fn next_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta) + 1
    }

    pub fn is_control(&self) -> bool {
        self.attributes & attributes::CONTROL != 0
    }

    pub fn compression(&self) -> i16 {
        self.attributes & attributes::COMPRESSION_MASK
    }
}

/// Splits fetched record-set bytes into complete batches. A trailing partial batch (brokers may
/// cut the last one at `max_bytes`) is not an error: it is returned as the unparsed byte count.
/// A batch with a bad magic, impossible length or wrong CRC is an error.
pub fn parse_batches<'a>(
    mut bytes: &'a [u8],
    mut visit: impl FnMut(BatchView<'a>) -> Result<()>,
) -> Result<usize> {
    while bytes.len() >= BATCH_HEADER_BYTES {
        let batch_length = header::batch_length_field(bytes).unwrap_or(-1);
        ensure!(
            batch_length >= (BATCH_HEADER_BYTES - header::LOG_OVERHEAD_BYTES) as i32,
            "batch length {batch_length} is shorter than a header"
        );
        let total = batch_length as usize + header::LOG_OVERHEAD_BYTES;
        if total > bytes.len() {
            break;
        }
        let batch = &bytes[..total];
        let view = header::Header::new(batch).context("a whole header")?;
        ensure!(
            view.magic() == 2,
            "record batch magic {} is not 2",
            view.magic()
        );
        let stored_crc = view.stored_crc();
        let computed_crc = header::computed_crc(batch);
        ensure!(
            stored_crc == computed_crc,
            "record batch CRC mismatch: stored {stored_crc:#010x}, computed {computed_crc:#010x}"
        );
        visit(BatchView {
            base_offset: view.base_offset(),
            last_offset_delta: view.last_offset_delta(),
            record_count: view.record_count(),
            attributes: view.attributes(),
            records: &batch[BATCH_HEADER_BYTES..],
        })?;
        bytes = &bytes[total..];
    }
    Ok(bytes.len())
}

/// One record of an uncompressed batch, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Visits the `record_count` records of an uncompressed batch body.
pub fn parse_records<'a>(
    records: &'a [u8],
    record_count: i32,
    mut visit: impl FnMut(RecordView<'a>),
) -> Result<()> {
    let mut position = 0;
    for _ in 0..record_count {
        let length = get_varint(records, &mut position)?;
        ensure!(
            length >= 0 && (length as usize) <= records.len() - position,
            "record length {length} overruns the batch"
        );
        let end = position + length as usize;
        let record = &records[..end];
        position += 1; // attributes
        let _timestamp_delta = get_varint(record, &mut position)?;
        let offset_delta = get_varint(record, &mut position)?;
        let key = get_bytes(record, &mut position)?;
        let value = get_bytes(record, &mut position)?;
        // Headers are skipped: the harness never reads them.
        position = end;
        visit(RecordView {
            offset_delta: offset_delta as i32,
            key,
            value,
        });
    }
    Ok(())
}

fn get_bytes<'a>(record: &'a [u8], position: &mut usize) -> Result<Option<&'a [u8]>> {
    let length = get_varint(record, position)?;
    if length < 0 {
        return Ok(None);
    }
    let end = position
        .checked_add(length as usize)
        .filter(|&end| end <= record.len());
    let Some(end) = end else {
        bail!("record field of {length} bytes overruns the record");
    };
    let bytes = &record[*position..end];
    *position = end;
    Ok(Some(bytes))
}

/// The send time carried in the first 8 bytes of a harness value, if the value has one.
#[inline]
pub fn value_send_time_ns(value: &[u8]) -> Option<u64> {
    let prefix = value.get(..VALUE_TIMESTAMP_BYTES)?;
    Some(u64::from_le_bytes(prefix.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(keys: &[Option<&[u8]>], filler: &[u8]) -> Vec<u8> {
        let mut buf = vec![0xAA; 3]; // a prefix the builder must not touch
        let mut builder = BatchBuilder::begin(&mut buf, 1_700_000_000_000);
        for (index, key) in keys.iter().enumerate() {
            builder.append(&mut buf, *key, 1000 + index as u64, filler);
        }
        builder.finish(&mut buf);
        assert_eq!(&buf[..3], &[0xAA; 3]);
        buf.drain(..3);
        buf
    }

    #[test]
    fn built_batch_parses_back_with_valid_crc() {
        let filler = [7u8; 92];
        let keys: Vec<Option<&[u8]>> = vec![None, Some(b"k1"), Some(b""), None];
        let bytes = build(&keys, &filler);

        assert!(header::crc_matches(&bytes));
        assert_eq!(
            header::batch_length_field(&bytes).unwrap() as usize,
            bytes.len() - header::LOG_OVERHEAD_BYTES
        );

        let mut batches = Vec::new();
        let rest = parse_batches(&bytes, |batch| {
            batches.push(batch);
            Ok(())
        })
        .unwrap();
        assert_eq!(rest, 0);
        assert_eq!(batches.len(), 1);
        let batch = batches[0];
        assert_eq!(batch.record_count, 4);
        assert_eq!(batch.last_offset_delta, 3);
        assert_eq!(batch.compression(), 0);

        let mut records = Vec::new();
        parse_records(batch.records, batch.record_count, |record| {
            records.push(record)
        })
        .unwrap();
        assert_eq!(records.len(), 4);
        for (index, record) in records.iter().enumerate() {
            assert_eq!(record.offset_delta, index as i32);
            assert_eq!(record.key, keys[index]);
            let value = record.value.unwrap();
            assert_eq!(value.len(), 100);
            assert_eq!(value_send_time_ns(value), Some(1000 + index as u64));
            assert_eq!(&value[8..], &filler);
        }
    }

    #[test]
    fn record_bytes_matches_what_append_writes() {
        for (offset_delta, key) in [(0, None), (63, Some(3)), (64, Some(200)), (100_000, None)] {
            let mut buf = Vec::new();
            let mut builder = BatchBuilder::begin(&mut buf, 0);
            for _ in 0..offset_delta {
                builder.append(&mut buf, None, 0, &[]);
            }
            let before = buf.len();
            let key_bytes = key.map(|bytes| vec![1u8; bytes]);
            builder.append(&mut buf, key_bytes.as_deref(), 0, &[0; 50]);
            assert_eq!(buf.len() - before, record_bytes(offset_delta, key, 58));
        }
    }

    #[test]
    fn corrupted_batch_is_an_error_and_partial_tail_is_left() {
        let bytes = build(&[None, None], &[1; 10]);
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes[..40]); // a cut-off second batch
        let mut count = 0;
        let rest = parse_batches(&two, |_| {
            count += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((count, rest), (1, 40));

        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(parse_batches(&flipped, |_| Ok(())).is_err());
    }

    #[test]
    fn hostile_record_bytes_are_errors_not_panics() {
        for records in [&[0xffu8; 12][..], &[0x7e][..], &[0x02, 0x00][..], &[][..]] {
            assert!(parse_records(records, 1, |_| {}).is_err());
        }
    }

    /// Cross-check against an independent implementation (the `kafka-protocol` crate).
    #[test]
    fn independent_decoder_reads_our_batches() {
        use kafka_protocol::records::RecordBatchDecoder;
        let keys: Vec<Option<&[u8]>> = vec![None, Some(b"key"), None];
        let filler = [9u8; 30];
        let mut bytes = build(&keys, &filler);
        bytes[..8].copy_from_slice(&500i64.to_be_bytes()); // as a broker assigns it
        let set = RecordBatchDecoder::decode(&mut bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(set.version, 2);
        assert_eq!(set.records.len(), 3);
        for (index, record) in set.records.iter().enumerate() {
            assert_eq!(record.offset, 500 + index as i64);
            assert_eq!(record.timestamp, 1_700_000_000_000);
            assert_eq!(record.producer_id, -1);
            assert_eq!(record.key.as_deref(), keys[index]);
            let value = record.value.as_deref().unwrap();
            assert_eq!(value_send_time_ns(value), Some(1000 + index as u64));
            assert_eq!(&value[8..], &filler);
            assert!(record.headers.is_empty());
        }
    }

    #[test]
    fn we_read_independently_encoded_batches() {
        use kafka_protocol::protocol::StrBytes;
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records: Vec<Record> = (0..5i64)
            .map(|index| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: 70 + index,
                sequence: -1,
                timestamp: 1_000 + index,
                key: (index % 2 == 0).then(|| bytes::Bytes::from(vec![index as u8; 3])),
                value: Some(bytes::Bytes::from(
                    (index as u64 * 7).to_le_bytes().to_vec(),
                )),
                headers: [(StrBytes::from_static_str("h"), None)]
                    .into_iter()
                    .collect(),
            })
            .collect();
        let mut encoded = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut encoded, &records, &options).unwrap();
        // The crate may split records over several batches; read them all.
        let mut seen = Vec::new();
        let rest = parse_batches(&encoded, |batch| {
            parse_records(batch.records, batch.record_count, |record| {
                seen.push((batch.base_offset + i64::from(record.offset_delta), record));
            })
        })
        .unwrap();
        assert_eq!((rest, seen.len()), (0, 5));
        for (index, (offset, record)) in seen.iter().enumerate() {
            assert_eq!(*offset, 70 + index as i64);
            assert_eq!(record.key, records[index].key.as_deref());
            assert_eq!(
                record.value.and_then(value_send_time_ns),
                Some(index as u64 * 7)
            );
        }
    }

    #[test]
    fn varints_round_trip() {
        for value in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), varint_bytes(value));
            let mut position = 0;
            assert_eq!(get_varint(&buf, &mut position).unwrap(), value);
            assert_eq!(position, buf.len());
        }
    }
}
