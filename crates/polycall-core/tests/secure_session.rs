//! Secure sessions end to end in memory, over real v1 frames: handshakes of the three patterns,
//! sealed batches in both directions, every way a frame can be refused, downgrades, men in the
//! middle, rekeying, compression and its bombs, and the bounds of a half-done handshake.
#![allow(missing_docs)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "test sizes and indices are small by construction"
)]
#![allow(
    clippy::too_many_lines,
    reason = "each test walks one family of refusals end to end"
)]

mod secure_common;

use polycall_core::crypto::hello::{self, BATCHES, COMPRESSION, SECURE};
use polycall_core::crypto::noise::Pattern;
use polycall_core::crypto::session::{
    InitiatorConfig, Mode, OutFrame, ResponderConfig, SecureSession, SessionLimits,
};
use polycall_core::crypto::transport::{BATCH, BATCH_MAX_BODY, BATCH_MAX_FRAMES};
use polycall_core::crypto::{Cipher, Identity, RekeyPolicy};
use polycall_core::packet::handshake;
use polycall_core::{MessageType, encode_frame, flags};
use secure_common::*;

#[test]
fn every_pattern_round_trips_both_directions_and_any_chunking() {
    for pattern in Pattern::ALL {
        let mut p = pair(pattern);
        let payloads: Vec<Vec<u8>> = (0..40u32)
            .map(|i| vec![i as u8; (i as usize * 37) % 700])
            .collect();
        let frames: Vec<(MessageType, u32, &[u8])> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (MessageType::Command, i as u32, p.as_slice()))
            .collect();
        let wire = seal(&mut p.client, &frames);
        assert!(
            wire.windows(8).all(|w| w != [7u8; 8]),
            "no plaintext run on the wire"
        );
        // Byte-by-byte, then in uneven pieces: the decoder assembles straddling frames.
        let mut got = Vec::new();
        let (a, b) = wire.split_at(wire.len() / 3);
        for piece in a.chunks(1).chain(b.chunks(999)) {
            got.extend(push_ok(&mut p.server, piece));
        }
        assert_eq!(got.len(), 40);
        for (i, (header, payload)) in got.iter().enumerate() {
            assert_eq!(header.sequence, i as u32);
            assert_eq!(header.kind, MessageType::Command);
            assert_eq!(header.flags & flags::ENCRYPTED, flags::ENCRYPTED);
            assert_eq!(header.payload_length as usize, payload.len());
            assert_eq!(payload, &payloads[i]);
        }
        let back = seal(
            &mut p.server,
            &[
                (MessageType::Response, 3, b"reply"),
                (MessageType::Heartbeat, 0, b""),
            ],
        );
        let got = push_ok(&mut p.client, &back);
        assert_eq!(got[0].1, b"reply");
        assert_eq!(got[1].1, b"");
        assert_eq!(p.pattern, pattern);
    }
}

#[test]
fn sealed_frames_refuse_tampering_replay_reorder_drop_and_splicing() {
    let mut p = pair(Pattern::Ik);
    let wire = seal(
        &mut p.client,
        &[
            (MessageType::Command, 1, b"one"),
            (MessageType::Command, 2, b"two"),
        ],
    );
    let f = split_frames(&wire);
    // Every single-bit flip of the first frame is refused, header and payload alike.
    for bit in 0..f[0].len() * 8 {
        let mut q = pair(Pattern::Ik);
        let good = seal(&mut q.client, &[(MessageType::Command, 1, b"one")]);
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let pushed = push(&mut q.server, &bad);
        assert!(
            pushed.frames.is_empty(),
            "bit {bit}: a damaged frame was delivered"
        );
        let refused = pushed
            .result
            .err()
            .or_else(|| q.server.end().err())
            .unwrap();
        let code = refused.code();
        if bit / 8 < 8 || bit / 8 >= 12 {
            // Everything but the length field: authenticated (or the checksum of authenticated bytes).
            assert_eq!(code, "TAMPERED", "bit {bit}");
        } else {
            assert!(
                matches!(code, "TAMPERED" | "TRUNCATED_PAYLOAD" | "PAYLOAD_TOO_LARGE"),
                "bit {bit}: {code}"
            );
        }
    }
    // Reorder.
    let mut q = pair(Pattern::Nk);
    let w = split_frames(&seal(
        &mut q.client,
        &[
            (MessageType::Command, 1, b"a"),
            (MessageType::Command, 2, b"b"),
        ],
    ));
    assert_eq!(
        push(&mut q.server, &w[1]).result.unwrap_err().code(),
        "TAMPERED"
    );
    assert_eq!(
        push(&mut q.server, &w[0]).result.unwrap_err().code(),
        "TAMPERED",
        "a failed session stays failed"
    );
    // Replay.
    let mut q = pair(Pattern::Nk);
    let w = split_frames(&seal(&mut q.client, &[(MessageType::Command, 1, b"a")]));
    assert_eq!(push_ok(&mut q.server, &w[0])[0].1, b"a");
    assert_eq!(
        push(&mut q.server, &w[0]).result.unwrap_err().code(),
        "TAMPERED"
    );
    // Drop.
    let mut q = pair(Pattern::Xx);
    let w = split_frames(&seal(
        &mut q.client,
        &[
            (MessageType::Command, 1, b"a"),
            (MessageType::Command, 2, b"b"),
        ],
    ));
    assert_eq!(
        push(&mut q.server, &w[1]).result.unwrap_err().code(),
        "TAMPERED"
    );
    // Splice a frame from another session with the same keys on both ends.
    let mut other = pair(Pattern::Ik);
    let foreign = seal(&mut other.client, &[(MessageType::Command, 1, b"one")]);
    let mut q = pair(Pattern::Ik);
    assert_eq!(
        push(&mut q.server, &foreign).result.unwrap_err().code(),
        "TAMPERED"
    );
    // A frame sealed for the other direction.
    let mut q = pair(Pattern::Ik);
    let own = seal(&mut q.client, &[(MessageType::Command, 1, b"one")]);
    assert_eq!(
        push(&mut q.client, &own).result.unwrap_err().code(),
        "TAMPERED"
    );
    // Plaintext after the switch.
    let mut q = pair(Pattern::Ik);
    let plain = encode_frame(MessageType::Command, 8, 1, b"plain").unwrap();
    assert_eq!(
        push(&mut q.server, &plain).result.unwrap_err().code(),
        "TAMPERED"
    );
    // Frames before a bad one still arrive.
    let mut q = pair(Pattern::Ik);
    let mut w = seal(
        &mut q.client,
        &[
            (MessageType::Command, 1, b"ok"),
            (MessageType::Command, 2, b"bad"),
        ],
    );
    let last = w.len() - 1;
    w[last] ^= 1;
    let pushed = push(&mut q.server, &w);
    assert_eq!(pushed.frames.len(), 1);
    assert_eq!(pushed.frames[0].1, b"ok");
    assert_eq!(pushed.result.unwrap_err().code(), "TAMPERED");
    assert_eq!(q.server.failure().unwrap().code(), "TAMPERED");
    assert_eq!(q.server.end().unwrap_err().code(), "TAMPERED");
    let _ = p;
}

