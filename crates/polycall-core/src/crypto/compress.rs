//! Payload compression (docs/protocol-extensions.md, "Compression"): between peers that both
//! advertised capability `0x0010`, a frame with the COMPRESSED flag carries
//!
//! ```text
//! offset 0  u32 LE  the decompressed size
//! offset 4  ...     one lz4 block (the block format, no frame header) of exactly that size
//! ```
//!
//! The sender compresses only payloads of at least a threshold and only keeps the result when
//! it is smaller than the original, so a compressed payload is never larger than the payload
//! it replaces. The receiver reads the size first and refuses one over its limit before it
//! allocates or decompresses anything, so a small frame cannot expand into a large buffer
//! (a decompression bomb); the block must then decode to exactly that size. On a secure
//! session compression happens before sealing: see docs/security.md for what that reveals.

use lz4_flex::block::{self, CompressTable};

use crate::error::{Error, Result};

/// Length of the decompressed-size prefix.
pub const PREFIX_LEN: usize = 4;

/// The default size from which payloads are compressed: below it lz4 seldom saves enough to
/// pay for its own time (measured by `npm run bench:secure`, docs/security.md).
pub const DEFAULT_THRESHOLD: u32 = 512;

/// A reusable compressor: the lz4 hash table and the output scratch survive between calls.
pub struct Compressor {
    threshold: u32,
    table: CompressTable,
    scratch: Vec<u8>,
}

impl core::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Compressor")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl Compressor {
    /// A compressor for payloads of at least `threshold` bytes.
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold,
            table: CompressTable::default(),
            scratch: Vec::new(),
        }
    }

    /// The threshold in force.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// Compresses `payload` into the internal scratch and returns the compressed payload
    /// (size prefix included), or `None` when the payload is under the threshold or does not
    /// shrink.
    pub fn compress(&mut self, payload: &[u8]) -> Option<&[u8]> {
        if payload.len() < self.threshold as usize || payload.len() <= PREFIX_LEN {
            return None;
        }
        let size = u32::try_from(payload.len()).ok()?;
        let bound = PREFIX_LEN + block::get_maximum_output_size(payload.len());
        if self.scratch.len() < bound {
            self.scratch.resize(bound, 0);
        }
        let (prefix, body) = self.scratch.split_at_mut(PREFIX_LEN);
        prefix.copy_from_slice(&size.to_le_bytes());
        let written = block::compress_into_with_table(payload, body, &mut self.table).ok()?;
        let total = PREFIX_LEN + written;
        if total >= payload.len() {
            return None;
        }
        self.scratch.get(..total)
    }
}

/// The decompressed size a compressed payload announces.
///
/// # Errors
/// `DECOMPRESSION_FAILED` when the payload is shorter than the prefix.
pub fn announced_size(compressed: &[u8]) -> Result<u32> {
    compressed
        .first_chunk::<PREFIX_LEN>()
        .map(|p| u32::from_le_bytes(*p))
        .ok_or_else(|| Error::DecompressionFailed("shorter than its 4-byte size prefix".into()))
}

/// Decompresses a compressed payload whose announced size is at most `limit`.
///
/// # Errors
/// `DECOMPRESSION_LIMIT` when the announced size exceeds `limit` (checked before anything is
/// allocated); `DECOMPRESSION_FAILED` when the block is malformed or decodes to another size.
pub fn decompress(compressed: &[u8], limit: u32) -> Result<Vec<u8>> {
    let size = announced_size(compressed)?;
    if size > limit {
        return Err(Error::DecompressionLimit {
            size: u64::from(size),
            limit,
        });
    }
    let body = compressed.get(PREFIX_LEN..).unwrap_or_default();
    // A fresh zeroed buffer: nothing of an earlier payload can show through a malformed block.
    let mut out = vec![0u8; size as usize];
    let written = block::decompress_into(body, &mut out)
        .map_err(|e| Error::DecompressionFailed(e.to_string()))?;
    if written != out.len() {
        return Err(Error::DecompressionFailed(format!(
            "the block decodes to {written} bytes, the prefix announces {size}"
        )));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    clippy::many_single_char_names,
    reason = "test values are small by construction; a and b are the two ends"
)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_threshold() {
        let payload = b"abcdabcdabcdabcd".repeat(64);
        let mut c = Compressor::new(512);
        let packed = c.compress(&payload).unwrap().to_vec();
        assert!(packed.len() < payload.len());
        assert_eq!(announced_size(&packed).unwrap() as usize, payload.len());
        assert_eq!(decompress(&packed, 1 << 20).unwrap(), payload);
        assert!(c.compress(&payload[..100]).is_none(), "under the threshold");
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..2048)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(
            c.compress(&noise).is_none(),
            "incompressible data stays as it is"
        );
        assert_eq!(c.threshold(), 512);
        assert!(format!("{c:?}").contains("512"));
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let payload = vec![0u8; 1 << 20];
        let packed = Compressor::new(0).compress(&payload).unwrap().to_vec();
        assert!(packed.len() < 5000);
        let err = decompress(&packed, 64 * 1024).unwrap_err();
        assert_eq!(err.code(), "DECOMPRESSION_LIMIT");
        let mut lying = packed.clone();
        lying[..4].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(
            decompress(&lying, 1 << 20).unwrap_err().code(),
            "DECOMPRESSION_FAILED"
        );
        let mut short = packed.clone();
        short[..4].copy_from_slice(&(2u32 << 20).to_le_bytes());
        assert_eq!(
            decompress(&short, 4 << 20).unwrap_err().code(),
            "DECOMPRESSION_FAILED"
        );
        assert_eq!(
            decompress(&[1, 2], 10).unwrap_err().code(),
            "DECOMPRESSION_FAILED"
        );
        assert_eq!(
            decompress(&[5, 0, 0, 0, 0xff, 0xff], 10)
                .unwrap_err()
                .code(),
            "DECOMPRESSION_FAILED"
        );
        assert_eq!(
            decompress(&[0, 0, 0, 0], 10).unwrap_err().code(),
            "DECOMPRESSION_FAILED"
        );
    }
}
