//! `weir_engine::batch::validate` (the 61-byte header and CRC32C check every produced batch goes
//! through) over arbitrary bytes. Properties beyond "no panic": a batch that validates has a
//! consistent record count, and `claimed_size` agrees with its length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_engine::batch;

fuzz_target!(|data: &[u8]| {
    let size = batch::claimed_size(data);
    if let Ok(info) = batch::validate(data) {
        assert_eq!(info.record_count as i64, info.last_offset_delta as i64 + 1);
        assert_eq!(size, Some(data.len()));
        // Rewriting baseOffset (as the broker does) must keep the batch valid.
        let mut copy = data.to_vec();
        batch::set_base_offset(&mut copy, 42);
        assert_eq!(batch::validate(&copy), Ok(info));
    }
});
