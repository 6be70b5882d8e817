//! Fuzzes the sealed-frame opener: on an established session of either cipher, arbitrary bytes
//! (raw, or real sealed frames and sealed batches with bytes flipped where the input says)
//! pushed in two chunks must end in frames or a coded error, never a panic; every frame
//! delivered is one that was sealed, in order, unchanged; and a failed session stays failed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polycall_core::crypto::{Cipher, Identity};
use polycall_core::crypto::hello::{BATCHES, COMPRESSION};
use polycall_core::crypto::noise::Pattern;
use polycall_core::crypto::session::{
    InitiatorConfig, OpenedPayload, OutFrame, ResponderConfig, SecureSession, SessionLimits,
};
use polycall_core::{MessageType, encode_frame};

fn established(compress: bool, cipher: Cipher) -> (SecureSession, SecureSession) {
    let server_id = Identity::from_seed(&[1; 32]).unwrap();
    let client_id = Identity::from_seed(&[2; 32]).unwrap();
    let flags = if compress {
        0x0001 | BATCHES | COMPRESSION
    } else {
        0x0001 | BATCHES
    };
    let limits = SessionLimits {
        max_payload: 64 * 1024,
        compress_threshold: 16,
        ..SessionLimits::default()
    };
    let (mut c, hello) = SecureSession::initiator(&InitiatorConfig {
        pattern: Pattern::Ik,
        identity: Some(&client_id),
        server_key: Some(server_id.public_key()),
        cipher,
        flags,
        max_in_flight: 16,
        limits,
        ephemeral: Some([6; 32]),
    })
    .unwrap();
    let mut s = SecureSession::responder(&ResponderConfig {
        identity: &server_id,
        patterns: &Pattern::ALL,
        ciphers: &Cipher::ALL,
        limits,
        ephemeral: Some([5; 32]),
    })
    .unwrap();
    s.read_hello(&hello).unwrap();
    let reply = s.accept(flags, 8).unwrap();
    c.read_reply(&reply).unwrap();
    (c, s)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Bits of `mode`: 0 real frames, 1 compression, 2 a plain frame after them, 3..=6 where the
    // stream is cut, 7 the cipher.
    let cipher = if mode & 0x80 == 0 {
        Cipher::ChaChaPoly
    } else {
        Cipher::AesGcm
    };
    let (mut client, mut server) = established(mode & 2 != 0, cipher);
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut stream = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        // Real frames from the first half, flips from the second.
        let (body, flips) = rest.split_at(rest.len() / 2);
        let payloads: Vec<&[u8]> = body.chunks(37).collect();
        let frames: Vec<OutFrame<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| OutFrame {
                kind: MessageType::Command,
                flags: 8,
                sequence: i as u32,
                payload: p,
            })
            .collect();
        // The first quarter staged (sealed one by one), the rest laid out and sealed in
        // place, where small frames travel as sealed batches.
        let staged = frames.len() / 4;
        let total: usize = payloads.iter().take(staged).map(|p| p.len()).sum();
        let mut out = vec![0; SecureSession::sealed_bound(staged, total)];
        let n = client.seal_batch(&frames[..staged], &mut out).unwrap();
        out.truncate(n);
        let mut region = Vec::new();
        for f in &frames[staged..] {
            region.extend([1, f.kind as u8, 8, 0]);
            region.extend(f.sequence.to_le_bytes());
            region.extend((f.payload.len() as u32).to_le_bytes());
            region.extend([0; 4]);
            region.extend(f.payload);
            region.extend([0; 16]);
        }
        let n = client.seal_in_place(&mut region).unwrap();
        out.extend_from_slice(&region[..n]);
        sent = payloads.iter().map(|p| p.to_vec()).collect();
        for pair in flips.chunks(2) {
            if let [at, mask] = *pair {
                if !out.is_empty() {
                    let i = usize::from(at) * out.len() / 256;
                    out[i] ^= mask;
                }
            }
        }
        if mode & 4 != 0 {
            out.extend(encode_frame(MessageType::Command, 8, 99, b"plain").unwrap());
        }
        out
    };
    let cut = usize::from((mode >> 3) & 0x0f) * stream.len() / 16;
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut failed = None;
    for range in [0..cut, cut..stream.len()] {
        let chunk = &mut stream[range];
        let mut frames = Vec::new();
        let r = server.decode(chunk, usize::MAX, |f| frames.push(f));
        for f in frames {
            got.push(match f.payload {
                OpenedPayload::InChunk { start, len } => chunk[start..start + len].to_vec(),
                OpenedPayload::Owned(v) => v,
            });
        }
        if let Err(e) = r {
            assert!(!e.code().is_empty());
            failed = Some(e);
            break;
        }
    }
    if let Some(e) = failed {
        assert_eq!(server.failure(), Some(&e));
        assert_eq!(server.decode(&mut [1, 2, 3], 9, |_| ()).unwrap_err(), e);
    }
    if mode & 1 == 1 {
        assert!(got.len() <= sent.len());
        for (g, s) in got.iter().zip(&sent) {
            assert_eq!(g, s, "a delivered frame differs from the one sealed");
        }
    } else {
        assert!(got.is_empty(), "random bytes never open");
    }
});
