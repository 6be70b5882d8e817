//! The v1 payload checksum (docs/protocol.md §2): a 32-bit rotate-left-5-and-add over the payload
//! bytes, starting from 0, with no final mixing.
//!
//! # Breaking the dependency chain
//!
//! Computed byte by byte, every step waits for the previous one: a rotate and an add, about
//! two cycles a byte, which a JIT reaches as well as a compiler. For long inputs this module
//! splits each 2 KiB block into eight 256-byte segments and runs the exact recurrence on all
//! eight at once (independent chains keep the CPU's ALUs busy). Each segment needs its start
//! value, which depends on everything before it; it is predicted with arithmetic modulo
//! `M = 2^32 - 1`, where rotating left by 5 is multiplying by 32, so a segment's effect is
//! `start * 32^256 + Σ 32^(255-i) * b_i (mod M)` and `32^256 ≡ 1`. The sum only needs the
//! column sums of the segment viewed as rows of 32 bytes, which vectorises.
//!
//! The prediction is exact unless one of the wrapping additions carried out of bit 31 (the
//! modular model has no carries), or the true value is `0xffff_ffff` (which is `≡ 0`). Both
//! are rare in ordinary data, and both are caught: the first segment starts from the exact
//! value, and each segment's exact end must equal the next segment's predicted start. On the
//! first disagreement the rest of the block is recomputed serially from the last exact value,
//! and the next 16 blocks run serially, since carry-heavy inputs continue: a payload of one
//! repeated byte carries about every 32 bytes. Such inputs run at 0.8-0.97x of the serial
//! loop; text, JSON, msgpack and random bytes essentially never carry and run about 1.6x
//! faster. The result is always the serial result.

const LANES: usize = 8;
/// Segment length: a multiple of 32, so `32^SEGMENT ≡ 1 (mod 2^32 - 1)`.
const SEGMENT: usize = 256;
const BLOCK: usize = LANES * SEGMENT;
/// Below this, the serial loop wins.
const PARALLEL_MIN: usize = BLOCK;
/// Blocks to run serially after a misprediction.
const COOL_DOWN: u32 = 16;

/// Checksum of a whole payload.
///
/// ```
/// assert_eq!(polycall_core::checksum(b"hello"), 0x06b4_3def);
/// assert_eq!(polycall_core::checksum(&[]), 0);
/// ```
#[inline]
pub fn checksum(data: &[u8]) -> u32 {
    update(0, data)
}

/// Continues a checksum over more bytes: `update(update(0, a), b) == checksum(a ++ b)`.
/// Lets a decoder verify a payload incrementally while it arrives in pieces.
#[inline]
pub fn update(acc: u32, data: &[u8]) -> u32 {
    // Small payloads (most frames) take the serial loop inline; the parallel path stays out of
    // line so callers in hot loops do not grow.
    if data.len() < PARALLEL_MIN {
        serial(acc, data)
    } else {
        update_long(acc, data)
    }
}

#[inline(never)]
fn update_long(acc: u32, data: &[u8]) -> u32 {
    let mut acc = acc;
    let mut cool_down = 0;
    let mut blocks = data.chunks_exact(BLOCK);
    for block in &mut blocks {
        if cool_down > 0 {
            cool_down -= 1;
            acc = serial(acc, block);
            continue;
        }
        let (next, predicted) = parallel_block(acc, block);
        acc = next;
        if !predicted {
            cool_down = COOL_DOWN;
        }
    }
    serial(acc, blocks.remainder())
}

/// The plain recurrence, four bytes per loop iteration.
#[inline]
fn serial(acc: u32, data: &[u8]) -> u32 {
    let mut acc = acc;
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        if let [a, b, c, d] = *q {
            acc = acc.rotate_left(5).wrapping_add(u32::from(a));
            acc = acc.rotate_left(5).wrapping_add(u32::from(b));
            acc = acc.rotate_left(5).wrapping_add(u32::from(c));
            acc = acc.rotate_left(5).wrapping_add(u32::from(d));
        }
    }
    for &b in quads.remainder() {
        acc = acc.rotate_left(5).wrapping_add(u32::from(b));
    }
    acc
}

/// One's-complement addition (end-around carry): addition modulo `2^32 - 1`.
#[inline]
fn ones_add(a: u32, b: u32) -> u32 {
    let (s, carried) = a.overflowing_add(b);
    s.wrapping_add(u32::from(carried))
}

/// `Σ 32^(SEGMENT-1-i) * seg[i] (mod 2^32 - 1)`, from the column sums of 32-byte rows:
/// byte `i` is weighted by `2^(5 * (31 - i % 32) mod 32)`, a rotation of its column's sum.
#[inline]
fn segment_residue(segment: &[u8]) -> u32 {
    let mut columns = [0u16; 32];
    for row in segment.chunks_exact(32) {
        for (c, &b) in columns.iter_mut().zip(row) {
            // SEGMENT / 32 = 8 rows of at most 255: no overflow of u16.
            *c += u16::from(b);
        }
    }
    let mut sum = 0u64;
    let mut shift = 5 * 31 % 32;
    for c in columns {
        sum += u64::from(u32::from(c).rotate_left(shift));
        shift = (shift + 32 - 5) % 32;
    }
    // Fold to 32 bits modulo 2^32 - 1 (2^32 ≡ 1).
    let folded = (sum & 0xffff_ffff) + (sum >> 32);
    let folded = (folded & 0xffff_ffff) + (folded >> 32);
    u32::try_from(folded).unwrap_or(u32::MAX)
}

