//! Seal and open speed of the sealed-frame ciphers, per frame size: a plain timing loop.
//!
//! `cargo run --release -p polycall-core --example aead_speed [-- --quick]` prints, for
//! `ChaChaPoly` and `AESGCM` at 64 B, 1 KiB, 4 KiB and 64 KiB, the time of one seal and one open
//! (the AEAD alone) and of one whole sealed frame (copy, AEAD, header): the best of
//! several rounds, the estimate least disturbed by other load on a shared machine. Figures:
//! docs/security.md, "Performance".

#![allow(
    clippy::cast_precision_loss,
    reason = "timings and byte counts far below 2^52"
)]

use std::time::Instant;

use polycall_core::MessageType;
use polycall_core::crypto::RekeyPolicy;
use polycall_core::crypto::noise::CipherState;
use polycall_core::crypto::primitives::{Aead, Cipher};
use polycall_core::crypto::transport::Direction;

const SIZES: [usize; 4] = [64, 1024, 4096, 65536];

/// Nanoseconds per call of `f` in the fastest of `rounds` rounds of `iters` calls.
fn best_ns(rounds: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        times.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    times.sort_by(f64::total_cmp);
    times.first().copied().unwrap_or(f64::NAN)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 5 } else { 15 };
    println!(
        "preferred cipher here: {} (AES and CLMUL: {})",
        Cipher::preferred().name(),
        Cipher::AesGcm.is_fast_here()
    );
    println!("| cipher | size | seal ns | open ns | seal GB/s | sealed frame ns |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for cipher in Cipher::ALL {
        for size in SIZES {
            let budget = if quick { 2_000_000 } else { 8_000_000 };
            let iters = (budget / (size + 256)).max(16);
            let aead = Aead::with_cipher(cipher, &[7; 32]);
            let ad = [1u8; 12];
            let mut buf = vec![0x5au8; size];
            let mut n = 0u64;
            let seal = best_ns(rounds, iters, || {
                n += 1;
                let tag = aead.seal(n, &ad, &mut buf).unwrap_or([0; 16]);
                std::hint::black_box(tag);
            });
            let tag = aead.seal(0, &ad, &mut buf).unwrap_or([0; 16]);
            let sealed = [buf.as_slice(), tag.as_slice()].concat();
            let mut opened = sealed.clone();
            let open = best_ns(rounds, iters, || {
                opened.copy_from_slice(&sealed);
                std::hint::black_box(aead.open(0, &ad, &mut opened));
            });
            let mut dir = Direction::new(
                CipherState::with_cipher(cipher, &[7; 32]),
                RekeyPolicy::NEVER,
            );
            let body = vec![0x5au8; size];
            let mut out = vec![0u8; size + 32];
            let frame = best_ns(rounds, iters, || {
                let written = dir
                    .seal(MessageType::Command, 0, 1, &body, &mut out)
                    .unwrap_or(0);
                std::hint::black_box(written);
            });
            println!(
                "| {} | {size} | {seal:.0} | {open:.0} | {:.2} | {frame:.0} |",
                cipher.name(),
                size as f64 / seal
            );
        }
    }
}