#[test]
fn rekeying_at_agreed_points() {
    let c = SessionLimits {
        rekey: RekeyPolicy {
            frames: 5,
            bytes: 0,
        },
        ..limits()
    };
    let s = SessionLimits {
        rekey: RekeyPolicy {
            frames: 0,
            bytes: 300,
        },
        ..limits()
    };
    let mut p = pair_with(Pattern::Xx, c, s, OFFER, OFFER);
    for round in 0..30u32 {
        let body = vec![round as u8; 40];
        let w = seal(
            &mut p.client,
            &[
                (MessageType::Command, round, &body),
                (MessageType::Command, round, b"x"),
            ],
        );
        assert_eq!(push_ok(&mut p.server, &w).len(), 2);
        let w = seal(&mut p.server, &[(MessageType::Response, round, &body)]);
        assert_eq!(push_ok(&mut p.client, &w)[0].1, body);
    }
    let (c_send, c_recv) = p.client.rekeys();
    let (s_send, s_recv) = p.server.rekeys();
    assert_eq!(c_send, 12, "60 frames, every 5");
    assert_eq!(s_recv, c_send);
    assert_eq!(s_send, 30 * 56 / 300);
    assert_eq!(c_recv, s_send);
}

#[test]
fn compression_round_trip_threshold_and_bombs() {
    let offer = OFFER | COMPRESSION;
    let mut p = pair_with(Pattern::Ik, limits(), limits(), offer, offer);
    assert_eq!(p.client.agreed_flags() & COMPRESSION, COMPRESSION);
    let big = b"polycall ".repeat(2000);
    let w = seal(
        &mut p.client,
        &[
            (MessageType::Command, 1, &big),
            (MessageType::Command, 2, b"small"),
        ],
    );
    assert!(
        w.len() < 2000,
        "compressed before sealing: {} bytes",
        w.len()
    );
    let got = push_ok(&mut p.server, &w);
    assert_eq!(got[0].1, big);
    assert_eq!(
        got[0].0.flags & flags::COMPRESSED,
        0,
        "delivered decompressed"
    );
    assert_eq!(got[0].0.payload_length as usize, big.len());
    assert_eq!(got[1].1, b"small");
    // Not negotiated: no compression.
    let mut q = pair_with(Pattern::Ik, limits(), limits(), offer, OFFER);
    let w = seal(&mut q.client, &[(MessageType::Command, 1, &big)]);
    assert!(w.len() > big.len());
    // A bomb: 1 MiB of zeros compresses to a few KiB, but the receiver allows 64 KiB.
    let small = SessionLimits {
        max_payload: 64 * 1024,
        ..limits()
    };
    let mut q = pair_with(Pattern::Nk, limits(), small, offer, offer);
    let zeros = vec![0u8; 1_000_000];
    let w = seal(&mut q.client, &[(MessageType::Command, 1, &zeros)]);
    assert!(w.len() < 8 * 1024);
    let pushed = push(&mut q.server, &w);
    assert!(pushed.frames.is_empty());
    assert_eq!(pushed.result.unwrap_err().code(), "DECOMPRESSION_LIMIT");
}

#[test]
fn plain_sessions_pass_frames_through_with_optional_compression() {
    let sid = server_identity();
    let mut server = SecureSession::responder(&ResponderConfig {
        identity: &sid,
        patterns: &Pattern::ALL,
        ciphers: &Cipher::ALL,
        limits: limits(),
        ephemeral: None,
    })
    .unwrap();
    let legacy = encode_frame(MessageType::Handshake, 8, 1, &handshake::build(0x0001)).unwrap();
    let mut stream = legacy.clone();
    stream.extend(encode_frame(MessageType::Command, 8, 2, b"{}").unwrap());
    let p = push(&mut server, &stream);
    let (consumed, held) = p.result.unwrap();
    assert!(
        held && consumed == legacy.len(),
        "held right after the hello"
    );
    let hello = server.read_hello(&p.frames[0].1).unwrap();
    assert_eq!((hello.flags, hello.secure), (0x0001, None));
    assert!(
        server.seal_batch(&[], &mut []).is_err(),
        "nothing to seal before a decision"
    );
    server.plain().unwrap();
    assert_eq!(server.mode(), Mode::Plain);
    let got = push_ok(&mut server, &stream[consumed..]);
    assert_eq!(got[0].1, b"{}");
    server.set_compression(Some(64));
    let body = vec![b'a'; 5000];
    let frames = [OutFrame {
        kind: MessageType::Response,
        flags: 0,
        sequence: 2,
        payload: &body,
    }];
    let mut out = vec![0; SecureSession::sealed_bound(1, body.len())];
    let n = server.seal_batch(&frames, &mut out).unwrap();
    assert!(n < 200);
    assert_eq!(out[2] & (flags::COMPRESSED as u8), flags::COMPRESSED as u8);
    assert_eq!(out[2] & (flags::ENCRYPTED as u8), 0);
    let decoded = polycall_core::packet::inspect::inspect(&out[..n]).unwrap();
    assert!(decoded.problems.is_empty(), "a valid plain v1 frame");
    // In place, a plain session writes the same bytes and drops the room kept for tags.
    let mut buf = laid_out(&[
        (MessageType::Response, 2, &body),
        (MessageType::Response, 3, b"x"),
    ]);
    let m = server.seal_in_place(&mut buf).unwrap();
    assert_eq!(&buf[..n], &out[..n]);
    assert_eq!(
        &buf[n..m],
        &encode_frame(MessageType::Response, 0, 3, b"x").unwrap()[..]
    );
    assert!(
        server.plain().is_err(),
        "plain only once, before the handshake"
    );
}

