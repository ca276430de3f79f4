//! RecordBatch v2 header parsing, validation and construction: the only place that knows the
//! layout. Pure functions over byte slices (no I/O, no state), usable on any shard.
//!
//! ```text
//! offset  size  field                 covered by CRC
//!      0     8  baseOffset            no  (the broker writes it in place)
//!      8     4  batchLength           no  (bytes after this field)
//!     12     4  partitionLeaderEpoch  no
//!     16     1  magic (= 2)           no
//!     17     4  crc (CRC32C)          no
//!     21     2  attributes            yes (bytes 21..end)
//!     23     4  lastOffsetDelta       yes
//!     27     8  firstTimestamp        yes
//!     35     8  maxTimestamp          yes
//!     43     8  producerId            yes
//!     51     2  producerEpoch         yes
//!     53     4  baseSequence          yes
//!     57     4  recordCount           yes
//!     61     …  records               yes (never decoded by the engine)
//! ```

use std::ops::Range;

use bytes::{BufMut, BytesMut};

pub const HEADER_BYTES: usize = 61;
/// Bytes before `batchLength` counts from: baseOffset + batchLength.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The CRC32C covers the batch from here to its end.
pub const CRC_COVERED_FROM: usize = 21;
/// The only magic Weir stores (RecordBatch v2).
pub const MAGIC_V2: i8 = 2;

/// Byte ranges of the header fields, as in the table above: the only literal header offsets in
/// Weir. Everything else reads and writes a header through [`Header`] and [`HeaderFields`].
pub mod field {
    use std::ops::Range;

    pub const BASE_OFFSET: Range<usize> = 0..8;
    pub const BATCH_LENGTH: Range<usize> = 8..12;
    pub const PARTITION_LEADER_EPOCH: Range<usize> = 12..16;
    pub const MAGIC: usize = 16;
    pub const CRC: Range<usize> = 17..21;
    pub const ATTRIBUTES: Range<usize> = 21..23;
    pub const LAST_OFFSET_DELTA: Range<usize> = 23..27;
    pub const FIRST_TIMESTAMP: Range<usize> = 27..35;
    pub const MAX_TIMESTAMP: Range<usize> = 35..43;
    pub const PRODUCER_ID: Range<usize> = 43..51;
    pub const PRODUCER_EPOCH: Range<usize> = 51..53;
    pub const BASE_SEQUENCE: Range<usize> = 53..57;
    pub const RECORD_COUNT: Range<usize> = 57..61;
}

/// Bits of the `attributes` field.
pub mod attributes {
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub const COMPRESSION_MASK: i16 = 0x07;
    /// Set: the timestamps are the broker's append time, not the producer's create time.
    pub const LOG_APPEND_TIME: i16 = 0x08;
    pub const TRANSACTIONAL: i16 = 0x10;
    pub const CONTROL: i16 = 0x20;
}

/// "No value" for the producer fields and the leader epoch, as Kafka writes them.
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

const _: () = assert!(field::RECORD_COUNT.end == HEADER_BYTES);
const _: () = assert!(field::BATCH_LENGTH.end == LOG_OVERHEAD_BYTES);
const _: () = assert!(field::CRC.end == CRC_COVERED_FROM);
const _: () = assert!(field::ATTRIBUTES.start == CRC_COVERED_FROM);
const _: () = assert!(field::MAGIC + 1 == field::CRC.start);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch of {0} bytes is shorter than the 61-byte header")]
    Truncated(usize),
    #[error("unsupported magic {0}")]
    Magic(i8),
    #[error("batch length field {field} does not match {actual} bytes")]
    Length { field: i32, actual: usize },
    #[error("crc mismatch: header says {stored:#x}, computed {computed:#x}")]
    Crc { stored: u32, computed: u32 },
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    RecordCount { count: i32, last_offset_delta: i32 },
}

/// What the broker needs from a batch header; never decodes records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    pub last_offset_delta: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
    pub attributes: i16,
}

fn array<const N: usize>(b: &[u8], range: Range<usize>) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[range]);
    out
}

/// Read access to the header of a batch whose first [`HEADER_BYTES`] are present. Reads only the
/// header; the records are never looked at.
#[derive(Clone, Copy, Debug)]
pub struct Header<'a>(&'a [u8]);

