//! Every case of protocol-vectors.json against the core codec.
#![allow(missing_docs)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "vector and generated values are within range by construction"
)]

mod common;

use common::{hex, payload_of, s, u, vectors};
use polycall_core::packet::handshake::{self, Strictness};
use polycall_core::{
    Frame, FrameDecoder, HEADER_SIZE, Header, MAX_PAYLOAD, MessageType, checksum, encode_frame,
};
use std::collections::HashMap;

#[test]
fn checksums() {
    let v = vectors();
    let cases = v["checksums"].as_array().unwrap();
    assert!(cases.len() >= 17);
    for c in cases {
        let expected = u(c, "checksum") as u32;
        let payload = payload_of(c);
        assert_eq!(payload.len() as u64, u(c, "length"), "{}", s(c, "name"));
        assert_eq!(checksum(&payload), expected, "checksum {}", s(c, "name"));
        assert_eq!(format!("{expected:08x}"), s(c, "checksum_hex"));
    }
}

#[test]
fn frames_encode_and_decode() {
    let v = vectors();
    for f in v["frames"].as_array().unwrap() {
        let name = s(f, "name");
        let kind = MessageType::try_from(u(f, "type") as u8).unwrap();
        let flags = u(f, "flags") as u16;
        let seq = u(f, "sequence") as u32;
        let header = hex(s(f, "header_hex"));
        let head: [u8; HEADER_SIZE] = header.as_slice().try_into().unwrap();
        let parsed = Header::decode(&head, MAX_PAYLOAD).unwrap();
        assert_eq!(parsed.kind, kind, "{name}");
        assert_eq!(parsed.flags, flags, "{name}");
        assert_eq!(parsed.sequence, seq, "{name}");
        assert_eq!(
            u64::from(parsed.payload_length),
            u(f, "payload_length"),
            "{name}"
        );
        assert_eq!(u64::from(parsed.checksum), u(f, "checksum"), "{name}");

        let payload = payload_of(f);
        assert_eq!(payload.len() as u64, u(f, "payload_length"), "{name}");
        assert_eq!(u64::from(checksum(&payload)), u(f, "checksum"), "{name}");
        let encoded = encode_frame(kind, flags, seq, &payload).unwrap();
        assert_eq!(
            &encoded[..HEADER_SIZE],
            header.as_slice(),
            "encode header {name}"
        );
        if let Some(full) = f["frame_hex"].as_str() {
            assert_eq!(encoded, hex(full), "encode {name}");
        }
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        d.push(&encoded, &mut out).unwrap();
        d.finish().unwrap();
        assert_eq!(out.len(), 1, "{name}");
        assert_eq!(out[0].header, parsed, "{name}");
        assert_eq!(out[0].payload, payload, "{name}");
    }
}

fn frames_by_name() -> HashMap<String, Frame> {
    let v = vectors();
    let mut map = HashMap::new();
    for f in v["frames"].as_array().unwrap() {
        let Some(full) = f["frame_hex"].as_str() else {
            continue;
        };
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        if d.push(&hex(full), &mut out).is_ok() && out.len() == 1 {
            map.insert(s(f, "name").to_owned(), out.remove(0));
        }
    }
    map
}

#[test]
fn streams() {
    let v = vectors();
    let by_name = frames_by_name();
    for st in v["streams"].as_array().unwrap() {
        let chunks: Vec<Vec<u8>> = if let Some(list) = st["chunks_hex"].as_array() {
            list.iter().map(|c| hex(c.as_str().unwrap())).collect()
        } else {
            let bytes = hex(s(st, "stream_hex"));
            let size = u(st, "chunk_size") as usize;
            bytes.chunks(size).map(<[u8]>::to_vec).collect()
        };
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        for c in &chunks {
            d.push(c, &mut out).unwrap();
        }
        d.finish().unwrap();
        let expected: Vec<&Frame> = st["expected_frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| &by_name[n.as_str().unwrap()])
            .collect();
        assert_eq!(out.len(), expected.len(), "{}", s(st, "name"));
        for (got, want) in out.iter().zip(expected) {
            assert_eq!(got, want, "{}", s(st, "name"));
        }
    }
}

#[test]
fn invalid_frames() {
    let v = vectors();
    let cases = v["invalid_frames"].as_array().unwrap();
    assert_eq!(cases.len(), 16);
    for c in cases {
        let name = s(c, "name");
        let bytes = hex(s(c, "bytes_hex"));
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        let pushed = d.push(&bytes, &mut out);
        let err = match (pushed, c["stream_ends_after"].as_bool().unwrap_or(false)) {
            (Err(e), _) => e,
            (Ok(()), true) => d.finish().expect_err(name),
            (Ok(()), false) => panic!("{name} accepted"),
        };
        assert_eq!(err.code(), s(c, "error"), "{name}");
        if s(c, "detected_at") == "header" {
            assert_eq!(
                d.buffered(),
                0,
                "{name}: nothing buffered after a header error"
            );
        }
        if name == "second_frame_truncated" {
            assert_eq!(out.len(), 1, "the first frame is delivered");
            assert_eq!(out[0].payload, b"hello");
        }
        // Byte at a time gives the same error.
        let mut d = FrameDecoder::new();
        let mut err2 = None;
        for b in &bytes {
            if let Err(e) = d.push(std::slice::from_ref(b), &mut Vec::new()) {
                err2 = Some(e);
                break;
            }
        }
        let err2 = err2.or_else(|| d.finish().err()).expect(name);
        assert_eq!(err2.code(), s(c, "error"), "{name} byte-wise");
    }
}

#[test]
fn handshakes() {
    let v = vectors();
    let hs = &v["handshake"];
    assert_eq!(u(hs, "magic") as u32, handshake::MAGIC);
    let long = &hs["long_form"];
    assert_eq!(handshake::build(0).to_vec(), hex(s(long, "payload_hex")));
    let frame = encode_frame(MessageType::Handshake, 8, 1, &handshake::build(0)).unwrap();
    assert_eq!(frame, hex(s(long, "frame_hex")));
    for key in ["payload_hex", "variant_with_garbage_pad_hex"] {
        let h = handshake::parse(&hex(s(long, key)), Strictness::Strict).unwrap();
        assert_eq!((h.version, h.flags), (Some(1), 0), "{key}");
    }
    // The garbage-pad frame still decodes: the checksum covers the pad as received.
    let mut d = FrameDecoder::new();
    let mut out = Vec::new();
    d.push(
        &hex(s(long, "variant_with_garbage_pad_frame_hex")),
        &mut out,
    )
    .unwrap();
    assert_eq!(out[0].payload, hex(s(long, "variant_with_garbage_pad_hex")));
    assert!(handshake::parse(&hex(s(hs, "short_form_payload_hex")), Strictness::Strict).is_ok());

    for c in hs["invalid"].as_array().unwrap() {
        let name = s(c, "name");
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        d.push(&hex(s(c, "frame_hex")), &mut out).unwrap();
        assert_eq!(out.len(), 1, "{name}: the frame itself is well formed");
        assert_eq!(out[0].payload, hex(s(c, "payload_hex")));
        let strict = handshake::parse(&out[0].payload, Strictness::Strict).unwrap_err();
        assert_eq!(strict.code(), s(c, "error"), "{name}");
        let lenient = handshake::parse(&out[0].payload, Strictness::Lenient);
        match s(c, "lenient_mode") {
            "accept" => assert!(lenient.unwrap().is_legacy(), "{name}"),
            "reject" => assert_eq!(lenient.unwrap_err().code(), s(c, "error"), "{name}"),
            other => panic!("unknown lenient_mode {other}"),
        }
    }
}