#[test]
fn downgrades_and_altered_hellos_are_refused() {
    let sid = server_identity();
    let cid = client_identity();
    let responder = |sid: &Identity| {
        SecureSession::responder(&ResponderConfig {
            identity: sid,
            patterns: &Pattern::ALL,
            ciphers: &Cipher::ALL,
            limits: limits(),
            ephemeral: None,
        })
        .unwrap()
    };
    for pattern in Pattern::ALL {
        // A relay strips the secure bit from the hello: the server sees a plain hello and
        // answers plainly; the client refuses the plain reply.
        let (mut client, hello_payload) =
            SecureSession::initiator(&client_config(pattern, &cid, sid.public_key(), limits()))
                .unwrap();
        let mut stripped = hello_payload.clone();
        stripped[6] &= !(SECURE as u8);
        let mut server = responder(&sid);
        assert_eq!(server.read_hello(&stripped).unwrap().secure, None);
        let plain_reply = handshake::build_extended(OFFER, 256);
        assert_eq!(
            client.read_reply(&plain_reply).unwrap_err().code(),
            "INSECURE_PEER"
        );
        let (mut client, _) =
            SecureSession::initiator(&client_config(pattern, &cid, sid.public_key(), limits()))
                .unwrap();
        assert_eq!(
            client.read_reply(&[]).unwrap_err().code(),
            "INSECURE_PEER",
            "a legacy empty reply"
        );
        let (mut client, _) =
            SecureSession::initiator(&client_config(pattern, &cid, sid.public_key(), limits()))
                .unwrap();
        assert_eq!(
            client.read_reply(b"garbage!").unwrap_err().code(),
            "HANDSHAKE_FAILED"
        );

        // A relay clears another capability bit (Cancel) or changes the stated limit: the
        // prologue differs, so the handshake fails on one side or the other.
        for (at, mask) in [(6, 0x02u8), (8, 0x01)] {
            let (mut client, hello_payload) =
                SecureSession::initiator(&client_config(pattern, &cid, sid.public_key(), limits()))
                    .unwrap();
            let mut altered = hello_payload.clone();
            altered[at] ^= mask;
            let mut server = responder(&sid);
            if let Err(e) = server.read_hello(&altered) {
                assert_ne!(pattern, Pattern::Xx);
                assert_eq!(e.code(), "HANDSHAKE_FAILED");
            } else {
                assert_eq!(
                    pattern,
                    Pattern::Xx,
                    "only XX has nothing to authenticate in message 1"
                );
                let reply = server.accept(0x0001, 256).unwrap();
                assert_eq!(
                    client.read_reply(&reply).unwrap_err().code(),
                    "HANDSHAKE_FAILED"
                );
            }
        }

        // A relay alters the reply's cleartext fields: its limit, or strips a capability it accepted.
        for (at, mask) in [(8usize, 0x01u8), (6, 0x01)] {
            let (mut client, hello_payload) =
                SecureSession::initiator(&client_config(pattern, &cid, sid.public_key(), limits()))
                    .unwrap();
            let mut server = responder(&sid);
            server.read_hello(&hello_payload).unwrap();
            let mut reply = server.accept(OFFER, 256).unwrap();
            reply[at] ^= mask;
            assert_eq!(
                client.read_reply(&reply).unwrap_err().code(),
                "HANDSHAKE_FAILED"
            );
        }
        // The reply strips the secure bit itself.
        let (mut client, hello_payload) =
            SecureSession::initiator(&client_config(pattern, &cid, sid.public_key(), limits()))
                .unwrap();
        let mut server = responder(&sid);
        server.read_hello(&hello_payload).unwrap();
        let mut reply = server.accept(OFFER, 256).unwrap();
        reply[6] &= !(SECURE as u8);
        assert_eq!(
            client.read_reply(&reply).unwrap_err().code(),
            "INSECURE_PEER"
        );
    }
}

#[test]
fn men_in_the_middle_and_wrong_keys_fail() {
    let sid = server_identity();
    let cid = client_identity();
    let mallory = Identity::from_seed(&[9; 32]).unwrap();
    for pattern in [Pattern::Ik, Pattern::Nk] {
        // The client expects the real server; a man in the middle answers with its own key.
        let (_, hello_payload) =
            SecureSession::initiator(&client_config(pattern, &cid, sid.public_key(), limits()))
                .unwrap();
        let mut impostor = SecureSession::responder(&ResponderConfig {
            identity: &mallory,
            patterns: &Pattern::ALL,
            ciphers: &Cipher::ALL,
            limits: limits(),
            ephemeral: None,
        })
        .unwrap();
        assert_eq!(
            impostor.read_hello(&hello_payload).unwrap_err().code(),
            "HANDSHAKE_FAILED"
        );
        // The client was given a wrong key for the real server.
        let (_, hello_payload) = SecureSession::initiator(&client_config(
            pattern,
            &cid,
            mallory.public_key(),
            limits(),
        ))
        .unwrap();
        let mut server = SecureSession::responder(&ResponderConfig {
            identity: &sid,
            patterns: &Pattern::ALL,
            ciphers: &Cipher::ALL,
            limits: limits(),
            ephemeral: None,
        })
        .unwrap();
        assert_eq!(
            server.read_hello(&hello_payload).unwrap_err().code(),
            "HANDSHAKE_FAILED"
        );
    }
    // XX: an impostor completes message 2 with its own key; the client sees that key and the
    // caller refuses it (docs/security.md: the server-key callback).
    let (mut client, hello_payload) = SecureSession::initiator(&client_config(
        Pattern::Xx,
        &cid,
        sid.public_key(),
        limits(),
    ))
    .unwrap();
    let mut impostor = SecureSession::responder(&ResponderConfig {
        identity: &mallory,
        patterns: &Pattern::ALL,
        ciphers: &Cipher::ALL,
        limits: limits(),
        ephemeral: None,
    })
    .unwrap();
    impostor.read_hello(&hello_payload).unwrap();
    let reply = client
        .read_reply(&impostor.accept(OFFER, 1).unwrap())
        .unwrap();
    assert_eq!(reply.server_key, mallory.public_key());
    assert_ne!(reply.server_key, sid.public_key());
    assert!(!client.is_established());
    // Third messages that were altered, or sent out of turn.
    let mut p = pair(Pattern::Ik);
    assert_eq!(
        p.server.read_finish(b"x").unwrap_err().code(),
        "HANDSHAKE_FAILED"
    );
    assert_eq!(p.client.finish().unwrap_err().code(), "HANDSHAKE_FAILED");
}

