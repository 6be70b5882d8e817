//! Property tests of the frame codec.
#![allow(missing_docs)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "vector and generated values are within range by construction"
)]

use polycall_core::{Frame, FrameDecoder, Header, MessageType, encode_frame};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = MessageType> {
    (1u8..=6).prop_map(|t| MessageType::try_from(t).unwrap())
}

fn frame_parts() -> impl Strategy<Value = (MessageType, u16, u32, Vec<u8>)> {
    (
        kind(),
        any::<u16>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..300),
    )
}

fn decode_all(chunks: &[&[u8]]) -> Result<Vec<Frame>, polycall_core::Error> {
    let mut d = FrameDecoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(c, &mut out)?;
    }
    d.finish()?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity((k, flags, seq, payload) in frame_parts()) {
        let bytes = encode_frame(k, flags, seq, &payload).unwrap();
        let frames = decode_all(&[&bytes]).unwrap();
        prop_assert_eq!(frames.len(), 1);
        let f = &frames[0];
        prop_assert_eq!(f.header.kind, k);
        prop_assert_eq!(f.header.flags, flags);
        prop_assert_eq!(f.header.sequence, seq);
        prop_assert_eq!(&f.payload, &payload);
        let head: [u8; 16] = bytes[..16].try_into().unwrap();
        prop_assert_eq!(Header::decode(&head, u32::MAX).unwrap().encode(), head);
    }

    #[test]
    fn any_chunking_gives_the_same_frames(
        parts in prop::collection::vec(frame_parts(), 1..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        bytewise in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for (k, f, s, p) in &parts {
            stream.extend(encode_frame(*k, *f, *s, p).unwrap());
        }
        let whole = decode_all(&[&stream]).unwrap();
        prop_assert_eq!(whole.len(), parts.len());
        let chunks: Vec<&[u8]> = if bytewise {
            stream.chunks(1).collect()
        } else {
            let mut idx: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            idx.push(0);
            idx.push(stream.len());
            idx.sort_unstable();
            idx.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
        };
        prop_assert_eq!(decode_all(&chunks).unwrap(), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..2000),
        cut in any::<prop::sample::Index>(),
        valid_prefix in any::<bool>(),
    ) {
        let mut bytes = Vec::new();
        if valid_prefix {
            bytes.extend(encode_frame(MessageType::Command, 8, 1, b"prefix").unwrap());
        }
        bytes.extend(&data);
        let at = cut.index(bytes.len() + 1);
        let (a, b) = bytes.split_at(at);
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        let r = d.push(a, &mut out).and_then(|()| d.push(b, &mut out)).and_then(|()| d.finish());
        if let Err(e) = r {
            prop_assert!(["TRUNCATED_HEADER", "TRUNCATED_PAYLOAD", "VERSION_MISMATCH",
                "UNKNOWN_MESSAGE_TYPE", "PAYLOAD_TOO_LARGE", "CHECKSUM_MISMATCH"].contains(&e.code()));
            // Sticky: the decoder stays failed.
            prop_assert_eq!(d.push(b"\x01", &mut out).unwrap_err(), e);
        }
        if valid_prefix && at >= 22 {
            prop_assert!(!out.is_empty());
            prop_assert_eq!(&out[0].payload, b"prefix");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn checksum_equals_the_byte_by_byte_recurrence(
        seed in prop::collection::vec(any::<u8>(), 0..9000),
        runs in prop::collection::vec((any::<prop::sample::Index>(), 0usize..3000, any::<u8>()), 0..4),
        start in any::<u32>(),
    ) {
        let mut data = seed;
        for (at, len, byte) in runs {
            if data.is_empty() { break; }
            let from = at.index(data.len());
            let to = (from + len).min(data.len());
            data[from..to].fill(byte);
        }
        let expected = data.iter().fold(start, |a, &b| a.rotate_left(5).wrapping_add(u32::from(b)));
        prop_assert_eq!(polycall_core::checksum::update(start, &data), expected);
    }
}