/// Runs one block as eight interleaved exact chains from predicted starts. Returns the exact
/// value after the block and whether every prediction held.
fn parallel_block(acc: u32, block: &[u8]) -> (u32, bool) {
    let mut segments = block.chunks_exact(SEGMENT);
    let mut seg = || segments.next().unwrap_or_default();
    let s = [seg(), seg(), seg(), seg(), seg(), seg(), seg(), seg()];

    // Predicted starts: start[k + 1] = start[k] + residue(segment k)  (mod 2^32 - 1).
    let mut starts = [acc; LANES];
    let mut r = acc;
    for (k, segment) in s.iter().take(LANES - 1).enumerate() {
        r = ones_add(r, segment_residue(segment));
        if let Some(slot) = starts.get_mut(k + 1) {
            // The canonical representative; a true 0xffff_ffff is caught by the check below.
            *slot = if r == u32::MAX { 0 } else { r };
        }
    }

    let [s0, s1, s2, s3, s4, s5, s6, s7] = s;
    let [
        mut a0,
        mut a1,
        mut a2,
        mut a3,
        mut a4,
        mut a5,
        mut a6,
        mut a7,
    ] = starts;
    let step = |a: u32, b: u8| a.rotate_left(5).wrapping_add(u32::from(b));
    for (((((((b0, b1), b2), b3), b4), b5), b6), b7) in s0
        .iter()
        .zip(s1)
        .zip(s2)
        .zip(s3)
        .zip(s4)
        .zip(s5)
        .zip(s6)
        .zip(s7)
    {
        a0 = step(a0, *b0);
        a1 = step(a1, *b1);
        a2 = step(a2, *b2);
        a3 = step(a3, *b3);
        a4 = step(a4, *b4);
        a5 = step(a5, *b5);
        a6 = step(a6, *b6);
        a7 = step(a7, *b7);
    }
    let ends = [a0, a1, a2, a3, a4, a5, a6, a7];

    // Segment 0 started exact; segment k + 1's start is exact iff segment k's exact end equals it.
    for (k, (end, next_start)) in ends.iter().zip(starts.iter().skip(1)).enumerate() {
        if end != next_start {
            let rest = block.get((k + 1) * SEGMENT..).unwrap_or_default();
            return (serial(*end, rest), false);
        }
    }
    (a7, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(acc: u32, data: &[u8]) -> u32 {
        data.iter()
            .fold(acc, |acc, &b| acc.rotate_left(5).wrapping_add(u32::from(b)))
    }

    fn xorshift(n: usize, mut x: u32) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn spec_examples() {
        assert_eq!(checksum(&[]), 0);
        assert_eq!(checksum(&[0]), 0);
        assert_eq!(checksum(b"hello"), 0x06b4_3def);
        assert_eq!(checksum(&[0xff; 7]), 0xce73_9d20);
        assert_eq!(checksum(&vec![0xff; 1_048_576]), 0x27ff_fffc);
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(checksum(&all), 0x6b5a_d6ad);
    }

    #[test]
    fn residue_matches_the_modular_model() {
        let seg = xorshift(SEGMENT, 7);
        let m = u64::from(u32::MAX);
        let model = seg
            .iter()
            .fold(0u64, |acc, &b| (acc * 32 + u64::from(b)) % m);
        assert_eq!(u64::from(segment_residue(&seg)) % m, model);
    }

    #[test]
    fn parallel_path_equals_serial_on_every_kind_of_input() {
        let mut inputs = vec![
            xorshift(100_000, 2_463_534_242),
            vec![0u8; 20_000],
            vec![0xff; 20_000],
            vec![0xfe; 20_000],
            br#"{"command":"status","data":{"k":[1,2,3]}}"#.repeat(500),
        ];
        // Random data with long 0xff runs in the middle: forces mispredictions and recovery.
        let mut mixed = xorshift(50_000, 99);
        mixed[9_000..15_000].fill(0xff);
        mixed[30_001..30_500].fill(0xff);
        inputs.push(mixed);
        for data in &inputs {
            for len in [PARALLEL_MIN - 1, PARALLEL_MIN, PARALLEL_MIN + 1, data.len()] {
                let d = &data[..len.min(data.len())];
                for start in [0, 1, 0xffff_ffff, 0x8000_0000] {
                    assert_eq!(update(start, d), reference(start, d));
                }
            }
        }
    }

    #[test]
    fn update_composes() {
        let data = xorshift(9_000, 5);
        for split in [0, 1, 3, 4, 5, 4096, 8999, 9000] {
            let (a, b) = data.split_at(split);
            assert_eq!(update(update(0, a), b), checksum(&data));
        }
    }
}