impl<'a> Header<'a> {
    /// `None` when fewer than [`HEADER_BYTES`] bytes are present.
    #[inline]
    pub fn new(b: &'a [u8]) -> Option<Header<'a>> {
        (b.len() >= HEADER_BYTES).then_some(Header(b))
    }
    #[inline]
    pub fn base_offset(&self) -> i64 {
        i64::from_be_bytes(array(self.0, field::BASE_OFFSET))
    }
    #[inline]
    pub fn batch_length(&self) -> i32 {
        i32::from_be_bytes(array(self.0, field::BATCH_LENGTH))
    }
    #[inline]
    pub fn partition_leader_epoch(&self) -> i32 {
        i32::from_be_bytes(array(self.0, field::PARTITION_LEADER_EPOCH))
    }
    #[inline]
    pub fn magic(&self) -> i8 {
        self.0[field::MAGIC] as i8
    }
    #[inline]
    pub fn stored_crc(&self) -> u32 {
        u32::from_be_bytes(array(self.0, field::CRC))
    }
    #[inline]
    pub fn attributes(&self) -> i16 {
        i16::from_be_bytes(array(self.0, field::ATTRIBUTES))
    }
    #[inline]
    pub fn last_offset_delta(&self) -> i32 {
        i32::from_be_bytes(array(self.0, field::LAST_OFFSET_DELTA))
    }
    #[inline]
    pub fn first_timestamp(&self) -> i64 {
        i64::from_be_bytes(array(self.0, field::FIRST_TIMESTAMP))
    }
    #[inline]
    pub fn max_timestamp(&self) -> i64 {
        i64::from_be_bytes(array(self.0, field::MAX_TIMESTAMP))
    }
    #[inline]
    pub fn producer_id(&self) -> i64 {
        i64::from_be_bytes(array(self.0, field::PRODUCER_ID))
    }
    #[inline]
    pub fn producer_epoch(&self) -> i16 {
        i16::from_be_bytes(array(self.0, field::PRODUCER_EPOCH))
    }
    #[inline]
    pub fn base_sequence(&self) -> i32 {
        i32::from_be_bytes(array(self.0, field::BASE_SEQUENCE))
    }
    #[inline]
    pub fn record_count(&self) -> i32 {
        i32::from_be_bytes(array(self.0, field::RECORD_COUNT))
    }
    #[inline]
    pub fn is_control(&self) -> bool {
        self.attributes() & attributes::CONTROL != 0
    }
    #[inline]
    pub fn compression(&self) -> i16 {
        self.attributes() & attributes::COMPRESSION_MASK
    }
}

/// Every header field a batch writer chooses; `batchLength`, magic and the CRC follow from the
/// bytes ([`write_header`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderFields {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

/// Writes the header of `batch` (a whole batch whose records follow byte [`HEADER_BYTES`]):
/// every field, `batchLength` from the slice's length, magic 2, then the CRC over the records.
/// Panics when `batch` is shorter than the header (a caller's bug, never client input).
pub fn write_header(batch: &mut [u8], fields: &HeaderFields) {
    assert!(
        batch.len() >= HEADER_BYTES,
        "a batch holds its 61-byte header"
    );
    let length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
    batch[field::BASE_OFFSET].copy_from_slice(&fields.base_offset.to_be_bytes());
    batch[field::BATCH_LENGTH].copy_from_slice(&length.to_be_bytes());
    batch[field::PARTITION_LEADER_EPOCH]
        .copy_from_slice(&fields.partition_leader_epoch.to_be_bytes());
    batch[field::MAGIC] = MAGIC_V2 as u8;
    batch[field::ATTRIBUTES].copy_from_slice(&fields.attributes.to_be_bytes());
    batch[field::LAST_OFFSET_DELTA].copy_from_slice(&fields.last_offset_delta.to_be_bytes());
    batch[field::FIRST_TIMESTAMP].copy_from_slice(&fields.first_timestamp.to_be_bytes());
    batch[field::MAX_TIMESTAMP].copy_from_slice(&fields.max_timestamp.to_be_bytes());
    set_producer(
        batch,
        fields.producer_id,
        fields.producer_epoch,
        fields.base_sequence,
    );
    batch[field::RECORD_COUNT].copy_from_slice(&fields.record_count.to_be_bytes());
    seal_crc(batch);
}

/// Overwrites the idempotent-producer fields (the CRC must be sealed again afterwards).
pub fn set_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    batch[field::PRODUCER_ID].copy_from_slice(&producer_id.to_be_bytes());
    batch[field::PRODUCER_EPOCH].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[field::BASE_SEQUENCE].copy_from_slice(&base_sequence.to_be_bytes());
}

