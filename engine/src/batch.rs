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

use bytes::{BufMut, BytesMut};

pub const HEADER_BYTES: usize = 61;
/// Bytes before `batchLength` counts from: baseOffset + batchLength.
pub const LOG_OVERHEAD_BYTES: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const CRC_FROM: usize = 21;

const _: () = assert!(HEADER_BYTES == 57 + 4);
const _: () = assert!(CRC_FROM == CRC_AT + 4);

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

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// `baseOffset` of a batch whose first 8 bytes are present.
pub fn base_offset(b: &[u8]) -> i64 {
    be_i64(b, 0)
}

/// Total size of the batch that starts at `b[0]` as its `batchLength` field claims, or `None` when
/// fewer than 12 bytes are present or the field is below the header size (zeros, garbage).
pub fn claimed_size(b: &[u8]) -> Option<usize> {
    if b.len() < LOG_OVERHEAD_BYTES {
        return None;
    }
    let length = be_i32(b, 8);
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
    let magic = b[MAGIC_AT] as i8;
    if magic != 2 {
        return Err(BatchError::Magic(magic));
    }
    let length = be_i32(b, 8);
    if length as i64 + LOG_OVERHEAD_BYTES as i64 != b.len() as i64 {
        return Err(BatchError::Length {
            field: length,
            actual: b.len(),
        });
    }
    let stored = u32::from_be_bytes([b[CRC_AT], b[CRC_AT + 1], b[CRC_AT + 2], b[CRC_AT + 3]]);
    let computed = crc32c::crc32c(&b[CRC_FROM..]);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    let last_offset_delta = be_i32(b, 23);
    let record_count = be_i32(b, 57);
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
        first_timestamp: be_i64(b, 27),
        max_timestamp: be_i64(b, 35),
        producer_id: be_i64(b, 43),
        producer_epoch: i16::from_be_bytes([b[51], b[52]]),
        base_sequence: be_i32(b, 53),
        record_count,
        attributes: i16::from_be_bytes([b[21], b[22]]),
    })
}

/// Writes `baseOffset` (bytes 0..8); the CRC does not cover it.
pub fn set_base_offset(b: &mut [u8], base_offset: i64) {
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
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

/// Builds a valid, uncompressed RecordBatch v2 (records with varint fields, correct lengths and
/// CRC32C). For tests and benchmarks: the broker itself never builds batches on the produce path.
/// Panics when `records` is empty (a batch holds at least one record).
pub fn build_batch(spec: &BatchSpec, records: &[RecordSpec<'_>]) -> BytesMut {
    assert!(
        !records.is_empty(),
        "a record batch holds at least one record"
    );
    let mut out = BytesMut::with_capacity(HEADER_BYTES + records.len() * 32);
    out.put_i64(spec.base_offset);
    out.put_i32(0); // batchLength, patched below
    out.put_i32(-1); // partitionLeaderEpoch
    out.put_i8(2);
    out.put_u32(0); // crc, patched below
    out.put_i16(spec.attributes);
    out.put_i32(records.len() as i32 - 1);
    out.put_i64(spec.first_timestamp_ms);
    let max_delta = records
        .iter()
        .map(|r| r.timestamp_delta_ms)
        .max()
        .unwrap_or(0);
    out.put_i64(spec.first_timestamp_ms + max_delta);
    out.put_i64(spec.producer_id);
    out.put_i16(spec.producer_epoch);
    out.put_i32(spec.base_sequence);
    out.put_i32(records.len() as i32);
    let mut body = BytesMut::new();
    for (offset_delta, record) in records.iter().enumerate() {
        body.clear();
        body.put_i8(0); // record attributes
        put_varint(&mut body, record.timestamp_delta_ms);
        put_varint(&mut body, offset_delta as i64);
        put_bytes(&mut body, record.key);
        put_bytes(&mut body, record.value);
        put_varint(&mut body, record.headers.len() as i64);
        for (name, value) in record.headers {
            put_bytes(&mut body, Some(name.as_bytes()));
            put_bytes(&mut body, Some(value));
        }
        put_varint(&mut out, body.len() as i64);
        out.put_slice(&body);
    }
    let length = (out.len() - LOG_OVERHEAD_BYTES) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_FROM..]);
    out[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
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

    fn recrc(b: &mut [u8]) {
        let crc = crc32c::crc32c(&b[CRC_FROM..]);
        b[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
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

    #[test]
    fn header_checks_table() {
        type Case = (
            &'static str,
            fn(&mut BytesMut),
            fn(&Result<BatchInfo, BatchError>) -> bool,
        );
        let cases: &[Case] = &[
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
        ];
        for (name, mutate, expect) in cases {
            check(name, *mutate, *expect);
        }
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
}
