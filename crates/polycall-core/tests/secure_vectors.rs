//! Published test vectors through the core's own functions: X25519 (RFC 7748), ChaCha20-Poly1305
//! (RFC 8439), BLAKE2s (RFC 7693), HKDF-SHA256 (RFC 5869), Ed25519 (RFC 8032), and the Noise
//! vectors of the cacophony and snow projects for IK, NK and XX (tests/vectors/noise-vectors.json).
#![allow(missing_docs)]

mod common;

use common::hex;
use std::sync::{Arc, Weak};

use polycall_core::crypto::identity::StaticDhCache;
use polycall_core::crypto::noise::{CipherState, HandshakeKeys, HandshakeState, Pattern};
use polycall_core::crypto::primitives::{self, Aead, Cipher};
use serde_json::Value;

fn h32(s: &str) -> [u8; 32] {
    hex(s).try_into().expect("32 bytes")
}

#[test]
fn rfc7748_x25519_function() {
    // §5.2, the two single-call vectors.
    for (k, u, out) in [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ] {
        assert_eq!(*primitives::x25519(&h32(k), &h32(u)), h32(out));
    }
    // §5.2, iterated: k = u = 9, then k <- X25519(k, u), u <- old k.
    let mut k = [0u8; 32];
    k[0] = 9;
    let mut u = k;
    for i in 1..=1000 {
        let next = *primitives::x25519(&k, &u);
        u = k;
        k = next;
        if i == 1 {
            assert_eq!(
                k,
                h32("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
            );
        }
    }
    assert_eq!(
        k,
        h32("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
    );
}

#[test]
fn rfc7748_diffie_hellman() {
    // §6.1.
    let a = h32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let b = h32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let a_pub = h32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let b_pub = h32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let shared = h32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(primitives::x25519_public(&a), a_pub);
    assert_eq!(primitives::x25519_public(&b), b_pub);
    assert_eq!(*primitives::dh(&a, &b_pub).unwrap(), shared);
    assert_eq!(*primitives::dh(&b, &a_pub).unwrap(), shared);
}

#[test]
fn rfc8439_aead() {
    // §2.8.2.
    let key = h32("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce: [u8; 12] = hex("070000004041424344454647").try_into().unwrap();
    let ad = hex("50515253c0c1c2c3c4c5c6c7");
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let ciphertext = hex(concat!(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b",
        "2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec6",
        "4b6116"
    ));
    let tag: [u8; 16] = hex("1ae10b594f09e26a7e902ecbd0600691").try_into().unwrap();
    let aead = Aead::new(&key);
    let mut buf = plaintext.to_vec();
    assert_eq!(aead.seal_raw(&nonce, &ad, &mut buf).unwrap(), tag);
    assert_eq!(buf, ciphertext);
    buf.extend_from_slice(&tag);
    assert_eq!(aead.open_raw(&nonce, &ad, &mut buf), Some(plaintext.len()));
    assert_eq!(&buf[..plaintext.len()], plaintext);
    let mut sealed = [ciphertext.as_slice(), tag.as_slice()].concat();
    *sealed.last_mut().unwrap() ^= 0x80;
    assert_eq!(aead.open_raw(&nonce, &ad, &mut sealed), None);
}

#[test]
fn gcm_spec_aes256_gcm() {
    // The GCM specification's (McGrew and Viega, as NIST's CAVP) 256-bit test cases 13-16.
    let k15 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
    let p15 = concat!(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
    );
    let c15 = concat!(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa",
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
    );
    let zero = "0000000000000000000000000000000000000000000000000000000000000000";
    let cases = [
        (
            zero,
            "000000000000000000000000",
            "",
            "",
            "",
            "530f8afbc74536b9a963b4f1c4cb738b",
        ),
        (
            zero,
            "000000000000000000000000",
            "00000000000000000000000000000000",
            "",
            "cea7403d4d606b6e074ec5d3baf39d18",
            "d0d1c8a799996bf0265b98b5d48ab919",
        ),
        (
            k15,
            "cafebabefacedbaddecaf888",
            p15,
            "",
            c15,
            "b094dac5d93471bdec1a502270e3cc6c",
        ),
        (
            k15,
            "cafebabefacedbaddecaf888",
            &p15[..120],
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            &c15[..120],
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];
    for (key, nonce, plaintext, ad, ciphertext, tag) in cases {
        let aead = Aead::with_cipher(Cipher::AesGcm, &h32(key));
        let nonce: [u8; 12] = hex(nonce).try_into().unwrap();
        let tag: [u8; 16] = hex(tag).try_into().unwrap();
        let (plaintext, ad, ciphertext) = (hex(plaintext), hex(ad), hex(ciphertext));
        let mut buf = plaintext.clone();
        assert_eq!(aead.seal_raw(&nonce, &ad, &mut buf).unwrap(), tag);
        assert_eq!(buf, ciphertext);
        buf.extend_from_slice(&tag);
        assert_eq!(aead.open_raw(&nonce, &ad, &mut buf), Some(plaintext.len()));
        assert_eq!(buf[..plaintext.len()], plaintext);
        let mut sealed = [ciphertext.as_slice(), tag.as_slice()].concat();
        sealed[ciphertext.len()] ^= 1;
        assert_eq!(
            aead.open_raw(&nonce, &ad, &mut sealed),
            None,
            "an altered tag"
        );
    }
}

#[test]
fn rfc7693_blake2s_and_rfc5869_hkdf() {
    assert_eq!(
        primitives::hash(&[b"abc"]),
        h32("508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
    );
    assert_eq!(
        primitives::hash(&[b"a", b"bc"]),
        primitives::hash(&[b"abc"])
    );
    // RFC 5869 A.1.
    let okm = primitives::hkdf_sha256::<42>(
        &hex("000102030405060708090a0b0c"),
        &[0x0b; 22],
        &hex("f0f1f2f3f4f5f6f7f8f9"),
    )
    .unwrap();
    assert_eq!(
        okm.to_vec(),
        hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    );
}

#[test]
fn rfc8032_ed25519() {
    // §7.1, TEST 1 to 3.
    for (seed, public, message, signature) in [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ] {
        let seed = h32(seed);
        let public = h32(public);
        let message = hex(message);
        let signature: [u8; 64] = hex(signature).try_into().unwrap();
        assert_eq!(primitives::ed25519_public(&seed), public);
        assert_eq!(primitives::ed25519_sign(&seed, &message), signature);
        assert!(primitives::ed25519_verify(&public, &message, &signature));
        let mut other = message.clone();
        other.push(0);
        assert!(!primitives::ed25519_verify(&public, &other, &signature));
        let mut flipped = signature;
        flipped[0] ^= 1;
        assert!(!primitives::ed25519_verify(&public, &message, &flipped));
    }
}

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

#[test]
fn noise_vectors_ik_nk_xx() {
    let file: Value = serde_json::from_str(include_str!("vectors/noise-vectors.json")).unwrap();
    let vectors = file["vectors"].as_array().unwrap();
    let mut seen = std::collections::HashSet::new();
    for v in vectors {
        let protocol = field(v, "protocol").unwrap();
        let (pattern, cipher) = Pattern::ALL
            .into_iter()
            .flat_map(|p| Cipher::ALL.map(|c| (p, c)))
            .find(|(p, c)| p.protocol_name_with(*c) == protocol)
            .unwrap_or_else(|| panic!("{protocol}"));
        seen.insert((pattern, cipher, field(v, "source").unwrap().to_owned()));
        // Without a static-static cache; then with fresh caches (a miss that fills them) and a
        // pre-computed responder ephemeral public key; then again with the caches warm (a hit).
        let i_cache = Arc::new(StaticDhCache::new());
        let r_cache = Arc::new(StaticDhCache::new());
        let weak = (Arc::downgrade(&i_cache), Arc::downgrade(&r_cache));
        for caches in [None, Some(&weak), Some(&weak)] {
            check_vector(v, protocol, pattern, cipher, caches);
        }
        let has_ss = pattern == Pattern::Ik;
        assert_eq!(i_cache.len(), usize::from(has_ss), "{protocol}");
        assert_eq!(r_cache.len(), usize::from(has_ss), "{protocol}");
    }
    assert_eq!(seen.len(), 12, "three patterns, two ciphers, two sources");
}

type Caches = (Weak<StaticDhCache>, Weak<StaticDhCache>);

/// Runs one Noise vector: every message byte for byte, the handshake hash and the transport
/// messages, with or without static-static caches on the two sides.
fn check_vector(
    v: &Value,
    protocol: &str,
    pattern: Pattern,
    cipher: Cipher,
    caches: Option<&Caches>,
) {
    let prologue = hex(field(v, "prologue").unwrap());
    let i_static = field(v, "initiator_static").map(h32);
    let i_eph = h32(field(v, "initiator_ephemeral").unwrap());
    let r_static = h32(field(v, "responder_static").unwrap());
    let r_eph = h32(field(v, "responder_ephemeral").unwrap());
    let i_remote = field(v, "initiator_remote_static").map(h32);
    let mut init = HandshakeState::with_cipher(
        pattern,
        cipher,
        true,
        &prologue,
        HandshakeKeys {
            local_static: i_static.as_ref(),
            local_public: None,
            remote_static: i_remote,
            ephemeral: Some(&i_eph),
            dh_cache: caches.map(|c| &c.0),
            ..HandshakeKeys::default()
        },
    )
    .unwrap();
    let mut resp = HandshakeState::with_cipher(
        pattern,
        cipher,
        false,
        &prologue,
        HandshakeKeys {
            local_static: Some(&r_static),
            local_public: None,
            remote_static: None,
            ephemeral: Some(&r_eph),
            ephemeral_public: caches.map(|_| primitives::x25519_public(&r_eph)),
            dh_cache: caches.map(|c| &c.1),
        },
    )
    .unwrap();
    let messages = v["messages"].as_array().unwrap();
    let mut index = 0;
    while !init.is_finished() {
        let m = &messages[index];
        let payload = hex(field(m, "payload").unwrap());
        let (w, r) = if index % 2 == 0 {
            (&mut init, &mut resp)
        } else {
            (&mut resp, &mut init)
        };
        let mut out = Vec::new();
        w.write_message(&payload, &mut out).unwrap();
        assert_eq!(
            out,
            hex(field(m, "ciphertext").unwrap()),
            "{protocol} message {index}"
        );
        let mut got = Vec::new();
        r.read_message(&out, &mut got).unwrap();
        assert_eq!(got, payload);
        index += 1;
    }
    assert!(resp.is_finished());
    if let Some(hash) = field(v, "handshake_hash") {
        assert_eq!(init.handshake_hash(), h32(hash), "{protocol}");
        assert_eq!(resp.handshake_hash(), h32(hash));
    }
    let (mut i_send, mut i_recv): (CipherState, CipherState) = init.split().unwrap();
    let (mut r_send, mut r_recv) = resp.split().unwrap();
    for (i, m) in messages.iter().enumerate().skip(index) {
        let payload = hex(field(m, "payload").unwrap());
        let (send, recv) = if i % 2 == 0 {
            (&mut i_send, &mut r_recv)
        } else {
            (&mut r_send, &mut i_recv)
        };
        let mut out = Vec::new();
        send.encrypt_with_ad(&[], &payload, &mut out).unwrap();
        assert_eq!(
            out,
            hex(field(m, "ciphertext").unwrap()),
            "{protocol} transport message {i}"
        );
        let mut got = Vec::new();
        assert!(recv.decrypt_with_ad(&[], &out, &mut got).unwrap());
        assert_eq!(got, payload);
    }
}
