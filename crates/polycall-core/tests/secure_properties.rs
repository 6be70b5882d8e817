//! Property tests of sealed frames: seal-then-open is the identity for any batch, chunking,
//! compression setting and rekey interval; any single-bit flip is refused; any reordering is
//! refused.
#![allow(missing_docs)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "generated sizes and indices are small by construction"
)]

mod secure_common;

use polycall_core::crypto::RekeyPolicy;
use polycall_core::crypto::hello::COMPRESSION;
use polycall_core::crypto::noise::Pattern;
use polycall_core::crypto::session::{OutFrame, SecureSession, SessionLimits};
use polycall_core::{MessageType, flags};
use proptest::prelude::*;
use secure_common::*;

#[derive(Debug, Clone)]
struct Out {
    kind: MessageType,
    flags: u16,
    sequence: u32,
    payload: Vec<u8>,
}

fn out_frame() -> impl Strategy<Value = Out> {
    (
        1u8..=6,
        any::<u16>(),
        any::<u32>(),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            // Compressible payloads, so the COMPRESSED path is taken when it is on.
            (1usize..3000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        ],
    )
        .prop_map(|(k, flags, sequence, payload)| Out {
            kind: MessageType::try_from(k).unwrap(),
            flags,
            sequence,
            payload,
        })
}

fn pattern() -> impl Strategy<Value = Pattern> {
    prop::sample::select(Pattern::ALL.to_vec())
}

fn seal_all(s: &mut SecureSession, frames: &[Out]) -> Vec<u8> {
    let outs: Vec<OutFrame<'_>> = frames
        .iter()
        .map(|f| OutFrame {
            kind: f.kind,
            flags: f.flags,
            sequence: f.sequence,
            payload: &f.payload,
        })
        .collect();
    let total = frames.iter().map(|f| f.payload.len()).sum();
    let mut out = vec![0; SecureSession::sealed_bound(frames.len(), total)];
    let n = s.seal_batch(&outs, &mut out).unwrap();
    out.truncate(n);
    out
}

fn established(pattern: Pattern, compress: bool, rekey: RekeyPolicy) -> Pair {
    let offer = if compress { OFFER | COMPRESSION } else { OFFER };
    let limits = SessionLimits {
        rekey,
        compress_threshold: 64,
        ..SessionLimits::default()
    };
    pair_with(pattern, limits, limits, offer, offer)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn seal_then_open_is_the_identity(
        pattern in pattern(),
        compress in any::<bool>(),
        frames in prop::collection::vec(out_frame(), 1..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut p = established(pattern, compress, RekeyPolicy::DEFAULT);
        let wire = seal_all(&mut p.client, &frames);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let mut got = Vec::new();
        for w in points.windows(2) {
            got.extend(push_ok(&mut p.server, &wire[w[0]..w[1]]));
        }
        p.server.end().unwrap();
        prop_assert_eq!(got.len(), frames.len());
        for (f, (h, payload)) in frames.iter().zip(&got) {
            prop_assert_eq!(h.kind, f.kind);
            prop_assert_eq!(h.sequence, f.sequence);
            prop_assert_eq!(h.flags, (f.flags & !flags::COMPRESSED) | flags::ENCRYPTED);
            prop_assert_eq!(payload, &f.payload);
        }
    }

    #[test]
    fn any_single_bit_flip_is_refused(
        pattern in pattern(),
        frames in prop::collection::vec(out_frame(), 1..5),
        bit in any::<prop::sample::Index>(),
    ) {
        let mut p = established(pattern, false, RekeyPolicy::DEFAULT);
        let wire = seal_all(&mut p.client, &frames);
        let bit = bit.index(wire.len() * 8);
        let mut bad = wire.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let hit = split_frames(&wire)
            .iter()
            .scan(0usize, |end, f| { *end += f.len(); Some(*end) })
            .position(|end| bit / 8 < end)
            .unwrap();
        let pushed = push(&mut p.server, &bad);
        let refused = pushed.result.is_err() || p.server.end().is_err();
        prop_assert!(refused, "a flipped bit went unnoticed");
        prop_assert_eq!(pushed.frames.len(), hit, "only the frames before the damaged one arrive");
        for (f, (_, payload)) in frames.iter().zip(&pushed.frames) {
            prop_assert_eq!(payload, &f.payload);
        }
    }

    #[test]
    fn any_reordering_is_refused(
        pattern in pattern(),
        frames in prop::collection::vec(out_frame(), 2..8),
        order in any::<u64>(),
    ) {
        let mut p = established(pattern, false, RekeyPolicy::DEFAULT);
        let wire = seal_all(&mut p.client, &frames);
        let mut pieces = split_frames(&wire);
        let n = pieces.len();
        // A rotation by a non-zero amount, or a swap of two neighbours: never the identity.
        if order % 2 == 0 {
            pieces.rotate_left(1 + (order as usize / 2) % (n - 1));
        } else {
            let i = (order as usize / 2) % (n - 1);
            pieces.swap(i, i + 1);
        }
        let first_wrong = (0..n).position(|i| pieces[i] != split_frames(&wire)[i]).unwrap();
        let stream: Vec<u8> = pieces.concat();
        let pushed = push(&mut p.server, &stream);
        prop_assert_eq!(pushed.result.unwrap_err().code(), "TAMPERED");
        prop_assert_eq!(pushed.frames.len(), first_wrong);
    }

    #[test]
    fn rekeyed_sessions_round_trip(
        pattern in pattern(),
        every in 1u32..8,
        volume in prop_oneof![Just(0u64), 16u64..400],
        rounds in 1usize..25,
    ) {
        let mut p = established(pattern, false, RekeyPolicy { frames: every, bytes: volume });
        for round in 0..rounds {
            let body = vec![round as u8; round * 13 % 90];
            let f = Out { kind: MessageType::Command, flags: 8, sequence: round as u32, payload: body.clone() };
            let w = seal_all(&mut p.client, &[f.clone(), f]);
            let got = push_ok(&mut p.server, &w);
            prop_assert_eq!(got.len(), 2);
            let r = Out { kind: MessageType::Response, flags: 0, sequence: round as u32, payload: body.clone() };
            let w = seal_all(&mut p.server, &[r]);
            prop_assert_eq!(&push_ok(&mut p.client, &w)[0].1, &body);
        }
        prop_assert_eq!(p.client.rekeys().0, p.server.rekeys().1);
        prop_assert_eq!(p.server.rekeys().0, p.client.rekeys().1);
        prop_assert!(p.client.rekeys().0 >= (rounds as u64 * 2) / u64::from(every));
    }
}
