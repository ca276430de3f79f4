//! The segment recovery scanner (`weir_engine::scan_segment_bytes`: the per-batch rule that
//! `Log::open` applies to every segment) over arbitrary file contents. The first 8 input bytes
//! pick the segment's base offset, the rest is the file. Properties: the scan stops inside the
//! data, offsets only grow, and a second scan of the valid prefix accepts all of it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_engine::scan_segment_bytes;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let mut base = [0u8; 8];
    base.copy_from_slice(&data[..8]);
    // Segment names are 20 decimal digits of a non-negative offset.
    let base_offset = i64::from_be_bytes(base) & i64::MAX;
    let file = &data[8..];
    let scan = scan_segment_bytes(file, base_offset);
    assert!(scan.valid_bytes <= file.len() as u64);
    assert!(scan.next_offset >= base_offset);
    assert_eq!(scan.stop_reason.is_none(), scan.valid_bytes == file.len() as u64);
    let prefix = scan_segment_bytes(&file[..scan.valid_bytes as usize], base_offset);
    assert_eq!(prefix.valid_bytes, scan.valid_bytes);
    assert_eq!(prefix.next_offset, scan.next_offset);
    assert_eq!(prefix.stop_reason, None);
});
