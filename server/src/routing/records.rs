//! Splitting the record batches produced to an exchange into one batch per destination
//! partition: assign each record its destinations, regroup, re-encode with fresh offsets and CRCs.
//!
//! Pure: runs on the shard that received the produce request, before anything is sent to the
//! shards owning the destinations; no I/O, no shared state. Only used when the route depends on
//! record keys or headers (see `RoutingTable::key_independent_route`); otherwise batches are
//! forwarded untouched and this code never runs.
//!
//! Two paths, chosen per produced `records` field:
//! - **raw** (every batch uncompressed with create-time timestamps: what producers send unless
//!   compression is configured): records are scanned in place, never decoded into `Record`s.
//!   Each record's key and headers are slices of the produced bytes; routes are memoized per
//!   distinct key (keys repeat within a batch); a destination's batch is the raw record bytes
//!   copied behind a fresh header, with only the record length, timestamp delta and offset delta
//!   varints rewritten, and one CRC32C per output batch. All output batches share one buffer.
//!   Nothing is allocated per record.
//! - **decoded** (any compressed or log-append-time batch): kafka-protocol decodes (through
//!   bounded decompression), regroups `Record`s and re-encodes them with the source codec.
//!
//! Batches are client input: every length and count is checked before anything is allocated for
//! it, and any malformation is an error for the produce response, never a panic.
//!
//! What a routed record keeps and loses:
//! - kept: key, value, headers (the raw path keeps even repeated header names byte for byte),
//!   timestamp; the source batch's compression codec.
//! - renumbered: offsets start at 0 in each output batch (the destination log assigns real ones);
//!   the base timestamp is the first routed record's (raw path) or the smallest (decoded path).
//! - dropped: producer id, epoch and sequence (the idempotence of a produce to an exchange is
//!   the exchange's, not the destination's: a destination partition receives records from many
//!   producers through one router, so per-producer sequences would be meaningless there);
//!   transactional flags; control records (transaction markers are never routed).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash};

use bytes::{Bytes, BytesMut};

use super::decompress;
use super::exchange::RoutingErrorKind;
use crate::integer_hash::IntegerHasher;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use weir_engine::batch::{self as batch_header, attributes, Header, HeaderFields};

