//! PCR1 codec against the hex exchanges of docs/protocol.md §P5, plus properties.
#![allow(missing_docs)]

use polycall_core::pcr1::{Pcr1Decoder, Pcr1Header, Pcr1Type, encode_frame};
use proptest::prelude::*;

fn bytes(head: &str, json: &str) -> Vec<u8> {
    let mut v: Vec<u8> = head
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    v.extend_from_slice(json.as_bytes());
    v
}

const EXCHANGES: [(&str, &str, Pcr1Type, u32); 5] = [
    (
        "50 43 52 31 01 00 00 00 00 00 00 07 00 00 00 5b",
        r#"{"service":"inventory","operation":"get","deadline_ms":2000,"input":{"item_id":"widget-a"}}"#,
        Pcr1Type::Request,
        7,
    ),
    (
        "50 43 52 31 02 00 00 00 00 00 00 07 00 00 00 49",
        r#"{"ok":true,"output":{"item_id":"widget-a","quantity":42,"in_stock":true}}"#,
        Pcr1Type::Response,
        7,
    ),
    (
        "50 43 52 31 03 00 00 00 00 00 00 15 00 00 00 11",
        r#"{"action":"ping"}"#,
        Pcr1Type::Control,
        21,
    ),
    (
        "50 43 52 31 04 00 00 00 00 00 00 15 00 00 00 28",
        r#"{"ok":true,"data":{"pong":true,"abi":1}}"#,
        Pcr1Type::ControlReply,
        21,
    ),
    (
        "50 43 52 31 04 00 00 00 00 00 00 00 00 00 00 62",
        r#"{"ok":false,"error":{"code":"frame.invalid","message":"bad magic, type, reserved bits or length"}}"#,
        Pcr1Type::ControlReply,
        0,
    ),
];

#[test]
fn spec_exchanges_encode_and_decode_byte_exact() {
    let mut stream = Vec::new();
    for (head, json, kind, corr) in EXCHANGES {
        let expected = bytes(head, json);
        assert_eq!(encode_frame(kind, corr, json.as_bytes()).unwrap(), expected);
        stream.extend_from_slice(&expected);
    }
    for step in [stream.len(), 1, 7, 16, 17, 64] {
        let mut d = Pcr1Decoder::new();
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            d.push(piece, &mut out).unwrap();
        }
        d.finish().unwrap();
        assert_eq!(out.len(), EXCHANGES.len());
        for (f, (_, json, kind, corr)) in out.iter().zip(EXCHANGES) {
            assert_eq!(
                f.header,
                Pcr1Header {
                    kind,
                    corr,
                    length: u32::try_from(json.len()).unwrap()
                }
            );
            assert_eq!(f.payload, json.as_bytes());
        }
    }
}

#[test]
fn bad_headers_fail_before_any_payload_is_read() {
    for (head, code) in [
        (
            "50 43 52 30 01 00 00 00 00 00 00 07 00 00 00 5b",
            "PCR1_BAD_MAGIC",
        ),
        (
            "50 43 52 31 00 00 00 00 00 00 00 07 00 00 00 5b",
            "PCR1_UNKNOWN_TYPE",
        ),
        (
            "50 43 52 31 02 80 00 00 00 00 00 07 00 00 00 5b",
            "PCR1_RESERVED_BITS",
        ),
        (
            "50 43 52 31 02 00 ff 00 00 00 00 07 00 00 00 5b",
            "PCR1_RESERVED_BITS",
        ),
        (
            "50 43 52 31 01 00 00 00 00 00 00 07 ff ff ff ff",
            "PCR1_PAYLOAD_TOO_LARGE",
        ),
    ] {
        let mut d = Pcr1Decoder::new();
        let err = d.push(&bytes(head, ""), &mut Vec::new()).unwrap_err();
        assert_eq!(err.code(), code, "{head}");
        assert_eq!(d.buffered(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn roundtrip_and_any_chunking(
        frames in prop::collection::vec((1u8..=4, any::<u32>(), prop::collection::vec(any::<u8>(), 0..200)), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let mut stream = Vec::new();
        for (k, corr, p) in &frames {
            stream.extend(encode_frame(Pcr1Type::try_from(*k).unwrap(), *corr, p).unwrap());
        }
        let mut idx: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        idx.extend([0, stream.len()]);
        idx.sort_unstable();
        let mut d = Pcr1Decoder::new();
        let mut out = Vec::new();
        for w in idx.windows(2) {
            d.push(&stream[w[0]..w[1]], &mut out).unwrap();
        }
        d.finish().unwrap();
        prop_assert_eq!(out.len(), frames.len());
        for (f, (k, corr, p)) in out.iter().zip(&frames) {
            prop_assert_eq!(f.header.kind as u8, *k);
            prop_assert_eq!(f.header.corr, *corr);
            prop_assert_eq!(&f.payload, p);
        }
    }

    #[test]
    fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..600), with_magic in any::<bool>()) {
        let mut bytes = if with_magic { b"PCR1".to_vec() } else { Vec::new() };
        bytes.extend(data);
        let mut d = Pcr1Decoder::new();
        let mut out = Vec::new();
        if let Err(e) = d.push(&bytes, &mut out).and_then(|()| d.finish()) {
            prop_assert!(e.code().starts_with("PCR1_"));
        }
    }
}
