//! The AMQP frame decoder over arbitrary input, as the connection uses it: the 7-byte frame
//! header (`parse_frame_header`), then `decode` of the payload (methods through amq-protocol,
//! content headers with their properties, bodies, heartbeats). Every outcome must be a frame or
//! an `AmqpError` with a reply code, never a panic, hang or abort.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use weir_server::amqp::frame::{decode, parse_frame_header};

fuzz_target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let mut header = [0u8; 7];
    header.copy_from_slice(&data[..7]);
    let (kind, channel, _size) = parse_frame_header(&header);
    let _ = decode(kind, channel, Bytes::copy_from_slice(&data[7..]));
});