/// Bytes of a RecordBatch v2 header, up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = batch_header::HEADER_BYTES;
/// Most records accepted in one produced batch on the routing path: bounds what one batch can
/// make the decoder allocate.
pub const RECORDS_PER_BATCH_MAX: usize = 1 << 18;
/// Smallest encoded v2 record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
const RECORD_BYTES_MIN: usize = 7;
/// Distinct keys whose routes are remembered per produce: bounds the memo (and what colliding
/// keys could cost) when keys are unique.
const MEMO_KEYS_MAX: usize = 1024;
/// Records routed before the memo judges itself: with no hit by then, keys are taken to be
/// unique and the memo is switched off for the rest of the produce (it would only cost).
const MEMO_TRIAL_RECORDS: u32 = 256;

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
    /// The kind of refusal a produce response reports for this partition.
    pub fn kind(&self) -> RoutingErrorKind {
        match self {
            RecordsError::Malformed { .. } => RoutingErrorKind::CorruptRecords,
            RecordsError::TooManyRecords { .. } => RoutingErrorKind::TooManyRecords,
            RecordsError::Encode { .. } => RoutingErrorKind::Internal,
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

/// Whether the destinations `assign` gave may be reused for a later record of the same produce
/// with the same key and no headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// The destinations depend only on the key and headers.
    ByKey,
    /// They may differ (e.g. a keyless record's round-robin partition).
    Never,
}

/// A record's header list as `route` takes it.
pub type Headers<'h> = [(&'h str, Option<&'h [u8]>)];

/// Splits every batch in `records` per destination. `assign` gets each data record's key and
/// headers and pushes its destinations (duplicates are ignored); the result holds one batch per
/// destination with that destination's records in produce order.
pub fn split_records<D, F>(records: &Bytes, assign: F) -> Result<SplitRecords<D>, RecordsError>
where
    D: Ord + Hash + Clone,
    F: FnMut(Option<&[u8]>, &Headers<'_>, &mut Vec<D>) -> Reuse,
{
    if raw_path_applies(records)? {
        split_raw(records, assign)
    } else {
        split_decoded(records, assign)
    }
}

/// True if every batch is uncompressed with create-time timestamps (checks every header).
fn raw_path_applies(records: &[u8]) -> Result<bool, RecordsError> {
    let mut raw = true;
    let mut at = 0usize;
    while at < records.len() {
        let length = check_batch_header(records, at)?;
        let header = Header::new(&records[at..]).ok_or(RecordsError::Malformed {
            at,
            reason: "header".to_string(),
        })?;
        if !header.is_control()
            && header.attributes() & (attributes::COMPRESSION_MASK | attributes::LOG_APPEND_TIME)
                != 0
        {
            raw = false;
        }
        at += length;
    }
    Ok(raw)
}

/// The whole batch starting at `at` and its header, once its header ([`check_batch_header`]) and
/// its CRC32C are checked.
pub(crate) fn checked_batch(
    records: &[u8],
    at: usize,
) -> Result<(&[u8], Header<'_>), RecordsError> {
    let malformed = |reason: &str| RecordsError::Malformed {
        at,
        reason: reason.to_string(),
    };
    let length = check_batch_header(records, at)?;
    let batch = &records[at..at + length];
    if !batch_header::crc_matches(batch) {
        return Err(malformed("CRC32C mismatch"));
    }
    let header = Header::new(batch).ok_or_else(|| malformed("header"))?;
    Ok((batch, header))
}

/// Checks the header of the batch starting at `at` and returns its total length in bytes.
pub(crate) fn check_batch_header(records: &[u8], at: usize) -> Result<usize, RecordsError> {
    let malformed = |reason: String| RecordsError::Malformed { at, reason };
    let header = records
        .get(at..)
        .and_then(Header::new)
        .ok_or_else(|| malformed(format!("fewer than {BATCH_HEADER_BYTES} bytes left")))?;
    let batch_length = header.batch_length();
    let magic = header.magic();
    if magic != batch_header::MAGIC_V2 {
        return Err(malformed(format!(
            "magic {magic}: only RecordBatch v2 is accepted"
        )));
    }
    let total = usize::try_from(batch_length)
        .ok()
        .and_then(|length| length.checked_add(batch_header::LOG_OVERHEAD_BYTES))
        .filter(|total| *total >= BATCH_HEADER_BYTES)
        .ok_or_else(|| malformed(format!("batch length {batch_length}")))?;
    if records.len() - at < total {
        return Err(malformed(format!(
            "batch length {batch_length} runs past the end of the records"
        )));
    }
    let record_count = header.record_count();
    let count = usize::try_from(record_count)
        .map_err(|_| malformed(format!("record count {record_count}")))?;
    if count > RECORDS_PER_BATCH_MAX {
        return Err(RecordsError::TooManyRecords {
            at,
            count: i64::from(record_count),
        });
    }
    let compressed = header.compression() != 0;
    if !compressed && count * RECORD_BYTES_MIN > total - BATCH_HEADER_BYTES {
        return Err(malformed(format!(
            "{count} records cannot fit in {} bytes",
            total - BATCH_HEADER_BYTES
        )));
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Raw path.
//
// A v2 record, every integer a zigzag varint (varlong for the timestamp delta):
//
//   length | attributes (1 byte) | timestampDelta | offsetDelta | keyLength | key |
//   valueLength | value | headerCount | (headerKeyLength headerKey headerValueLength headerValue)*
//   ^ rewritten      ^ copied       ^ rewritten     ^ rewritten   ^-- copied verbatim ("tail") --^
//
// Pass 1 scans and checks every record, routes it and sizes each output batch; pass 2 writes
// every output batch into one buffer, which is then cut into `Bytes` without copying.
// ---------------------------------------------------------------------------------------------

/// One routed record, located in the produced bytes.
#[derive(Debug, Clone, Copy)]
struct Placed {
    /// Offset of the attributes byte.
    attributes: usize,
    /// Offset of the key length (start of the verbatim tail).
    tail: usize,
    /// One past the record's last byte.
    end: usize,
    timestamp: i64,
}

/// An output batch being sized (pass 1) and then written (pass 2).
#[derive(Debug)]
struct Output<D> {
    destination: D,
    records: u32,
    base_timestamp: i64,
    max_timestamp: i64,
    /// Bytes of the records section.
    bytes: usize,
}

/// Bytes of one record as written into an output batch, and its rewritten deltas.
fn rewritten_record(placed: &Placed, output: &Output<impl Sized>) -> Option<(usize, i64, i64)> {
    let timestamp_delta = placed.timestamp.checked_sub(output.base_timestamp)?;
    let offset_delta = i64::from(output.records);
    let body =
        1 + varint_bytes(timestamp_delta) + varint_bytes(offset_delta) + (placed.end - placed.tail);
    let body = i64::try_from(body)
        .ok()
        .filter(|body| *body <= i64::from(i32::MAX))?;
    let total = usize::try_from(body).ok()? + varint_bytes(body);
    Some((total, body, timestamp_delta))
}

#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
fn split_raw<D, F>(records: &Bytes, mut assign: F) -> Result<SplitRecords<D>, RecordsError>
where
    D: Ord + Hash + Clone,
    F: FnMut(Option<&[u8]>, &Headers<'_>, &mut Vec<D>) -> Reuse,
{
    let mut outputs: Vec<Output<D>> = Vec::new();
    let mut output_index: HashMap<D, u32, FastHash> = HashMap::default();
    let mut placed: Vec<Placed> = Vec::new();
    // Per output batch, the indices in `placed` of its records, in produce order.
    let mut members: Vec<Vec<u32>> = Vec::new();
    let mut targets: Vec<u32> = Vec::new();
    let mut memo: HashMap<&[u8], (u32, u32), FastHash> = HashMap::default();
    let mut memo_on = true;
    let mut memo_hits = 0u32;
    let mut memo_misses = 0u32;
    let mut destinations: Vec<D> = Vec::new();
    let mut headers: Vec<(&str, Option<&[u8]>)> = Vec::new();
    let mut routed = 0u64;
    let mut unroutable = 0u64;
    let mut at = 0usize;
    while at < records.len() {
        let (batch, header) = checked_batch(records, at)?;
        let batch_bytes = batch.len();
        let malformed = |reason: &str| RecordsError::Malformed {
            at,
            reason: reason.to_string(),
        };
        if header.is_control() {
            at += batch_bytes;
            continue;
        }
        let base_timestamp = header.first_timestamp();
        // check_batch_header checked the count: 0..=RECORDS_PER_BATCH_MAX.
        let record_count = header.record_count() as usize;
        let mut cursor = at + BATCH_HEADER_BYTES;
        let batch_end = at + batch_bytes;
        for _ in 0..record_count {
            let record = scan_record(records, cursor, batch_end).map_err(|reason| {
                RecordsError::Malformed {
                    at: cursor,
                    reason: reason.to_string(),
                }
            })?;
            cursor = record.end;
            let timestamp = base_timestamp
                .checked_add(record.timestamp_delta)
                .ok_or_else(|| malformed("timestamp delta overflows"))?;
            // Memoized: the same key without headers goes where it went before.
            let memo_key = record.key.filter(|_| memo_on && record.header_count == 0);
            let remembered = memo_key.and_then(|key| memo.get(key).copied());
            if memo_key.is_some() {
                if remembered.is_some() {
                    memo_hits += 1;
                } else {
                    memo_misses += 1;
                    if memo_hits == 0 && memo_misses >= MEMO_TRIAL_RECORDS {
                        memo_on = false;
                        memo = HashMap::default();
                    }
                }
            }
            let range = match remembered {
                Some(range) => range,
                None => {
                    headers.clear();
                    for header in HeaderIter::new(record.headers, record.header_count) {
                        headers.push(header);
                    }
                    destinations.clear();
                    let reuse = assign(record.key, &headers, &mut destinations);
                    destinations.sort_unstable();
                    destinations.dedup();
                    let start = targets.len() as u32;
                    for destination in destinations.drain(..) {
                        let index = match output_index.get(&destination) {
                            Some(index) => *index,
                            None => {
                                let index = outputs.len() as u32;
                                output_index.insert(destination.clone(), index);
                                members.push(Vec::new());
                                outputs.push(Output {
                                    destination,
                                    records: 0,
                                    base_timestamp: 0,
                                    max_timestamp: i64::MIN,
                                    bytes: 0,
                                });
                                index
                            }
                        };
                        targets.push(index);
                    }
                    let range = (start, targets.len() as u32 - start);
                    if let Some(key) = memo_key.filter(|_| memo_on) {
                        if reuse == Reuse::ByKey && memo.len() < MEMO_KEYS_MAX {
                            memo.insert(key, range);
                        }
                    }
                    range
                }
            };
            if range.1 == 0 {
                unroutable += 1;
                continue;
            }
            routed += 1;
            let entry = Placed {
                attributes: record.attributes,
                tail: record.tail,
                end: record.end,
                timestamp,
            };
            for &index in &targets[range.0 as usize..(range.0 + range.1) as usize] {
                let output = &mut outputs[index as usize];
                if output.records == 0 {
                    output.base_timestamp = timestamp;
                }
                let (bytes, _, _) = rewritten_record(&entry, output)
                    .ok_or_else(|| malformed("timestamps or record too far apart to re-encode"))?;
                output.bytes += bytes;
                output.records += 1;
                output.max_timestamp = output.max_timestamp.max(timestamp);
                members[index as usize].push(placed.len() as u32);
            }
            placed.push(entry);
        }
        if cursor != batch_end {
            return Err(malformed("bytes left after the last record"));
        }
        at += batch_bytes;
    }
    let batches = write_outputs(records, &placed, &members, outputs)?;
    Ok(SplitRecords {
        batches,
        routed,
        unroutable,
    })
}

/// Pass 2: writes every output batch (header, rewritten records, CRC) one after the other into
/// one buffer and cuts it into one `Bytes` per destination, in destination order.
fn write_outputs<D: Ord>(
    records: &[u8],
    placed: &[Placed],
    members: &[Vec<u32>],
    mut outputs: Vec<Output<D>>,
) -> Result<Vec<(D, Bytes)>, RecordsError> {
    let too_large = || RecordsError::Encode {
        reason: "a routed batch exceeds 2 GiB".to_string(),
    };
    let mut total = 0usize;
    for output in &outputs {
        let batch = BATCH_HEADER_BYTES + output.bytes;
        i32::try_from(batch - 12).map_err(|_| too_large())?;
        total += batch;
    }
    let mut buffer = BytesMut::with_capacity(total);
    let mut ranges = Vec::with_capacity(outputs.len());
    // Varints of one record's length, timestamp delta and offset delta, plus its attributes.
    let mut prefix = [0u8; 5 + 1 + 10 + 5];
    for (output, members) in outputs.iter_mut().zip(members) {
        let start = buffer.len();
        buffer.extend_from_slice(&[0u8; BATCH_HEADER_BYTES]);
        let count = output.records;
        for (offset_delta, &member) in members.iter().enumerate() {
            let entry = &placed[member as usize];
            output.records = offset_delta as u32;
            let (_, body, timestamp_delta) =
                rewritten_record(entry, output).ok_or_else(too_large)?;
            let mut position = write_varint(&mut prefix, 0, body);
            prefix[position] = records[entry.attributes];
            position += 1;
            position = write_varint(&mut prefix, position, timestamp_delta);
            position = write_varint(&mut prefix, position, offset_delta as i64);
            buffer.extend_from_slice(&prefix[..position]);
            buffer.extend_from_slice(&records[entry.tail..entry.end]);
        }
        output.records = count;
        assert_eq!(buffer.len(), start + BATCH_HEADER_BYTES + output.bytes);
        write_batch_header(&mut buffer[start..], output);
        ranges.push(start..buffer.len());
    }
    let buffer = buffer.freeze();
    let mut batches: Vec<(D, Bytes)> = outputs
        .into_iter()
        .zip(ranges)
        .map(|(output, range)| (output.destination, buffer.slice(range)))
        .collect();
    batches.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(batches)
}

/// The integer maps' multiply hash (`integer_hash.rs`) for the short keys and names hashed per
/// routed record: much cheaper than SipHash. It has no seed, so a producer could choose keys
/// that collide; `MEMO_KEYS_MAX` bounds what that costs, and only its own batch pays.
type FastHash = BuildHasherDefault<IntegerHasher>;

/// Fills the 61-byte header of an output batch whose records are written, then its CRC.
fn write_batch_header<D>(batch: &mut [u8], output: &Output<D>) {
    assert!(
        output.records > 0,
        "an output batch holds at least one record"
    );
    let fields = HeaderFields {
        base_offset: 0, // the log assigns it
        partition_leader_epoch: batch_header::NO_PARTITION_LEADER_EPOCH,
        attributes: 0, // uncompressed, create time, plain
        last_offset_delta: output.records as i32 - 1,
        first_timestamp: output.base_timestamp,
        max_timestamp: output.max_timestamp,
        producer_id: batch_header::NO_PRODUCER_ID,
        producer_epoch: batch_header::NO_PRODUCER_EPOCH,
        base_sequence: batch_header::NO_SEQUENCE,
        record_count: output.records as i32,
    };
    batch_header::write_header(batch, &fields);
}

/// One record found by `scan_record`, as offsets into the produced bytes.
#[derive(Debug, Clone, Copy)]
struct ScannedRecord<'a> {
    attributes: usize,
    timestamp_delta: i64,
    tail: usize,
    key: Option<&'a [u8]>,
    /// Raw header section after the header count.
    headers: &'a [u8],
    header_count: u32,
    end: usize,
}

/// Scans and fully checks the record starting at `at` (which must end by `limit`).
fn scan_record(bytes: &[u8], at: usize, limit: usize) -> Result<ScannedRecord<'_>, &'static str> {
    let bytes = &bytes[..limit];
    let (length, mut position) = read_varint(bytes, at, 5).ok_or("bad record length")?;
    let length = usize::try_from(length).map_err(|_| "negative record length")?;
    let end = position
        .checked_add(length)
        .filter(|end| *end <= limit)
        .ok_or("record runs past its batch")?;
    let body = &bytes[..end];
    let attributes = position;
    if position >= end {
        return Err("record has no attributes");
    }
    position += 1;
    let (timestamp_delta, next) = read_varint(body, position, 10).ok_or("bad timestamp delta")?;
    let (_, next) = read_varint(body, next, 5).ok_or("bad offset delta")?;
    let tail = next;
    let (key, next) = read_bytes(body, next).ok_or("bad key")?;
    let (_, next) = read_bytes(body, next).ok_or("bad value")?;
    let (header_count, next) = read_varint(body, next, 5).ok_or("bad header count")?;
    let header_count = u32::try_from(header_count).map_err(|_| "negative header count")?;
    let headers = &body[next..];
    let mut position = next;
    for _ in 0..header_count {
        let (name, after) = read_bytes(body, position).ok_or("bad header name")?;
        let name = name.ok_or("null header name")?;
        std::str::from_utf8(name).map_err(|_| "header name is not UTF-8")?;
        let (_, after) = read_bytes(body, after).ok_or("bad header value")?;
        position = after;
    }
    if position != end {
        return Err("record length disagrees with its fields");
    }
    Ok(ScannedRecord {
        attributes,
        timestamp_delta,
        tail,
        key,
        headers,
        header_count,
        end,
    })
}

/// Iterates a header section `scan_record` has checked (stops early on anything malformed).
struct HeaderIter<'a> {
    bytes: &'a [u8],
    position: usize,
    left: u32,
}

impl<'a> HeaderIter<'a> {
    fn new(bytes: &'a [u8], count: u32) -> HeaderIter<'a> {
        HeaderIter {
            bytes,
            position: 0,
            left: count,
        }
    }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (name, after) = read_bytes(self.bytes, self.position)?;
        let name = std::str::from_utf8(name?).ok()?;
        let (value, after) = read_bytes(self.bytes, after)?;
        self.position = after;
        Some((name, value))
    }
}

/// Reads a zigzag varint of at most `max_bytes` bytes at `at`; returns it and the next offset.
fn read_varint(bytes: &[u8], at: usize, max_bytes: usize) -> Option<(i64, usize)> {
    let mut value = 0u64;
    for index in 0..max_bytes {
        let byte = *bytes.get(at + index)?;
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            if max_bytes <= 5 && i32::try_from(decoded).is_err() {
                return None;
            }
            return Some((decoded, at + index + 1));
        }
    }
    None
}

/// Reads a length-prefixed byte string (-1: null).
fn read_bytes(bytes: &[u8], at: usize) -> Option<(Option<&[u8]>, usize)> {
    let (length, at) = read_varint(bytes, at, 5)?;
    if length == -1 {
        return Some((None, at));
    }
    let length = usize::try_from(length).ok()?;
    let end = at.checked_add(length)?;
    Some((Some(bytes.get(at..end)?), end))
}

/// Encoded size of `value` as a zigzag varint.
fn varint_bytes(value: i64) -> usize {
    let zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let bits = 64 - (zigzag | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Writes `value` as a zigzag varint at `at`; returns the next offset.
fn write_varint(out: &mut [u8], mut at: usize, value: i64) -> usize {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out[at] = (zigzag as u8) | 0x80;
        zigzag >>= 7;
        at += 1;
    }
    out[at] = zigzag as u8;
    at + 1
}

// ---------------------------------------------------------------------------------------------
// Decoded path (compressed or log-append-time batches).
// ---------------------------------------------------------------------------------------------

fn split_decoded<D, F>(records: &Bytes, mut assign: F) -> Result<SplitRecords<D>, RecordsError>
where
    D: Ord + Clone,
    F: FnMut(Option<&[u8]>, &Headers<'_>, &mut Vec<D>) -> Reuse,
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
            {
                let headers: Vec<(&str, Option<&[u8]>)> = record
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_deref()))
                    .collect();
                assign(record.key.as_deref(), &headers, &mut destinations);
            }
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

/// Clears what belonged to the producer's session with the exchange, not to the record.
fn strip_producer_state(record: &mut Record) {
    record.transactional = false;
    record.control = false;
    record.delete_horizon = false;
    record.partition_leader_epoch = batch_header::NO_PARTITION_LEADER_EPOCH;
    record.producer_id = batch_header::NO_PRODUCER_ID;
    record.producer_epoch = batch_header::NO_PRODUCER_EPOCH;
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
    use weir_engine::batch::field;

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
    fn by_key(key: Option<&[u8]>, _headers: &Headers<'_>, destinations: &mut Vec<u32>) -> Reuse {
        let key = key.unwrap_or_default();
        if key.starts_with(b"a") {
            destinations.push(1);
        }
        if key.starts_with(b"b") || key.starts_with(b"ab") {
            destinations.push(2);
            destinations.push(2);
        }
        Reuse::ByKey
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
        assert_eq!(&batch[field::BASE_SEQUENCE], &(-1i32).to_be_bytes());
        assert!(batch_header::crc_matches(batch));
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
        bad_magic[field::MAGIC] = 1;
        cases.push(("magic 1", bad_magic));
        let mut negative_length = good.to_vec();
        negative_length[field::BATCH_LENGTH].copy_from_slice(&(-5i32).to_be_bytes());
        cases.push(("negative length", negative_length));
        let mut huge_count = good.to_vec();
        huge_count[field::RECORD_COUNT].copy_from_slice(&i32::MAX.to_be_bytes());
        cases.push(("huge record count", huge_count));
        let mut count_past_bytes = good.to_vec();
        count_past_bytes[field::RECORD_COUNT].copy_from_slice(&1000i32.to_be_bytes());
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
        proptest!(|(flips in prop::collection::vec((batch_header::CRC_COVERED_FROM..good.len(), any::<u8>()), 1..4))| {
            let mut bytes = good.to_vec();
            for (index, value) in flips {
                bytes[index] = value;
            }
            batch_header::seal_crc(&mut bytes);
            let _ = split_records(&Bytes::from(bytes), by_key);
        });
    }

    /// Routes by key and the `to` header: a key's first byte picks 0..3 (`c…` goes nowhere,
    /// keyless records go to 9); a `to` header adds its first byte.
    fn by_key_and_header(
        key: Option<&[u8]>,
        headers: &Headers<'_>,
        destinations: &mut Vec<u8>,
    ) -> Reuse {
        match key {
            None => destinations.push(9),
            Some([b'c', ..]) => {}
            Some(key) => destinations.push(key.first().copied().unwrap_or(0) % 4),
        }
        for (name, value) in headers {
            if *name == "to" {
                destinations.push(value.and_then(|v| v.first().copied()).unwrap_or(7));
            }
        }
        Reuse::ByKey
    }

    fn decode_all(batch: &Bytes) -> Vec<Record> {
        let mut bytes = batch.clone();
        let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap();
        assert!(bytes.is_empty());
        sets.into_iter().flat_map(|set| set.records).collect()
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn key() -> impl Strategy<Value = Option<Vec<u8>>> {
            prop_oneof![
                Just(None),
                Just(Some(Vec::new())),
                prop::sample::select(vec!["a.x", "b.y", "c.z", "ab", "ba"])
                    .prop_map(|key| Some(key.as_bytes().to_vec())),
                prop::collection::vec(any::<u8>(), 0..20).prop_map(Some),
            ]
        }

        fn headers() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
            // kafka-protocol keeps headers in a map: names are unique here so that both paths
            // can be compared record for record.
            prop::collection::btree_map(
                prop::sample::select(vec!["to", "h", "name", "é"]),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..4)),
                0..3,
            )
            .prop_map(|map| {
                map.into_iter()
                    .map(|(name, value)| (name.to_string(), value))
                    .collect()
            })
        }

        prop_compose! {
            fn any_record()(
                key in key(),
                value in prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
                headers in headers(),
                timestamp in -1_000_000_000_000i64..4_000_000_000_000,
            ) -> Record {
                let mut record = record(0, None, "", &[]);
                record.key = key.map(Bytes::from);
                record.value = value.map(Bytes::from);
                record.timestamp = timestamp;
                for (name, value) in headers {
                    record.headers.insert(name.into(), value.map(Bytes::from));
                }
                record
            }
        }

        /// Batches as producers send them: offsets 0..n, one producer sequence per batch.
        fn produced_batches(batches: &[Vec<Record>]) -> Bytes {
            let mut records = BytesMut::new();
            for batch in batches {
                let batch: Vec<Record> = batch
                    .iter()
                    .enumerate()
                    .map(|(index, record)| Record {
                        offset: index as i64,
                        sequence: 100 + index as i32,
                        ..record.clone()
                    })
                    .collect();
                records.extend_from_slice(&produced(&batch, Compression::None));
            }
            records.freeze()
        }

        proptest! {
            /// The raw path and kafka-protocol's decode/encode give the same records per
            /// destination (checked with kafka-protocol's decoder, the independent side).
            #[test]
            fn raw_path_agrees_with_the_decoder(
                batches in prop::collection::vec(prop::collection::vec(any_record(), 1..40), 1..4)
            ) {
                let records = produced_batches(&batches);
                let raw = split_raw(&records, by_key_and_header).unwrap();
                let decoded = split_decoded(&records, by_key_and_header).unwrap();
                prop_assert_eq!(raw.routed, decoded.routed);
                prop_assert_eq!(raw.unroutable, decoded.unroutable);
                let raw_destinations: Vec<u8> = raw.batches.iter().map(|(d, _)| *d).collect();
                let decoded_destinations: Vec<u8> =
                    decoded.batches.iter().map(|(d, _)| *d).collect();
                prop_assert_eq!(raw_destinations, decoded_destinations);
                for ((_, raw_batch), (_, decoded_batch)) in raw.batches.iter().zip(&decoded.batches) {
                    prop_assert!(batch_header::crc_matches(raw_batch));
                    prop_assert_eq!(&raw_batch[field::MAX_TIMESTAMP], &decoded_batch[field::MAX_TIMESTAMP], "max timestamp");
                    prop_assert_eq!(decode_all(raw_batch), decode_all(decoded_batch));
                }
                // And the public entry point takes the raw path for these batches.
                let public = split_records(&records, by_key_and_header).unwrap();
                prop_assert_eq!(public.batches, raw.batches);
            }

            /// Any bytes under a valid CRC are either split or refused, never a panic.
            #[test]
            fn raw_path_survives_corruption(
                batch in prop::collection::vec(any_record(), 1..8),
                flips in prop::collection::vec((0usize..10_000, any::<u8>()), 1..6),
                cut in 0usize..10_000,
            ) {
                let mut bytes = produced_batches(&[batch]).to_vec();
                for (index, value) in flips {
                    let index = 21 + index % (bytes.len() - 21);
                    bytes[index] = value;
                }
                batch_header::seal_crc(&mut bytes);
                let _ = split_records(&Bytes::from(bytes.clone()), by_key_and_header);
                bytes.truncate(cut % (bytes.len() + 1));
                let _ = split_records(&Bytes::from(bytes), by_key_and_header);
            }
        }
    }
}