/// Overwrites the attributes (the CRC must be sealed again afterwards).
pub fn set_attributes(batch: &mut [u8], attributes: i16) {
    batch[field::ATTRIBUTES].copy_from_slice(&attributes.to_be_bytes());
}

/// The CRC32C of a whole batch as it should be stored: over bytes 21..end.
#[inline]
pub fn computed_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_COVERED_FROM..])
}

/// Whether the stored CRC matches the bytes. Panics on fewer than [`HEADER_BYTES`] bytes.
#[inline]
pub fn crc_matches(batch: &[u8]) -> bool {
    Header(batch).stored_crc() == computed_crc(batch)
}

/// Computes the CRC over bytes 21..end and stores it in the header.
#[inline]
pub fn seal_crc(batch: &mut [u8]) {
    let crc = computed_crc(batch);
    batch[field::CRC].copy_from_slice(&crc.to_be_bytes());
}

/// `baseOffset` of a batch whose first 8 bytes are present.
#[inline]
pub fn base_offset(b: &[u8]) -> i64 {
    i64::from_be_bytes(array(b, field::BASE_OFFSET))
}

/// The raw `batchLength` field of the batch that starts at `b[0]`, or `None` when fewer than 12
/// bytes are present. Unchecked: it may be negative or smaller than a header.
#[inline]
pub fn batch_length_field(b: &[u8]) -> Option<i32> {
    let bytes = b.get(field::BATCH_LENGTH)?;
    Some(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Total size of the batch that starts at `b[0]` as its `batchLength` field claims, or `None` when
/// fewer than 12 bytes are present or the field is below the header size (zeros, garbage).
pub fn claimed_size(b: &[u8]) -> Option<usize> {
    let length = batch_length_field(b)?;
    if length < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
        return None;
    }
    Some(length as usize + LOG_OVERHEAD_BYTES)
}

/// Checks the header fields and the CRC32C over bytes 21..end of one whole batch.
pub fn validate(b: &[u8]) -> Result<BatchInfo, BatchError> {
    if b.len() < HEADER_BYTES {
        return Err(BatchError::Truncated(b.len()));
    }
    let header = Header(b);
    let magic = header.magic();
    if magic != MAGIC_V2 {
        return Err(BatchError::Magic(magic));
    }
    let length = header.batch_length();
    if length as i64 + LOG_OVERHEAD_BYTES as i64 != b.len() as i64 {
        return Err(BatchError::Length {
            field: length,
            actual: b.len(),
        });
    }
    let stored = header.stored_crc();
    let computed = computed_crc(b);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    let last_offset_delta = header.last_offset_delta();
    let record_count = header.record_count();
    if record_count < 1
        || last_offset_delta < 0
        || record_count as i64 != last_offset_delta as i64 + 1
    {
        return Err(BatchError::RecordCount {
            count: record_count,
            last_offset_delta,
        });
    }
    Ok(BatchInfo {
        last_offset_delta,
        first_timestamp: header.first_timestamp(),
        max_timestamp: header.max_timestamp(),
        producer_id: header.producer_id(),
        producer_epoch: header.producer_epoch(),
        base_sequence: header.base_sequence(),
        record_count,
        attributes: header.attributes(),
    })
}

/// Writes `baseOffset` (bytes 0..8); the CRC does not cover it.
pub fn set_base_offset(b: &mut [u8], base_offset: i64) {
    b[field::BASE_OFFSET].copy_from_slice(&base_offset.to_be_bytes());
}

/// One record for [`build_batch`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordSpec<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Added to the batch's `first_timestamp_ms` for this record.
    pub timestamp_delta_ms: i64,
}