#[test]
fn xx_server_holds_at_the_third_message_and_opens_what_follows() {
    let sid = server_identity();
    let cid = client_identity();
    let (mut client, h) =
        SecureSession::initiator(&client_config(Pattern::Xx, &cid, [0; 32], limits())).unwrap();
    let mut server = SecureSession::responder(&ResponderConfig {
        identity: &sid,
        patterns: &[Pattern::Xx],
        ciphers: &Cipher::ALL,
        limits: limits(),
        ephemeral: None,
    })
    .unwrap();
    let p = push(
        &mut server,
        &encode_frame(MessageType::Handshake, 8, 1, &h).unwrap(),
    );
    server.read_hello(&p.frames[0].1).unwrap();
    let reply = server.accept(0, 16).unwrap();
    assert_eq!(
        server.seal_batch(&[], &mut []).unwrap_err().code(),
        "INVALID_ARGUMENT",
        "no sealing before message 3"
    );
    let r = client.read_reply(&reply).unwrap();
    assert!(!r.established);
    let third = client.finish().unwrap();
    // Message 3 and the first sealed request leave in one write.
    let mut stream = encode_frame(MessageType::Handshake, 8, 2, &third).unwrap();
    let msg3_len = stream.len();
    stream.extend(seal(
        &mut client,
        &[(MessageType::Auth, 3, b"{\"user\":\"a\"}")],
    ));
    let p = push(&mut server, &stream);
    assert_eq!(p.result.unwrap(), (msg3_len, true));
    assert_eq!(server.mode(), Mode::Handshaking);
    assert_eq!(
        server.read_finish(&p.frames[0].1).unwrap(),
        cid.public_key()
    );
    let got = push_ok(&mut server, &stream[msg3_len..]);
    assert_eq!(got[0].1, b"{\"user\":\"a\"}");
    assert_eq!(got[0].0.kind, MessageType::Auth);
    assert!(server.remote_static() == Some(cid.public_key()));
}

#[test]
fn handshake_bounds_and_refusals() {
    let sid = server_identity();
    let cid = client_identity();
    let only_ik = [Pattern::Ik];
    let mut server = SecureSession::responder(&ResponderConfig {
        identity: &sid,
        patterns: &only_ik,
        ciphers: &Cipher::ALL,
        limits: limits(),
        ephemeral: None,
    })
    .unwrap();
    let (_, nk) = SecureSession::initiator(&client_config(
        Pattern::Nk,
        &cid,
        sid.public_key(),
        limits(),
    ))
    .unwrap();
    assert_eq!(
        server.read_hello(&nk).unwrap_err().code(),
        "HANDSHAKE_FAILED",
        "pattern not accepted"
    );
    assert!(server.read_hello(&nk).is_err(), "sticky");

    let responder = || {
        SecureSession::responder(&ResponderConfig {
            identity: &sid,
            patterns: &Pattern::ALL,
            ciphers: &Cipher::ALL,
            limits: limits(),
            ephemeral: None,
        })
        .unwrap()
    };
    // An oversized hello is refused before any Noise work.
    let mut huge = hello::build(0, 0, Pattern::Xx, Cipher::ChaChaPoly, 1, &[0; 1024]).unwrap();
    huge.push(0);
    assert_eq!(
        responder().read_hello(&huge).unwrap_err().code(),
        "HANDSHAKE_FAILED"
    );
    // Out of order steps.
    let mut s = responder();
    assert_eq!(s.accept(0, 1).unwrap_err().code(), "HANDSHAKE_FAILED");
    let mut s = responder();
    let (_, xx) = SecureSession::initiator(&client_config(
        Pattern::Xx,
        &cid,
        sid.public_key(),
        limits(),
    ))
    .unwrap();
    s.read_hello(&xx).unwrap();
    assert_eq!(
        s.accept(0x0100, 1).unwrap_err().code(),
        "INVALID_ARGUMENT",
        "flags the client did not offer"
    );
    assert!(
        s.failure().is_none(),
        "an argument error does not end the session"
    );
    s.accept(0x0001, 1).unwrap();
    // A step-1 hello where message 3 belongs.
    assert_eq!(s.read_finish(&xx).unwrap_err().code(), "HANDSHAKE_FAILED");
    // Bad configurations.
    let bad_limits = SessionLimits {
        max_payload: (1 << 20) + 1,
        ..limits()
    };
    assert_eq!(
        SecureSession::initiator(&client_config(Pattern::Xx, &cid, [0; 32], bad_limits))
            .unwrap_err()
            .code(),
        "INVALID_ARGUMENT"
    );
    let mut no_id = client_config(Pattern::Ik, &cid, sid.public_key(), limits());
    no_id.identity = None;
    assert_eq!(
        SecureSession::initiator(&no_id).unwrap_err().code(),
        "INVALID_ARGUMENT"
    );
    let zero_key = InitiatorConfig {
        server_key: Some([0; 32]),
        ..client_config(Pattern::Nk, &cid, sid.public_key(), limits())
    };
    assert_eq!(
        SecureSession::initiator(&zero_key).unwrap_err().code(),
        "HANDSHAKE_FAILED"
    );
    assert!(
        SecureSession::responder(&ResponderConfig {
            identity: &sid,
            patterns: &[],
            ciphers: &Cipher::ALL,
            limits: limits(),
            ephemeral: None,
        })
        .is_err()
    );
    // A plaintext frame that straddles the switch point ends the handshake.
    let (mut client, h) = SecureSession::initiator(&client_config(
        Pattern::Nk,
        &cid,
        sid.public_key(),
        limits(),
    ))
    .unwrap();
    let mut server = responder();
    server.read_hello(&h).unwrap();
    let reply = server.accept(0, 1).unwrap();
    let partial = encode_frame(MessageType::Heartbeat, 0, 9, b"12345678").unwrap();
    push(&mut client, &partial[..10]).result.unwrap();
    assert_eq!(
        client.read_reply(&reply).unwrap_err().code(),
        "HANDSHAKE_FAILED"
    );
}

#[test]
fn sealed_limits() {
    let small = SessionLimits {
        max_payload: 100,
        ..limits()
    };
    let mut p = pair_with(Pattern::Ik, limits(), small, OFFER, OFFER);
    let w = seal(&mut p.client, &[(MessageType::Command, 1, &[1; 100])]);
    assert_eq!(push_ok(&mut p.server, &w)[0].1.len(), 100);
    let w = seal(&mut p.client, &[(MessageType::Command, 2, &[1; 101])]);
    assert_eq!(
        push(&mut p.server, &w).result.unwrap_err().code(),
        "PAYLOAD_TOO_LARGE"
    );
    let mut p = pair(Pattern::Ik);
    let max = vec![0u8; (1 << 20) - 16];
    let w = seal(&mut p.client, &[(MessageType::Command, 1, &max)]);
    assert_eq!(push_ok(&mut p.server, &w)[0].1.len(), max.len());
    let over = vec![0u8; (1 << 20) - 15];
    let frames = [OutFrame {
        kind: MessageType::Command,
        flags: 0,
        sequence: 1,
        payload: &over,
    }];
    let mut out = vec![0; over.len() + 64];
    assert_eq!(
        p.client.seal_batch(&frames, &mut out).unwrap_err().code(),
        "PAYLOAD_TOO_LARGE"
    );
    let ok = [OutFrame {
        kind: MessageType::Command,
        flags: 0,
        sequence: 1,
        payload: b"hi",
    }];
    assert_eq!(
        p.client.seal_batch(&ok, &mut [0; 20]).unwrap_err().code(),
        "INVALID_ARGUMENT"
    );
    // Nothing was sealed by the refused batches: the next frame still opens.
    let w = seal(&mut p.client, &[(MessageType::Command, 3, b"after")]);
    assert_eq!(push_ok(&mut p.server, &w)[0].1, b"after");
}

