//! Fuzzes compressed payloads: arbitrary bytes decompress to at most the limit or fail with a
//! coded error, never a panic; and whatever the compressor produces decompresses back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polycall_core::crypto::compress::{self, Compressor};

fuzz_target!(|data: &[u8]| {
    match compress::decompress(data, 64 * 1024) {
        Ok(out) => assert!(out.len() <= 64 * 1024),
        Err(e) => assert!(matches!(
            e.code(),
            "DECOMPRESSION_LIMIT" | "DECOMPRESSION_FAILED"
        )),
    }
    let mut c = Compressor::new(0);
    if let Some(packed) = c.compress(data) {
        assert!(packed.len() < data.len());
        assert_eq!(compress::decompress(packed, u32::MAX).unwrap(), data);
    }
});
