//! Fuzzes the frame decoder and the handshake parser: arbitrary bytes, split at an arbitrary
//! point, must end in frames or a coded error, never a panic, and a failed decoder stays failed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polycall_core::FrameDecoder;
use polycall_core::packet::handshake::{self, Strictness};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else { return };
    let at = usize::from(cut) * bytes.len() / 256;
    let (a, b) = bytes.split_at(at);
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    let result = decoder
        .push(a, &mut frames)
        .and_then(|()| decoder.push(b, &mut frames))
        .and_then(|()| decoder.finish());
    if let Err(e) = result {
        assert!(!e.code().is_empty());
        assert_eq!(decoder.push(b"\x01", &mut Vec::new()), Err(e));
    }
    for f in &frames {
        assert_eq!(f.payload.len() as u32, f.header.payload_length);
        assert_eq!(polycall_core::checksum(&f.payload), f.header.checksum);
    }
    let _ = handshake::parse(bytes, Strictness::Strict);
    let _ = handshake::parse(bytes, Strictness::Lenient);
});