#[test]
fn session_reports_itself() {
    use polycall_core::crypto::session::Role;
    let mut p = pair(Pattern::Nk);
    assert_eq!(p.client.role(), Role::Initiator);
    assert_eq!(p.server.role(), Role::Responder);
    assert_eq!(p.client.pattern(), Some(Pattern::Nk));
    assert_eq!(p.server.remote_static(), None, "an NK client has no key");
    assert_eq!(
        p.client.remote_static(),
        Some(server_identity().public_key())
    );
    assert_eq!(p.client.agreed_flags(), OFFER | SECURE);
    assert_eq!(p.client.rekeys(), (0, 0));
    assert!(format!("{:?}", p.client).contains("Sealed"));
    assert!(p.client.failure().is_none());
    // A sealed frame cut short at the end of the stream.
    let w = seal(&mut p.client, &[(MessageType::Command, 1, b"cut")]);
    push(&mut p.server, &w[..w.len() - 1]).result.unwrap();
    assert_eq!(p.server.buffered(), w.len() - 1);
    assert_eq!(p.server.end().unwrap_err().code(), "TRUNCATED_PAYLOAD");
    // A compressed frame that straddles chunks is opened and decompressed from its assembled
    // bytes.
    let offer = OFFER | COMPRESSION;
    let mut q = pair_with(Pattern::Xx, limits(), limits(), offer, offer);
    let body = b"0123456789".repeat(300);
    let w = seal(&mut q.client, &[(MessageType::Command, 1, &body)]);
    let (head, tail) = w.split_at(20);
    assert!(push_ok(&mut q.server, head).is_empty());
    assert_eq!(push_ok(&mut q.server, tail)[0].1, body);
    assert!(q.server.end().is_ok());
}

#[test]
fn aesgcm_sessions_round_trip_and_refuse_tampering() {
    for pattern in Pattern::ALL {
        let mut aes = pair_with_cipher(pattern, Cipher::AesGcm, limits(), limits(), OFFER, OFFER);
        let mut chacha = pair(pattern);
        assert_ne!(aes.client.handshake_hash(), chacha.client.handshake_hash());
        let payloads: Vec<Vec<u8>> = (0..20u32)
            .map(|i| vec![i as u8; (i as usize * 331) % 5000])
            .collect();
        let frames: Vec<(MessageType, u32, &[u8])> = payloads
            .iter()
            .enumerate()
            .map(|(i, body)| (MessageType::Command, i as u32, body.as_slice()))
            .collect();
        let wire = seal(&mut aes.client, &frames);
        assert!(
            wire.windows(8).all(|w| w != [7u8; 8]),
            "no plaintext run on the wire"
        );
        let (a, b) = wire.split_at(wire.len() / 3);
        let mut got = Vec::new();
        for piece in a.chunks(7).chain(b.chunks(1500)) {
            got.extend(push_ok(&mut aes.server, piece));
        }
        let opened: Vec<Vec<u8>> = got.into_iter().map(|(_, payload)| payload).collect();
        assert_eq!(opened, payloads);
        let back = seal(&mut aes.server, &[(MessageType::Response, 3, b"reply")]);
        assert_eq!(push_ok(&mut aes.client, &back)[0].1, b"reply");

        // Any flipped bit, in the header's authenticated bytes or the body, is refused.
        let frame = seal(
            &mut aes.client,
            &[(MessageType::Command, 9, b"sealed with aes")],
        );
        for at in [1usize, 2, 4, 20, frame.len() - 1] {
            let mut p2 =
                pair_with_cipher(pattern, Cipher::AesGcm, limits(), limits(), OFFER, OFFER);
            let mut f = seal(
                &mut p2.client,
                &[(MessageType::Command, 9, b"sealed with aes")],
            );
            f[at] ^= 0x01;
            let pushed = push(&mut p2.server, &f);
            assert!(pushed.frames.is_empty());
            assert_eq!(pushed.result.unwrap_err().code(), "TAMPERED", "byte {at}");
        }
        // A frame of a ChaChaPoly session does not open in an AESGCM one, nor the reverse.
        let chacha_frame = seal(&mut chacha.client, &[(MessageType::Command, 1, b"x")]);
        assert_eq!(
            push(&mut aes.server, &chacha_frame)
                .result
                .unwrap_err()
                .code(),
            "TAMPERED"
        );
        assert_eq!(
            push(&mut chacha.server, &frame).result.unwrap_err().code(),
            "TAMPERED"
        );
    }
}

#[test]
fn a_changed_cipher_offer_fails_the_handshake() {
    let sid = server_identity();
    let cid = client_identity();
    let responder = |ciphers: &[Cipher]| {
        SecureSession::responder(&ResponderConfig {
            identity: &sid,
            patterns: &Pattern::ALL,
            ciphers,
            limits: limits(),
            ephemeral: None,
        })
        .unwrap()
    };
    for pattern in Pattern::ALL {
        for cipher in Cipher::ALL {
            let other = if cipher == Cipher::AesGcm {
                Cipher::ChaChaPoly
            } else {
                Cipher::AesGcm
            };
            let mut config = client_config(pattern, &cid, sid.public_key(), limits());
            config.cipher = cipher;
            // A relay rewrites the hello's cipher byte: the server runs another protocol name
            // and prologue, so IK and NK fail on message 1 and XX on message 2, whether or not
            // the relay puts the byte back in the reply.
            for restore in [false, true] {
                let (mut client, hello_payload) = SecureSession::initiator(&config).unwrap();
                assert_eq!(hello_payload[15], cipher.id());
                let mut altered = hello_payload.clone();
                altered[15] = other.id();
                let mut server = responder(&Cipher::ALL);
                match server.read_hello(&altered) {
                    Err(e) => {
                        assert_ne!(pattern, Pattern::Xx);
                        assert_eq!(e.code(), "HANDSHAKE_FAILED");
                    }
                    Ok(h) => {
                        assert_eq!(pattern, Pattern::Xx);
                        assert_eq!(h.secure.unwrap().cipher, other);
                        let mut reply = server.accept(OFFER, 256).unwrap();
                        if restore {
                            reply[15] = cipher.id();
                        }
                        assert_eq!(
                            client.read_reply(&reply).unwrap_err().code(),
                            "HANDSHAKE_FAILED"
                        );
                    }
                }
            }
            // A reply that names another cipher than the hello is refused.
            let (mut client, hello_payload) = SecureSession::initiator(&config).unwrap();
            let mut server = responder(&Cipher::ALL);
            server.read_hello(&hello_payload).unwrap();
            let mut reply = server.accept(OFFER, 256).unwrap();
            reply[15] = other.id();
            assert_eq!(
                client.read_reply(&reply).unwrap_err().code(),
                "HANDSHAKE_FAILED"
            );
            // A server that does not accept the client's cipher refuses the hello.
            let (_, hello_payload) = SecureSession::initiator(&config).unwrap();
            let mut strict = responder(&[other]);
            let e = strict.read_hello(&hello_payload).unwrap_err();
            assert_eq!(e.code(), "HANDSHAKE_FAILED");
            assert!(e.to_string().contains(cipher.name()), "{e}");
        }
    }
    assert!(
        SecureSession::responder(&ResponderConfig {
            identity: &sid,
            patterns: &Pattern::ALL,
            ciphers: &[],
            limits: limits(),
            ephemeral: None,
        })
        .is_err()
    );
}

