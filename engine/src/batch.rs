//! RecordBatch v2 header parsing and validation (the only place that knows the layout).
//! Stand-in: the real checks (every header field, CRC32C over bytes 21..end) come with the engine.

pub const HEADER_BYTES: usize = 61;

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

pub fn validate(b: &[u8]) -> Result<BatchInfo, BatchError> {
    if b.len() < HEADER_BYTES {
        return Err(BatchError::Truncated(b.len()));
    }
    let magic = b[16] as i8;
    if magic != 2 {
        return Err(BatchError::Magic(magic));
    }
    let length = be_i32(b, 8);
    if length as i64 + 12 != b.len() as i64 {
        return Err(BatchError::Length { field: length, actual: b.len() });
    }
    let stored = u32::from_be_bytes([b[17], b[18], b[19], b[20]]);
    let computed = crc32c::crc32c(&b[21..]);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    let last_offset_delta = be_i32(b, 23);
    let record_count = be_i32(b, 57);
    if record_count != last_offset_delta + 1 {
        return Err(BatchError::RecordCount { count: record_count, last_offset_delta });
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