/// Header fields for [`build_batch`]; `Default` is a non-idempotent producer at time 0.
#[derive(Clone, Copy, Debug)]
pub struct BatchSpec {
    pub base_offset: i64,
    pub first_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// Compression bits etc. The records are written uncompressed whatever this says.
    pub attributes: i16,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            base_offset: 0,
            first_timestamp_ms: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
        }
    }
}

fn put_varint(out: &mut BytesMut, value: i64) {
    // Zig-zag, then base-128 little-endian groups (protobuf style), as Kafka records use.
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn put_bytes(out: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.put_slice(b);
        }
    }
}

/// Bytes of a varint's encoding (zig-zag, 7 bits a byte), as `put_varint` writes it.
fn varint_len(value: i64) -> usize {
    let v = ((value << 1) ^ (value >> 63)) as u64;
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn bytes_len(bytes: Option<&[u8]>) -> usize {
    bytes.map_or(varint_len(-1), |b| varint_len(b.len() as i64) + b.len())
}

/// Bytes of one record after its length varint: what `build_batch` writes for it.
fn record_body_len((offset_delta, record): (usize, &RecordSpec<'_>)) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|(name, value)| bytes_len(Some(name.as_bytes())) + bytes_len(Some(value)))
        .sum();
    1 + varint_len(record.timestamp_delta_ms)
        + varint_len(offset_delta as i64)
        + bytes_len(record.key)
        + bytes_len(record.value)
        + varint_len(record.headers.len() as i64)
        + headers
}

/// Builds a valid, uncompressed RecordBatch v2 (records with varint fields, correct lengths and
/// CRC32C). For tests and benchmarks: the broker itself never builds batches on the produce path.
/// Panics when `records` is empty (a batch holds at least one record).
pub fn build_batch(spec: &BatchSpec, records: &[RecordSpec<'_>]) -> BytesMut {
    assert!(
        !records.is_empty(),
        "a record batch holds at least one record"
    );
    // Sized exactly up front: the AMQP publish path builds a batch per publish, and growing it
    // by reallocation was a visible share of the allocator's time (docs/benchmarks.md).
    // Each record's length once: it was a visible share of an AMQP run's storing when sized,
    // framed and written by three walks over its headers.
    let body_lens: Vec<usize> = records.iter().enumerate().map(record_body_len).collect();
    let bodies: usize = body_lens.iter().sum();
    let framing: usize = body_lens
        .iter()
        .map(|&body_len| varint_len(body_len as i64))
        .sum();
    let mut out = BytesMut::with_capacity(HEADER_BYTES + bodies + framing);
    // The header is written last, over these zeros, once the length and CRC are known.
    out.put_bytes(0, HEADER_BYTES);
    let max_delta = records
        .iter()
        .map(|r| r.timestamp_delta_ms)
        .max()
        .unwrap_or(0);
    let fields = HeaderFields {
        base_offset: spec.base_offset,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        attributes: spec.attributes,
        last_offset_delta: records.len() as i32 - 1,
        first_timestamp: spec.first_timestamp_ms,
        max_timestamp: spec.first_timestamp_ms + max_delta,
        producer_id: spec.producer_id,
        producer_epoch: spec.producer_epoch,
        base_sequence: spec.base_sequence,
        record_count: records.len() as i32,
    };
    for ((offset_delta, record), &body_len) in records.iter().enumerate().zip(&body_lens) {
        put_varint(&mut out, body_len as i64);
        out.put_i8(0); // record attributes
        put_varint(&mut out, record.timestamp_delta_ms);
        put_varint(&mut out, offset_delta as i64);
        put_bytes(&mut out, record.key);
        put_bytes(&mut out, record.value);
        put_varint(&mut out, record.headers.len() as i64);
        for (name, value) in record.headers {
            put_bytes(&mut out, Some(name.as_bytes()));
            put_bytes(&mut out, Some(value));
        }
    }
    assert_eq!(
        out.len(),
        HEADER_BYTES + bodies + framing,
        "record sizes computed exactly"
    );
    write_header(&mut out, &fields);
    out
}

/// A batch of `count` records, each holding `value`, for tests and benchmarks.
pub fn build_value_batch(spec: &BatchSpec, value: &[u8], count: usize) -> BytesMut {
    let record = RecordSpec {
        value: Some(value),
        ..RecordSpec::default()
    };
    let records = vec![record; count];
    build_batch(spec, &records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> BytesMut {
        let spec = BatchSpec {
            first_timestamp_ms: 1_000,
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 5,
            ..BatchSpec::default()
        };
        let headers: &[(&str, &[u8])] = &[("h", b"v")];
        build_batch(
            &spec,
            &[
                RecordSpec {
                    key: Some(b"k"),
                    value: Some(b"hello"),
                    headers,
                    timestamp_delta_ms: 0,
                },
                RecordSpec {
                    key: None,
                    value: Some(b"world"),
                    headers: &[],
                    timestamp_delta_ms: 9,
                },
            ],
        )
    }

    /// Every field written through `write_header` reads back through `Header` and `validate`,
    /// and the layout table's offsets are the ones written.
    #[test]
    fn header_fields_round_trip() {
        let fields = HeaderFields {
            base_offset: 0x0102_0304_0506_0708,
            partition_leader_epoch: 9,
            attributes: attributes::TRANSACTIONAL,
            last_offset_delta: 0,
            first_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_005,
            producer_id: 77,
            producer_epoch: 3,
            base_sequence: 41,
            record_count: 1,
        };
        let mut batch = vec![0u8; HEADER_BYTES + 7];
        write_header(&mut batch, &fields);
        let header = Header::new(&batch).expect("a whole header");
        let read = HeaderFields {
            base_offset: header.base_offset(),
            partition_leader_epoch: header.partition_leader_epoch(),
            attributes: header.attributes(),
            last_offset_delta: header.last_offset_delta(),
            first_timestamp: header.first_timestamp(),
            max_timestamp: header.max_timestamp(),
            producer_id: header.producer_id(),
            producer_epoch: header.producer_epoch(),
            base_sequence: header.base_sequence(),
            record_count: header.record_count(),
        };
        assert_eq!(read, fields);
        assert_eq!(header.batch_length(), (batch.len() - 12) as i32);
        assert_eq!(header.magic(), 2);
        assert!(crc_matches(&batch));
        assert_eq!(&batch[0..8], &fields.base_offset.to_be_bytes());
        assert_eq!(&batch[43..51], &77i64.to_be_bytes());
        assert_eq!(&batch[57..61], &1i32.to_be_bytes());
        assert_eq!(validate(&batch).map(|info| info.producer_id), Ok(77));
        set_producer(&mut batch, NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE);
        assert!(!crc_matches(&batch));
        seal_crc(&mut batch);
        assert_eq!(validate(&batch).map(|info| info.base_sequence), Ok(-1));
        assert!(Header::new(&batch[..60]).is_none());
        assert_eq!(batch_length_field(&batch[..11]), None);
    }

    fn recrc(b: &mut [u8]) {
        seal_crc(b);
    }

    fn check(
        name: &str,
        mutate: fn(&mut BytesMut),
        expect: fn(&Result<BatchInfo, BatchError>) -> bool,
    ) {
        let mut b = good();
        mutate(&mut b);
        let got = validate(&b);
        assert!(expect(&got), "{name}: got {got:?}");
    }

    type Case = (
        &'static str,
        fn(&mut BytesMut),
        fn(&Result<BatchInfo, BatchError>) -> bool,
    );

    fn check_all(cases: &[Case]) {
        for (name, mutate, expect) in cases {
            check(name, *mutate, *expect);
        }
    }

    /// Framing errors, and the header fields the CRC does not cover.
    #[test]
    fn framing_and_uncovered_fields() {
        check_all(&[
            ("good batch", |_| {}, |r| r.is_ok()),
            (
                "base offset is not covered",
                |b| set_base_offset(b, 99),
                |r| r.is_ok(),
            ),
            (
                "leader epoch is not covered",
                |b| b[12] = 0x55,
                |r| r.is_ok(),
            ),
            (
                "empty input",
                |b| b.truncate(0),
                |r| *r == Err(BatchError::Truncated(0)),
            ),
            (
                "truncated header",
                |b| b.truncate(60),
                |r| *r == Err(BatchError::Truncated(60)),
            ),
            (
                "truncated records",
                |b| b.truncate(70),
                |r| matches!(r, Err(BatchError::Length { .. })),
            ),
            (
                "trailing bytes",
                |b| b.extend_from_slice(&[0]),
                |r| matches!(r, Err(BatchError::Length { .. })),
            ),
            (
                "magic 1",
                |b| b[16] = 1,
                |r| *r == Err(BatchError::Magic(1)),
            ),
            (
                "length field",
                |b| b[11] ^= 1,
                |r| matches!(r, Err(BatchError::Length { .. })),
            ),
            (
                "negative length",
                |b| b[8] = 0xff,
                |r| matches!(r, Err(BatchError::Length { .. })),
            ),
        ]);
    }

    /// Every byte from the attributes to the end is covered by the CRC.
    #[test]
    fn the_crc_covers_everything_from_attributes_on() {
        check_all(&[
            (
                "crc field",
                |b| b[20] ^= 1,
                |r| matches!(r, Err(BatchError::Crc { .. })),
            ),
            (
                "attributes",
                |b| b[22] ^= 1,
                |r| matches!(r, Err(BatchError::Crc { .. })),
            ),
            (
                "last offset delta",
                |b| b[26] ^= 1,
                |r| matches!(r, Err(BatchError::Crc { .. })),
            ),
            (
                "max timestamp",
                |b| b[42] ^= 1,
                |r| matches!(r, Err(BatchError::Crc { .. })),
            ),
            (
                "producer id",
                |b| b[50] ^= 1,
                |r| matches!(r, Err(BatchError::Crc { .. })),
            ),
            (
                "record count",
                |b| b[60] ^= 1,
                |r| matches!(r, Err(BatchError::Crc { .. })),
            ),
            (
                "payload byte",
                |b| {
                    let n = b.len() - 1;
                    b[n] ^= 0x80
                },
                |r| matches!(r, Err(BatchError::Crc { .. })),
            ),
        ]);
    }

    /// The record count and last offset delta must agree, even under a valid CRC.
    #[test]
    fn record_count_must_match_the_offset_delta() {
        check_all(&[
            (
                "count vs delta with valid crc",
                |b| {
                    b[60] = 3;
                    recrc(b)
                },
                |r| {
                    matches!(
                        r,
                        Err(BatchError::RecordCount {
                            count: 3,
                            last_offset_delta: 1
                        })
                    )
                },
            ),
            (
                "zero records with valid crc",
                |b| {
                    b[23..27].copy_from_slice(&(-1i32).to_be_bytes());
                    b[57..61].copy_from_slice(&0i32.to_be_bytes());
                    recrc(b)
                },
                |r| matches!(r, Err(BatchError::RecordCount { .. })),
            ),
        ]);
    }

    #[test]
    fn fields_are_reported() {
        let info = validate(&good()).unwrap();
        assert_eq!(info.last_offset_delta, 1);
        assert_eq!(info.record_count, 2);
        assert_eq!(info.first_timestamp, 1_000);
        assert_eq!(info.max_timestamp, 1_009);
        assert_eq!(info.producer_id, 7);
        assert_eq!(info.producer_epoch, 1);
        assert_eq!(info.base_sequence, 5);
    }

    #[test]
    fn claimed_size_rejects_zeros_and_short_input() {
        let b = good();
        assert_eq!(claimed_size(&b), Some(b.len()));
        assert_eq!(claimed_size(&[0u8; 64]), None);
        assert_eq!(claimed_size(&b[..11]), None);
    }

    #[test]
    fn varints_match_kafka_encoding() {
        let mut out = BytesMut::new();
        for (v, want) in [
            (0i64, &[0u8][..]),
            (-1, &[1]),
            (1, &[2]),
            (63, &[126]),
            (64, &[0x80, 1]),
            (-65, &[0x81, 1]),
        ] {
            out.clear();
            put_varint(&mut out, v);
            assert_eq!(&out[..], want, "varint {v}");
        }
    }

    #[test]
    fn varint_lengths_are_what_put_varint_writes() {
        let mut out = BytesMut::new();
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            i64::MAX,
            i64::MIN,
            1 << 40,
        ] {
            out.clear();
            put_varint(&mut out, v);
            assert_eq!(varint_len(v), out.len(), "varint {v}");
        }
    }
}