/// One handshake with fixed ephemerals on both sides: every handshake byte, the handshake hash,
/// and a frame sealed each way.
fn fixed_run(pattern: Pattern, cid: &Identity, sid: &Identity) -> Vec<Vec<u8>> {
    let mut config = client_config(pattern, cid, sid.public_key(), limits());
    config.ephemeral = Some([0x11; 32]);
    let (mut client, hello) = SecureSession::initiator(&config).unwrap();
    let mut server = SecureSession::responder(&ResponderConfig {
        identity: sid,
        patterns: &Pattern::ALL,
        ciphers: &Cipher::ALL,
        limits: limits(),
        ephemeral: Some([0x22; 32]),
    })
    .unwrap();
    server.read_hello(&hello).unwrap();
    let reply = server.accept(OFFER, 256).unwrap();
    client.read_reply(&reply).unwrap();
    let mut third = Vec::new();
    if pattern == Pattern::Xx {
        third = client.finish().unwrap();
        server.read_finish(&third).unwrap();
    }
    let hash = client.handshake_hash().unwrap();
    assert_eq!(server.handshake_hash(), Some(hash));
    let up = seal(&mut client, &[(MessageType::Command, 2, b"up")]);
    let down = seal(&mut server, &[(MessageType::Response, 2, b"down")]);
    vec![hello, reply, third, hash.to_vec(), up, down]
}

#[test]
fn the_static_dh_cache_changes_no_byte_and_is_per_identity() {
    for pattern in Pattern::ALL {
        let (sid, cid) = (server_identity(), client_identity());
        let cold = fixed_run(pattern, &cid, &sid);
        let cached = usize::from(pattern == Pattern::Ik);
        assert_eq!(sid.dh_cache().len(), cached, "{pattern:?}: only IK has ss");
        assert_eq!(cid.dh_cache().len(), cached, "{pattern:?}");
        // Both sides now take ss from their caches.
        let warm = fixed_run(pattern, &cid, &sid);
        assert_eq!(cold, warm, "{pattern:?}: a cache hit changes nothing");
        // Fresh identities of the same seeds (empty caches) agree too, and so does a cache
        // that was cleared.
        assert_eq!(
            fixed_run(pattern, &client_identity(), &server_identity()),
            cold
        );
        sid.dh_cache().clear();
        assert_eq!(fixed_run(pattern, &cid, &sid), cold);
    }
    // One server identity, many clients: the cache keeps at most the bound.
    let sid = server_identity();
    for i in 0..300u16 {
        let mut seed = [5u8; 32];
        seed[..2].copy_from_slice(&i.to_le_bytes());
        let cid = Identity::from_seed(&seed).unwrap();
        let mut p = pair_for(&cid, &sid);
        let wire = seal(&mut p.0, &[(MessageType::Command, 2, b"x")]);
        assert_eq!(push_ok(&mut p.1, &wire)[0].1, b"x");
        assert!(sid.dh_cache().len() <= polycall_core::crypto::identity::STATIC_DH_CACHE);
    }
    assert_eq!(
        sid.dh_cache().len(),
        polycall_core::crypto::identity::STATIC_DH_CACHE
    );
}

/// An IK client and server session of these identities, established (random ephemerals).
fn pair_for(cid: &Identity, sid: &Identity) -> (SecureSession, SecureSession) {
    ik_pair(cid, sid, Cipher::ChaChaPoly, OFFER, None)
}

/// An established IK pair; `ephemerals` fixes both sides' ephemeral keys.
fn ik_pair(
    cid: &Identity,
    sid: &Identity,
    cipher: Cipher,
    offer: u16,
    ephemerals: Option<([u8; 32], [u8; 32])>,
) -> (SecureSession, SecureSession) {
    let mut config = client_config(Pattern::Ik, cid, sid.public_key(), limits());
    config.ephemeral = ephemerals.map(|e| e.0);
    config.cipher = cipher;
    config.flags = offer;
    let (mut client, hello) = SecureSession::initiator(&config).unwrap();
    let mut server = SecureSession::responder(&ResponderConfig {
        identity: sid,
        patterns: &Pattern::ALL,
        ciphers: &Cipher::ALL,
        limits: limits(),
        ephemeral: ephemerals.map(|e| e.1),
    })
    .unwrap();
    server.read_hello(&hello).unwrap();
    client
        .read_reply(&server.accept(offer, 256).unwrap())
        .unwrap();
    (client, server)
}

#[test]
fn a_responder_draws_its_ephemeral_when_created_and_a_fixed_one_overrides_it() {
    let (sid, cid) = (server_identity(), client_identity());
    let mut config = client_config(Pattern::Nk, &cid, sid.public_key(), limits());
    config.ephemeral = Some([0x11; 32]);
    let replies: Vec<Vec<u8>> = [None, None, Some([0x22; 32]), Some([0x22; 32])]
        .into_iter()
        .map(|ephemeral| {
            let mut server = SecureSession::responder(&ResponderConfig {
                identity: &sid,
                patterns: &Pattern::ALL,
                ciphers: &Cipher::ALL,
                limits: limits(),
                ephemeral,
            })
            .unwrap();
            let (mut client, hello) = SecureSession::initiator(&config).unwrap();
            server.read_hello(&hello).unwrap();
            let reply = server.accept(OFFER, 256).unwrap();
            assert!(client.read_reply(&reply).unwrap().established);
            // The reply's first 32 bytes of message 2 are the responder's ephemeral key.
            reply
        })
        .collect();
    assert_ne!(replies[0], replies[1], "each session draws its own pair");
    assert_eq!(
        replies[2], replies[3],
        "a fixed ephemeral overrides the drawn one"
    );
    assert_ne!(replies[0], replies[2]);
    // A session's pair serves one handshake: once established, a second hello is refused.
    let mut server = SecureSession::responder(&ResponderConfig {
        identity: &sid,
        patterns: &Pattern::ALL,
        ciphers: &Cipher::ALL,
        limits: limits(),
        ephemeral: None,
    })
    .unwrap();
    let (_, hello) = SecureSession::initiator(&config).unwrap();
    server.read_hello(&hello).unwrap();
    server.accept(OFFER, 256).unwrap();
    assert!(server.read_hello(&hello).is_err());
}

