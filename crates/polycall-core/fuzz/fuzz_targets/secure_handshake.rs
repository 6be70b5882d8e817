//! Fuzzes the secure handshake messages: arbitrary bytes as a client hello (to a server), as a
//! server reply (to a client of each pattern and cipher) and as an XX third message (to a server that
//! accepted a real hello) must end in a value or a coded error, never a panic, and a session
//! that failed stays failed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polycall_core::crypto::{Cipher, Identity};
use polycall_core::crypto::noise::Pattern;
use polycall_core::crypto::session::{
    InitiatorConfig, ResponderConfig, SecureSession, SessionLimits,
};

fn responder(id: &Identity) -> SecureSession {
    SecureSession::responder(&ResponderConfig {
        identity: id,
        patterns: &Pattern::ALL,
        ciphers: &Cipher::ALL,
        limits: SessionLimits::default(),
        ephemeral: Some([5; 32]),
    })
    .unwrap()
}

fn initiator(
    pattern: Pattern,
    cipher: Cipher,
    client: &Identity,
    server: &Identity,
) -> (SecureSession, Vec<u8>) {
    SecureSession::initiator(&InitiatorConfig {
        pattern,
        identity: pattern.initiator_has_static().then_some(client),
        server_key: pattern
            .initiator_knows_responder()
            .then(|| server.public_key()),
        cipher,
        flags: 0x0007,
        max_in_flight: 16,
        limits: SessionLimits::default(),
        ephemeral: Some([6; 32]),
    })
    .unwrap()
}

fn sticky<T: core::fmt::Debug>(s: &mut SecureSession, r: polycall_core::Result<T>) {
    if let Err(e) = r {
        assert!(!e.code().is_empty());
        if e.code() != "INVALID_ARGUMENT" {
            assert_eq!(s.failure(), Some(&e));
            assert_eq!(s.seal_batch(&[], &mut []).unwrap_err(), e);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let server_id = Identity::from_seed(&[1; 32]).unwrap();
    let client_id = Identity::from_seed(&[2; 32]).unwrap();

    // As a client hello.
    let mut s = responder(&server_id);
    let hello = s.read_hello(data);
    let accepted = hello.is_ok();
    sticky(&mut s, hello.map(|_| ()));
    if accepted {
        let r = s.accept(0x0001, 8);
        sticky(&mut s, r);
    }

    for cipher in Cipher::ALL {
        // As a server reply, for each pattern.
        for pattern in Pattern::ALL {
            let (mut c, _) = initiator(pattern, cipher, &client_id, &server_id);
            let r = c.read_reply(data);
            let confirm = matches!(&r, Ok(reply) if !reply.established);
            sticky(&mut c, r);
            if confirm {
                let f = c.finish();
                sticky(&mut c, f);
            }
        }

        // As the third message of a real XX handshake.
        let (mut c, hello) = initiator(Pattern::Xx, cipher, &client_id, &server_id);
        let mut s = responder(&server_id);
        s.read_hello(&hello).unwrap();
        let reply = s.accept(0x0001, 8).unwrap();
        c.read_reply(&reply).unwrap();
        let r = s.read_finish(data);
        sticky(&mut s, r);
    }
});
