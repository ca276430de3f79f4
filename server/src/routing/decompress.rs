//! Decompression of produced batches with a bound on the output, for the routing path.
//!
//! kafka-protocol's own decompressors inflate whatever they are given; on the exchange produce
//! path the batch is client input, so a few kilobytes of zstd or gzip could make a shard allocate
//! gigabytes. These read at most [`DECOMPRESSED_BATCH_BYTES_MAX`] bytes and refuse the batch
//! beyond that. Pure functions, called on the shard that received the produce request.

use std::io::Read;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use kafka_protocol::records::Compression;

/// Largest decompressed record section of one batch that routing accepts.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 << 20;

/// The xerial snappy-java stream header Kafka clients write: magic, then version and
/// compatible-version (4 bytes each), then blocks of `[u32 BE length][raw snappy]`.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

/// Decompresses one batch's record section, failing beyond `DECOMPRESSED_BATCH_BYTES_MAX`.
/// The signature is the one `RecordBatchDecoder::decode_with_custom_compression` takes.
pub fn decompress_bounded(compressed: &mut Bytes, compression: Compression) -> Result<Bytes> {
    decompress_with_limit(compressed, compression, DECOMPRESSED_BATCH_BYTES_MAX)
}

fn decompress_with_limit(
    compressed: &mut Bytes,
    compression: Compression,
    limit: usize,
) -> Result<Bytes> {
    let input = std::mem::take(compressed);
    match compression {
        Compression::None => Ok(input),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(&input[..]), limit),
        Compression::Zstd => read_bounded(
            zstd::stream::read::Decoder::new(&input[..]).context("zstd stream")?,
            limit,
        ),
        Compression::Lz4 => {
            read_bounded(lz4::Decoder::new(&input[..]).context("lz4 frame")?, limit)
        }
        Compression::Snappy => snappy(&input, limit),
    }
}

fn read_bounded(reader: impl Read, limit: usize) -> Result<Bytes> {
    let mut output = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut output)
        .context("decompressing")?;
    if output.len() > limit {
        bail!("batch decompresses to more than {limit} bytes");
    }
    Ok(output.into())
}

fn snappy(input: &[u8], limit: usize) -> Result<Bytes> {
    if !input.starts_with(XERIAL_MAGIC) {
        // Raw snappy, as snappy-java falls back to without the stream header.
        return snappy_block(input, limit).map(Bytes::from);
    }
    let mut rest = input
        .get(XERIAL_HEADER_BYTES..)
        .context("snappy stream header is truncated")?;
    let mut output = Vec::new();
    while !rest.is_empty() {
        let (length, tail) = rest
            .split_first_chunk::<4>()
            .context("snappy block length is truncated")?;
        let length = u32::from_be_bytes(*length) as usize;
        let block = tail.get(..length).context("snappy block is truncated")?;
        output.extend_from_slice(&snappy_block(block, limit - output.len())?);
        rest = &tail[length..];
    }
    Ok(output.into())
}

/// One raw snappy block; its header states its decompressed length, checked before allocating.
fn snappy_block(block: &[u8], limit: usize) -> Result<Vec<u8>> {
    let length = snap::raw::decompress_len(block).context("snappy block header")?;
    if length > limit {
        bail!("batch decompresses to more than {DECOMPRESSED_BATCH_BYTES_MAX} bytes");
    }
    snap::raw::Decoder::new()
        .decompress_vec(block)
        .context("snappy block")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::compression::{Compressor, Decompressor};

    fn compress(compression: Compression, data: &[u8]) -> Bytes {
        use kafka_protocol::compression as codec;
        let mut output = BytesMut::new();
        let fill = |buffer: &mut BytesMut| -> Result<()> {
            buffer.extend_from_slice(data);
            Ok(())
        };
        match compression {
            Compression::None => output.extend_from_slice(data),
            Compression::Gzip => codec::Gzip::compress(&mut output, fill).unwrap(),
            Compression::Snappy => codec::Snappy::compress(&mut output, fill).unwrap(),
            Compression::Lz4 => codec::Lz4::compress(&mut output, fill).unwrap(),
            Compression::Zstd => codec::Zstd::compress(&mut output, fill).unwrap(),
        }
        output.freeze()
    }

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn agrees_with_kafka_protocol() {
        // Long enough for several 32 KiB snappy blocks.
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|n| (n % 251).to_le_bytes())
            .collect();
        for compression in ALL {
            let mut compressed = compress(compression, &data);
            let ours = decompress_bounded(&mut compressed.clone(), compression).unwrap();
            assert_eq!(&ours[..], &data[..], "{compression:?}");
            if compression == Compression::Snappy {
                let theirs = kafka_protocol::compression::Snappy::decompress(
                    &mut compressed,
                    |buffer: &mut Bytes| Ok(buffer.clone()),
                )
                .unwrap();
                assert_eq!(ours, theirs);
            }
        }
    }

    #[test]
    fn bombs_are_refused() {
        let zeros = vec![0u8; 4 << 20];
        for compression in ALL {
            if compression == Compression::None {
                continue;
            }
            let mut compressed = compress(compression, &zeros);
            assert!(
                compressed.len() < 1 << 20,
                "{compression:?} compresses zeros"
            );
            let result = decompress_with_limit(&mut compressed, compression, 1 << 20);
            assert!(result.is_err(), "{compression:?} exceeded the limit");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for compression in ALL {
            if compression == Compression::None {
                continue;
            }
            for garbage in [
                &b""[..],
                b"\x82SNAPPY\x00",
                b"\x00\x01\x02\x03\xff\xff\xff\xff",
            ] {
                let _ = decompress_bounded(&mut Bytes::copy_from_slice(garbage), compression);
            }
        }
    }
}