/// Lays frames out the way [`SecureSession::seal_in_place`] takes them: a provisional header
/// (with the body's length), the body, and room for the tag.
fn laid_out(frames: &[(MessageType, u32, &[u8])]) -> Vec<u8> {
    let mut buf = Vec::new();
    for &(kind, sequence, body) in frames {
        buf.extend([1, kind as u8, 0, 0]);
        buf.extend(sequence.to_le_bytes());
        buf.extend((body.len() as u32).to_le_bytes());
        buf.extend([0xee; 4]);
        buf.extend(body);
        buf.extend([0xee; 16]);
    }
    buf
}

/// An established IK pair with fixed ephemerals on both sides: two calls give sessions with the
/// same keys.
fn fixed_pair(cipher: Cipher, offer: u16) -> (SecureSession, SecureSession) {
    let (sid, cid) = (server_identity(), client_identity());
    ik_pair(&cid, &sid, cipher, offer, Some(([0x11; 32], [0x22; 32])))
}

#[test]
fn sealing_in_place_writes_the_bytes_of_a_batch_and_checks_its_layout_first() {
    let compressible = b"polycall ".repeat(300);
    let mut noise = vec![0u8; 700];
    let mut x = 0x1234_5678u32;
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let frames: [(MessageType, u32, &[u8]); 5] = [
        (MessageType::Command, 2, &compressible),
        (MessageType::Response, 3, b"small"),
        (MessageType::Heartbeat, 0, b""),
        (MessageType::Command, 4, &noise),
        (MessageType::Error, 5, &compressible[..1000]),
    ];
    for cipher in Cipher::ALL {
        for offer in [OFFER, OFFER | COMPRESSION] {
            let (mut a, _) = fixed_pair(cipher, offer);
            let (mut b, mut server) = fixed_pair(cipher, offer);
            let batch = seal(&mut a, &frames);
            let mut buf = laid_out(&frames);
            let n = b.seal_in_place(&mut buf).unwrap();
            assert_eq!(&buf[..n], &batch[..], "{cipher:?} {offer:#x}: same bytes");
            if offer & COMPRESSION != 0 {
                assert!(n < buf.len() - 2000, "compressed frames closed up");
            }
            let got = push_ok(&mut server, &buf[..n]);
            assert_eq!(got.len(), frames.len());
            for (g, f) in got.iter().zip(&frames) {
                assert_eq!((g.0.kind, g.0.sequence, &g.1[..]), (f.0, f.1, f.2));
            }
            // A layout that overruns the region, or names no message type, is refused before
            // anything is sealed: no nonce is used and the session goes on.
            let mut short = laid_out(&frames[..2]);
            short.pop();
            assert_eq!(
                b.seal_in_place(&mut short).unwrap_err().code(),
                "INVALID_ARGUMENT"
            );
            let mut bad = laid_out(&frames[..2]);
            bad[1] = 9;
            assert!(b.seal_in_place(&mut bad).is_err());
            let mut huge = laid_out(&frames[1..2]);
            huge[8..12].copy_from_slice(&(1u32 << 20).to_le_bytes());
            assert_eq!(
                b.seal_in_place(&mut huge).unwrap_err().code(),
                "PAYLOAD_TOO_LARGE"
            );
            let mut next = laid_out(&frames[1..2]);
            let n = b.seal_in_place(&mut next).unwrap();
            assert_eq!(push_ok(&mut server, &next[..n])[0].1, b"small");
            assert_eq!(b.seal_in_place(&mut []).unwrap(), 0);
        }
    }
    // Nothing is sealed before the handshake completes.
    let sid = server_identity();
    let cid = client_identity();
    let (mut early, _) = SecureSession::initiator(&client_config(
        Pattern::Ik,
        &cid,
        sid.public_key(),
        limits(),
    ))
    .unwrap();
    let mut buf = laid_out(&frames[1..2]);
    assert_eq!(
        early.seal_in_place(&mut buf).unwrap_err().code(),
        "INVALID_ARGUMENT"
    );
}

/// A pseudo-random body of `len` bytes (xorshift), incompressible.
fn noise_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn small_frames_of_one_region_travel_as_sealed_batches() {
    // 150 frames: mostly small, a 5000-byte one (too big for a batch) in the middle, a
    // compressible 1500-byte one, and empty heartbeats.
    let bodies: Vec<Vec<u8>> = (0..150u32)
        .map(|i| match i {
            70 => noise_bytes(5000, i),
            71 => b"polycall ".repeat(170),
            _ if i % 9 == 0 => Vec::new(),
            _ => noise_bytes((i as usize * 37) % 200, i),
        })
        .collect();
    let frames: Vec<(MessageType, u32, &[u8])> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let kind = if b.is_empty() {
                MessageType::Heartbeat
            } else {
                MessageType::Command
            };
            (kind, i as u32 + 2, b.as_slice())
        })
        .collect();
    for cipher in Cipher::ALL {
        for offer in [OFFER | BATCHES, OFFER | BATCHES | COMPRESSION] {
            let (mut client, mut server) = fixed_pair(cipher, offer);
            let mut buf = laid_out(&frames);
            let n = client.seal_in_place(&mut buf).unwrap();
            let wire = &buf[..n];
            let outer = split_frames(wire);
            let batches: Vec<&Vec<u8>> = outer
                .iter()
                .filter(|f| u16::from_le_bytes([f[2], f[3]]) & BATCH != 0)
                .collect();
            assert!(
                outer.len() < 12,
                "{cipher:?} {offer:#x}: 150 frames in {} sealed frames",
                outer.len()
            );
            for f in &outer {
                assert_eq!(f[2] & 1, 1, "every wire frame is sealed");
                assert_eq!(&f[12..16], &[0; 4]);
            }
            for b in &batches {
                assert_eq!(b[1], MessageType::Command as u8);
                assert_eq!(&b[4..8], &[0; 4], "a batch's sequence is 0");
                assert!(b.len() - 32 <= BATCH_MAX_BODY);
            }
            assert!(
                outer
                    .iter()
                    .any(|f| f.len() == 16 + 5000 + 16 && f[2] & 1 == 1),
                "the 5000-byte frame goes alone"
            );
            assert!(!wire.windows(9).any(|w| w == b"polycall "), "no plaintext");
            // Whole, and byte by byte (batches assembled across chunks).
            for whole in [true, false] {
                let (_, mut fresh) = fixed_pair(cipher, offer);
                let receiver = if whole { &mut server } else { &mut fresh };
                let got: Vec<(polycall_core::Header, Vec<u8>)> = if whole {
                    push_ok(receiver, wire)
                } else {
                    wire.iter()
                        .flat_map(|b| push_ok(receiver, std::slice::from_ref(b)))
                        .collect()
                };
                assert_eq!(got.len(), frames.len());
                for (g, f) in got.iter().zip(&frames) {
                    assert_eq!((g.0.kind, g.0.sequence, &g.1[..]), (f.0, f.1, f.2));
                    assert_eq!(g.0.flags & (flags::ENCRYPTED | BATCH), flags::ENCRYPTED);
                }
            }
        }
    }
}

