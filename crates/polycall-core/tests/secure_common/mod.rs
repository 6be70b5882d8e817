//! Helpers shared by the secure-session tests: a client and a server session that handshake
//! over real v1 frames, and push helpers that collect what a decode delivers.
#![allow(dead_code, missing_docs)]
#![allow(
    clippy::missing_panics_doc,
    reason = "test helpers panic when a handshake that must work does not"
)]

use polycall_core::crypto::noise::Pattern;
use polycall_core::crypto::session::{
    InitiatorConfig, OpenedPayload, OutFrame, ResponderConfig, SecureSession, SessionLimits,
};
use polycall_core::crypto::{Cipher, Identity};
use polycall_core::{Error, Header, MessageType, encode_frame};

pub const OFFER: u16 = 0x0007;

pub fn server_identity() -> Identity {
    Identity::from_seed(&[1; 32]).unwrap()
}

pub fn client_identity() -> Identity {
    Identity::from_seed(&[2; 32]).unwrap()
}

/// What one decode call delivered, and how it ended.
pub struct Pushed {
    pub frames: Vec<(Header, Vec<u8>)>,
    pub result: Result<(usize, bool), Error>,
}

pub fn push(s: &mut SecureSession, bytes: &[u8]) -> Pushed {
    let mut chunk = bytes.to_vec();
    let mut opened = Vec::new();
    let result = s
        .decode(&mut chunk, usize::MAX, |f| opened.push(f))
        .map(|st| (st.consumed, st.held));
    let frames = opened
        .into_iter()
        .map(|f| {
            let payload = match f.payload {
                OpenedPayload::InChunk { start, len } => chunk[start..start + len].to_vec(),
                OpenedPayload::Owned(v) => v,
            };
            (f.header, payload)
        })
        .collect();
    Pushed { frames, result }
}

/// Pushes `bytes`, following holds, and returns every frame; panics on an error.
pub fn push_ok(s: &mut SecureSession, bytes: &[u8]) -> Vec<(Header, Vec<u8>)> {
    let p = push(s, bytes);
    let (consumed, held) = p.result.unwrap();
    assert!(!held && consumed == bytes.len(), "unexpected hold");
    p.frames
}

pub struct Pair {
    pub client: SecureSession,
    pub server: SecureSession,
    pub pattern: Pattern,
}

pub fn limits() -> SessionLimits {
    SessionLimits::default()
}

pub fn client_config(
    pattern: Pattern,
    id: &Identity,
    server_key: [u8; 32],
    limits: SessionLimits,
) -> InitiatorConfig<'_> {
    InitiatorConfig {
        pattern,
        identity: pattern.initiator_has_static().then_some(id),
        server_key: pattern.initiator_knows_responder().then_some(server_key),
        cipher: Cipher::ChaChaPoly,
        flags: OFFER,
        max_in_flight: 64,
        limits,
        ephemeral: None,
    }
}

/// Runs the whole handshake over frames, with the given limits on both sides and `accept`ed
/// flags.
pub fn pair_with(
    pattern: Pattern,
    client_limits: SessionLimits,
    server_limits: SessionLimits,
    offer: u16,
    accept: u16,
) -> Pair {
    pair_with_cipher(
        pattern,
        Cipher::ChaChaPoly,
        client_limits,
        server_limits,
        offer,
        accept,
    )
}

/// [`pair_with`] with the client choosing `cipher`.
pub fn pair_with_cipher(
    pattern: Pattern,
    cipher: Cipher,
    client_limits: SessionLimits,
    server_limits: SessionLimits,
    offer: u16,
    accept: u16,
) -> Pair {
    let sid = server_identity();
    let cid = client_identity();
    let mut config = client_config(pattern, &cid, sid.public_key(), client_limits);
    config.flags = offer;
    config.cipher = cipher;
    let (mut client, hello) = SecureSession::initiator(&config).unwrap();
    let mut server = SecureSession::responder(&ResponderConfig {
        identity: &sid,
        patterns: &Pattern::ALL,
        ciphers: &Cipher::ALL,
        limits: server_limits,
        ephemeral: None,
    })
    .unwrap();
    let p = push(
        &mut server,
        &encode_frame(MessageType::Handshake, 8, 1, &hello).unwrap(),
    );
    assert!(p.result.unwrap().1, "the server holds after the hello");
    let offer_seen = server.read_hello(&p.frames[0].1).unwrap();
    let secure = offer_seen.secure.unwrap();
    assert_eq!(secure.pattern, pattern);
    assert_eq!(secure.cipher, cipher);
    assert_eq!(
        secure.client_key,
        (pattern == Pattern::Ik).then(|| cid.public_key())
    );
    let reply = server.accept(accept, 256).unwrap();
    let p = push(
        &mut client,
        &encode_frame(MessageType::Response, 0, 1, &reply).unwrap(),
    );
    assert!(p.result.unwrap().1, "the client holds after the reply");
    let r = client.read_reply(&p.frames[0].1).unwrap();
    assert_eq!(r.server_key, sid.public_key());
    assert_eq!(r.cipher, cipher);
    assert_eq!(r.max_in_flight, 256);
    assert_eq!(r.established, pattern != Pattern::Xx);
    if pattern == Pattern::Xx {
        let third = client.finish().unwrap();
        let p = push(
            &mut server,
            &encode_frame(MessageType::Handshake, 8, 2, &third).unwrap(),
        );
        assert!(p.result.unwrap().1);
        assert_eq!(
            server.read_finish(&p.frames[0].1).unwrap(),
            cid.public_key()
        );
    }
    assert!(client.is_established() && server.is_established());
    assert_eq!(
        (client.cipher(), server.cipher()),
        (Some(cipher), Some(cipher))
    );
    assert_eq!(client.handshake_hash(), server.handshake_hash());
    Pair {
        client,
        server,
        pattern,
    }
}

pub fn pair(pattern: Pattern) -> Pair {
    pair_with(pattern, limits(), limits(), OFFER, OFFER)
}

pub fn seal(s: &mut SecureSession, frames: &[(MessageType, u32, &[u8])]) -> Vec<u8> {
    let out_frames: Vec<OutFrame<'_>> = frames
        .iter()
        .map(|&(kind, sequence, payload)| OutFrame {
            kind,
            flags: 0,
            sequence,
            payload,
        })
        .collect();
    let total: usize = frames.iter().map(|f| f.2.len()).sum();
    let mut out = vec![0; SecureSession::sealed_bound(frames.len(), total)];
    let n = s.seal_batch(&out_frames, &mut out).unwrap();
    out.truncate(n);
    out
}

/// Splits a byte stream of v1 frames into its frames.
pub fn split_frames(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = stream;
    while rest.len() >= 16 {
        let len = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
        let (f, tail) = rest.split_at(16 + len);
        out.push(f.to_vec());
        rest = tail;
    }
    assert!(rest.is_empty());
    out
}
