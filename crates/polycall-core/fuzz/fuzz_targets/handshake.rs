//! The HANDSHAKE payload parser (PROTOCOL.md §4) against the section's rules, in both
//! strictness modes, on its own and carried in a v1 frame.
//!
//! Properties: the outcome is the model's (short, bad magic, short form, long form with its
//! version, flags and polycall's in-flight extension); strict and lenient differ only on an
//! empty payload; the pad byte and anything after the extension never change the outcome; a
//! frame carrying the payload decodes to the same payload and outcome; what `build` and
//! `build_extended` write parses back to what they were given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polycall_core::packet::handshake::{
    Handshake, HandshakeForm, MAGIC, Strictness, build, build_extended, parse,
};
use polycall_core::packet::{FrameDecoder, MessageType};
use polycall_core::{Error, Result, encode_frame};

fn model(p: &[u8], strictness: Strictness) -> Result<Handshake> {
    if p.is_empty() && strictness == Strictness::Lenient {
        return Ok(Handshake {
            form: HandshakeForm::Empty,
            version: None,
            flags: 0,
            max_in_flight: None,
        });
    }
    if p.len() < 4 {
        return Err(Error::HandshakePayloadTooShort { length: p.len() });
    }
    let magic = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
    if magic != MAGIC {
        return Err(Error::HandshakeBadMagic { found: magic });
    }
    if p.len() < 8 {
        return Ok(Handshake {
            form: HandshakeForm::Short,
            version: None,
            flags: 0,
            max_in_flight: None,
        });
    }
    let flags = u16::from_le_bytes([p[6], p[7]]);
    let max_in_flight =
        (flags != 0 && p.len() >= 12).then(|| u32::from_le_bytes([p[8], p[9], p[10], p[11]]));
    Ok(Handshake {
        form: HandshakeForm::Long,
        version: Some(p[4]),
        flags,
        max_in_flight,
    })
}

fuzz_target!(|data: &[u8]| {
    let strict = parse(data, Strictness::Strict);
    let lenient = parse(data, Strictness::Lenient);
    assert_eq!(strict, model(data, Strictness::Strict));
    assert_eq!(lenient, model(data, Strictness::Lenient));
    if !data.is_empty() {
        assert_eq!(strict, lenient);
    }
    if let Ok(h) = &lenient {
        assert_eq!(h.is_legacy(), h.form != HandshakeForm::Long || h.flags == 0);
    }

    // Ignored bytes: the pad (offset 5) and everything from offset 12 on.
    let mut other = data.to_vec();
    if let Some(pad) = other.get_mut(5) {
        *pad ^= 0xff;
    }
    for b in other.iter_mut().skip(12) {
        *b = b.wrapping_add(1);
    }
    assert_eq!(parse(&other, Strictness::Lenient), lenient);

    // Carried in a HANDSHAKE frame, the payload arrives unchanged (checksum over the pad too).
    let frame = encode_frame(MessageType::Handshake, 8, 1, data).expect("fuzz inputs are small");
    let mut decoded = Vec::new();
    FrameDecoder::new()
        .push(&frame, &mut decoded)
        .expect("a frame we encoded decodes");
    assert_eq!(decoded.len(), 1);
    assert_eq!(decoded[0].payload, data);
    assert_eq!(parse(&decoded[0].payload, Strictness::Lenient), lenient);

    // What polycall writes parses back.
    let flags = data
        .get(..2)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
    let limit = data
        .get(2..6)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let long = parse(&build(flags), Strictness::Strict).expect("build parses");
    assert_eq!(
        (long.form, long.version, long.flags, long.max_in_flight),
        (HandshakeForm::Long, Some(1), flags, None)
    );
    let ext =
        parse(&build_extended(flags, limit), Strictness::Strict).expect("build_extended parses");
    assert_eq!(
        (ext.flags, ext.max_in_flight),
        (flags, (flags != 0).then_some(limit))
    );
});