#[test]
fn a_decode_call_stops_before_a_batch_could_exceed_max_frames() {
    let bodies: Vec<Vec<u8>> = (0..600u32).map(|i| noise_bytes(8, i)).collect();
    let frames: Vec<(MessageType, u32, &[u8])> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (MessageType::Command, i as u32, b.as_slice()))
        .collect();
    let (mut client, mut server) = fixed_pair(Cipher::AesGcm, OFFER | BATCHES);
    let mut buf = laid_out(&frames);
    let n = client.seal_in_place(&mut buf).unwrap();
    let mut chunk = buf[..n].to_vec();
    let mut at = 0;
    let mut seen = 0usize;
    let mut calls = 0;
    while at < n {
        let mut count = 0usize;
        let st = server
            .decode(&mut chunk[at..], 2 * BATCH_MAX_FRAMES, |_| count += 1)
            .unwrap();
        assert!(
            count <= 2 * BATCH_MAX_FRAMES,
            "call {calls}: {count} frames"
        );
        at += st.consumed;
        seen += count;
        calls += 1;
    }
    assert_eq!(seen, 600);
    assert!(calls >= 600 / (2 * BATCH_MAX_FRAMES));
}

#[test]
fn batches_only_when_both_sides_agree_and_the_batch_flag_is_the_sessions() {
    let frames: [(MessageType, u32, &[u8]); 3] = [
        (MessageType::Command, 2, b"one"),
        (MessageType::Command, 3, b"two"),
        (MessageType::Command, 4, b"three"),
    ];
    // The server accepts without BATCHES: three sealed frames, and a caller's 0x0100 flag
    // passes through as an advisory bit.
    let Pair {
        mut client,
        mut server,
        ..
    } = pair_with(Pattern::Ik, limits(), limits(), OFFER | BATCHES, OFFER);
    let mut buf = laid_out(&frames);
    buf[2..4].copy_from_slice(&BATCH.to_le_bytes());
    let n = client.seal_in_place(&mut buf).unwrap();
    assert_eq!(split_frames(&buf[..n]).len(), 3);
    let got = push_ok(&mut server, &buf[..n]);
    assert_eq!(got[0].0.flags, BATCH | flags::ENCRYPTED);
    assert_eq!(got[0].1, b"one");
    // Agreed: the caller's 0x0100 is dropped, on batched and staged frames alike.
    let (mut client, mut server) = fixed_pair(Cipher::ChaChaPoly, OFFER | BATCHES);
    let mut buf = laid_out(&frames);
    buf[2..4].copy_from_slice(&BATCH.to_le_bytes());
    let n = client.seal_in_place(&mut buf).unwrap();
    assert_eq!(split_frames(&buf[..n]).len(), 1);
    let mut wire = buf[..n].to_vec();
    let staged = [OutFrame {
        kind: MessageType::Command,
        flags: BATCH | 8,
        sequence: 5,
        payload: b"staged",
    }];
    let mut out = vec![0; SecureSession::sealed_bound(1, 6)];
    let m = client.seal_batch(&staged, &mut out).unwrap();
    wire.extend_from_slice(&out[..m]);
    let got = push_ok(&mut server, &wire);
    assert_eq!(
        got.iter()
            .map(|g| (g.0.flags, g.1.clone()))
            .collect::<Vec<_>>(),
        [
            (1, b"one".to_vec()),
            (1, b"two".to_vec()),
            (1, b"three".to_vec()),
            (9, b"staged".to_vec())
        ]
    );
    // A batch is one wire frame for the nonce: altering, replaying or dropping it fails.
    let (mut client, mut server) = fixed_pair(Cipher::ChaChaPoly, OFFER | BATCHES);
    let mut one = laid_out(&frames);
    let n1 = client.seal_in_place(&mut one).unwrap();
    let mut two = laid_out(&frames);
    let n2 = client.seal_in_place(&mut two).unwrap();
    let mut tampered = one[..n1].to_vec();
    tampered[16 + 16 + 1] ^= 1;
    let p = push(
        &mut fixed_pair(Cipher::ChaChaPoly, OFFER | BATCHES).1,
        &tampered,
    );
    assert_eq!(p.result.unwrap_err().code(), "TAMPERED");
    assert!(p.frames.is_empty(), "nothing of a batch that does not open");
    let p = push(
        &mut fixed_pair(Cipher::ChaChaPoly, OFFER | BATCHES).1,
        &two[..n2],
    );
    assert_eq!(
        p.result.unwrap_err().code(),
        "TAMPERED",
        "the first batch dropped"
    );
    assert_eq!(push_ok(&mut server, &one[..n1]).len(), 3);
    let p = push(&mut server, &one[..n1]);
    assert_eq!(p.result.unwrap_err().code(), "TAMPERED", "replayed");
}

#[test]
fn a_batch_over_its_limit_is_refused_at_its_header() {
    let (_, mut server) = fixed_pair(Cipher::AesGcm, OFFER | BATCHES);
    let mut head = [0u8; 16];
    head[0] = 1;
    head[1] = MessageType::Command as u8;
    head[2..4].copy_from_slice(&(BATCH | 1).to_le_bytes());
    head[8..12].copy_from_slice(&((BATCH_MAX_BODY + 17) as u32).to_le_bytes());
    let p = push(&mut server, &head);
    assert_eq!(p.result.unwrap_err().code(), "PAYLOAD_TOO_LARGE");
    assert_eq!(server.buffered(), 0, "nothing held");
}
