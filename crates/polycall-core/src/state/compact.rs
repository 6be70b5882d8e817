//! The compact machine snapshot (docs/state-machines.md, "Compact snapshots"): what the JSON
//! snapshot carries (states with their lock flag, final flag, endpoint, metadata, outgoing
//! transitions and checksum; the current state; the history; a timestamp) in a binary layout
//! that is written and read in one pass, with a CRC-32 over all of it.
//!
//! ```text
//! header (16 bytes)
//!   0  4  magic "PCSM"
//!   4  1  version, 1
//!   5  3  reserved, zero
//!   8  4  body length, u32 little-endian: the bytes after the header
//!  12  4  CRC-32 (IEEE 802.3, as zlib's crc32) of bytes 0..12 followed by the body
//! body
//!   timestamp                    varint (ms)
//!   current                      varint, the current state's id + 1, 0 for none
//!   state count                  varint
//!   per state, in id order:
//!     name, endpoint             string
//!     flags                      u8: 1 locked, 2 final; the other bits zero
//!     checksum                   u32 little-endian, node-polycall's state checksum
//!     metadata count             varint, then per entry in insertion order:
//!       key                      string
//!       kind                     u8: 0 for createdAt, version, lastModified and lockedAt,
//!                                then a varint; 1 for any other key, then its JSON text (string)
//!     target count               varint, then each target's id (varint), in the order added
//!   history count                varint, then per entry, oldest first:
//!     from, to, timestamp        varint each
//! ```
//!
//! A varint is unsigned LEB128 in its shortest form (at most 10 bytes); a string is its UTF-8
//! length as a varint, then the bytes. Integers must be below 2^53 (JavaScript's safe range),
//! as the JSON layout requires.
//!
//! Every encoding is unique (shortest varints, fixed kinds, no padding, nothing after the body),
//! so restoring a compact snapshot and writing it again at the same time gives the same bytes.
//!
//! Restore checks in this order, and changes nothing on any error: the header, the CRC, then the
//! body as it is read (limits, names, metadata, references, each state checksum recomputed over
//! the state's JSON), then the same rules as a JSON snapshot of polycall's layout: the history is
//! a walk that ends in the current state, and no live state is locked. Lengths and counts are
//! bounded by the bytes that remain before anything is allocated for them, so hostile input
//! costs at most its own size.

use std::collections::{HashMap, VecDeque};

use super::json;
use super::machine::{
    Counters, HistoryEntry, MetaKey, MetaValue, RESERVED_METADATA_KEYS, StateId, StateMachine,
    StateRecord, meta_key, state_checksum,
};
use super::snapshot::{Checksums, Restored, SnapshotFormat, invalid};
use crate::error::{Error, Result};

/// The first four bytes of a compact snapshot.
pub const COMPACT_MAGIC: [u8; 4] = *b"PCSM";
/// The version byte this crate writes and reads.
pub const COMPACT_VERSION: u8 = 1;
/// Bytes of the compact snapshot header.
pub const COMPACT_HEADER_BYTES: usize = 16;

/// Largest integer a compact snapshot carries: 2^53 - 1.
const MAX_SAFE: u64 = (1 << 53) - 1;

const LOCKED: u8 = 1;
const FINAL: u8 = 2;
const KIND_INT: u8 = 0;
const KIND_JSON: u8 = 1;

/// CRC-32 lookup tables for slicing by 8 (reflected polynomial 0xEDB88320).
const CRC_TABLES: [[u32; 256]; 8] = crc_tables();

#[allow(
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "evaluated at compile time: an index out of range fails the build, and i < 256"
)]
const fn crc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

fn table(slice: usize, byte: u32) -> u32 {
    CRC_TABLES
        .get(slice)
        .and_then(|t| t.get((byte & 0xff) as usize))
        .copied()
        .unwrap_or(0)
}

/// Continues a CRC-32 (IEEE 802.3, zlib's `crc32`) over `bytes`; start from 0.
///
/// ```
/// use polycall_core::state::crc32;
/// assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
/// ```
pub fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    let mut blocks = bytes.chunks_exact(8);
    for b in &mut blocks {
        let Ok([b0, b1, b2, b3, b4, b5, b6, b7]) = <[u8; 8]>::try_from(b) else {
            continue;
        };
        let lo = u32::from_le_bytes([b0, b1, b2, b3]) ^ c;
        let hi = u32::from_le_bytes([b4, b5, b6, b7]);
        c = table(7, lo)
            ^ table(6, lo >> 8)
            ^ table(5, lo >> 16)
            ^ table(4, lo >> 24)
            ^ table(3, hi)
            ^ table(2, hi >> 8)
            ^ table(1, hi >> 16)
            ^ table(0, hi >> 24);
    }
    for b in blocks.remainder() {
        c = table(0, c ^ u32::from(*b)) ^ (c >> 8);
    }
    !c
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        // The low seven bits, with the continuation bit.
        out.push(u8::try_from(n & 0x7f).unwrap_or(0) | 0x80);
        n >>= 7;
    }
    out.push(u8::try_from(n).unwrap_or(0));
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    put_varint(out, u64::try_from(n).unwrap_or(u64::MAX));
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Reads a compact snapshot's body, every read bounded by what remains.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self, what: &str) -> Result<u8> {
        let (&b, rest) = self
            .rest
            .split_first()
            .ok_or_else(|| invalid(format!("the snapshot ends inside {what}")))?;
        self.rest = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.rest.len() {
            return Err(invalid(format!(
                "{what} needs {n} bytes, {} remain",
                self.rest.len()
            )));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    /// A shortest-form LEB128 integer no larger than 2^53 - 1.
    fn varint(&mut self, what: &str) -> Result<u64> {
        let mut n = 0u64;
        for shift in (0..56).step_by(7) {
            let b = self.u8(what)?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err(invalid(format!("{what} is not in its shortest form")));
                }
                if n > MAX_SAFE {
                    break;
                }
                return Ok(n);
            }
        }
        Err(invalid(format!("{what} is larger than 2^53 - 1")))
    }

    /// A count of items of at least `min_bytes` each: never more than the bytes left allow.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let n = self.varint(what)?;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n > self.rest.len() / min_bytes.max(1) {
            return Err(invalid(format!(
                "{what} {n} does not fit in the {} bytes left",
                self.rest.len()
            )));
        }
        Ok(n)
    }

    fn id(&mut self, what: &str, states: usize) -> Result<StateId> {
        let n = self.varint(what)?;
        StateId::try_from(n)
            .ok()
            .filter(|id| (*id as usize) < states)
            .ok_or_else(|| invalid(format!("{what} {n} is not a state of the snapshot")))
    }

    fn str(&mut self, what: &str) -> Result<&'a str> {
        let n = self.count(what, 1)?;
        let bytes = self.take(n, what)?;
        std::str::from_utf8(bytes).map_err(|_| invalid(format!("{what} is not UTF-8")))
    }
}

impl StateMachine {
    /// The compact snapshot (module docs) taken at `now`.
    pub fn snapshot_bytes(&self, now: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            COMPACT_HEADER_BYTES + 16 + 96 * self.states.len() + 12 * self.history.len(),
        );
        out.extend_from_slice(&COMPACT_MAGIC);
        out.extend_from_slice(&[COMPACT_VERSION, 0, 0, 0]);
        out.extend_from_slice(&[0; 8]);
        put_varint(&mut out, now);
        put_varint(&mut out, self.current.map_or(0, |c| u64::from(c) + 1));
        put_len(&mut out, self.states.len());
        for s in &self.states {
            put_str(&mut out, &s.name);
            put_str(&mut out, &s.endpoint);
            out.push(if s.locked { LOCKED } else { 0 } | if s.is_final { FINAL } else { 0 });
            out.extend_from_slice(&s.checksum.to_le_bytes());
            put_len(&mut out, s.metadata.len());
            for (key, value) in &s.metadata {
                put_str(&mut out, key);
                match value {
                    MetaValue::Int(n) => {
                        out.push(KIND_INT);
                        put_varint(&mut out, *n);
                    }
                    MetaValue::Raw(raw) => {
                        out.push(KIND_JSON);
                        put_str(&mut out, raw);
                    }
                }
            }
            put_len(&mut out, s.targets.len());
            for t in &s.targets {
                put_varint(&mut out, u64::from(*t));
            }
        }
        put_len(&mut out, self.history.len());
        for h in &self.history {
            put_varint(&mut out, u64::from(h.from));
            put_varint(&mut out, u64::from(h.to));
            put_varint(&mut out, h.timestamp);
        }
        let body = u32::try_from(out.len().saturating_sub(COMPACT_HEADER_BYTES)).unwrap_or(0);
        if let Some(field) = out.get_mut(8..12) {
            field.copy_from_slice(&body.to_le_bytes());
        }
        let crc = crc32(
            crc32(0, out.get(..12).unwrap_or_default()),
            out.get(COMPACT_HEADER_BYTES..).unwrap_or_default(),
        );
        if let Some(field) = out.get_mut(12..16) {
            field.copy_from_slice(&crc.to_le_bytes());
        }
        out
    }

    /// Replaces the machine's states, transitions, current state and history with a compact
    /// snapshot's (module docs), after verifying all of it. Counters start from zero; the
    /// configuration stays. History longer than `max_history` keeps its newest entries.
    ///
    /// # Errors
    /// `IntegrityCheckFailed` (the CRC or a state checksum), `InvalidSnapshot` (header, layout,
    /// references, metadata, a checksum of 0, a history that is not a walk ending in the current
    /// state), `StateNameTooLong`, `MaxStatesReached`, `MaxTransitionsReached`; `StateLocked`
    /// while a live state is locked (checked last, so a bad snapshot reports its own error).
    pub fn restore_bytes(&mut self, bytes: &[u8]) -> Result<SnapshotFormat> {
        let body = check_header(bytes)?;
        let restored = self.decode(body)?;
        self.install(restored, SnapshotFormat::Polycall)?;
        Ok(SnapshotFormat::Polycall)
    }

    fn decode(&self, body: &[u8]) -> Result<Restored> {
        let mut r = Reader { rest: body };
        r.varint("the timestamp")?;
        let current = r.varint("the current state")?;
        // A state takes at least 10 bytes: two lengths, flags, checksum, two counts.
        let count = r.count("the state count", 10)?;
        if count > self.config.max_states {
            return Err(Error::MaxStatesReached {
                limit: self.config.max_states,
            });
        }
        let mut states = Vec::with_capacity(count);
        let mut index = HashMap::with_capacity(count);
        let mut claimed = Vec::with_capacity(count);
        let mut transition_count = 0usize;
        for id in (0..).take(count) {
            let (record, checksum) = self.decode_state(&mut r, count)?;
            transition_count += record.targets.len();
            if transition_count > self.config.max_transitions {
                return Err(Error::MaxTransitionsReached {
                    limit: self.config.max_transitions,
                });
            }
            if index.insert(record.name.clone(), id).is_some() {
                return Err(invalid(format!("state {:?} appears twice", record.name)));
            }
            states.push(record);
            claimed.push(checksum);
        }
        // Targets may name later states, so the checksums are computed once all are read.
        let mut scratch = String::with_capacity(256);
        let mut sums = Vec::with_capacity(count);
        for (s, expected) in states.iter().zip(&claimed) {
            let actual = state_checksum(&mut scratch, s, &states);
            if actual != *expected {
                return Err(Error::IntegrityCheckFailed {
                    expected: *expected,
                    actual,
                });
            }
            sums.push(actual);
        }
        for (s, sum) in states.iter_mut().zip(sums) {
            s.checksum = sum;
        }
        let current = match current {
            0 => None,
            n => Some(
                StateId::try_from(n - 1)
                    .ok()
                    .filter(|id| (*id as usize) < count)
                    .ok_or_else(|| invalid("the current state is not a state of the snapshot"))?,
            ),
        };
        let entries = r.count("the history length", 3)?;
        let skip = entries.saturating_sub(self.config.max_history);
        let mut history = VecDeque::with_capacity(entries - skip);
        for i in 0..entries {
            let entry = HistoryEntry {
                from: r.id("a history entry's source", count)?,
                to: r.id("a history entry's target", count)?,
                timestamp: r.varint("a history timestamp")?,
            };
            if i >= skip {
                history.push_back(entry);
            }
        }
        if !r.rest.is_empty() {
            return Err(invalid(format!(
                "{} bytes follow the snapshot's body",
                r.rest.len()
            )));
        }
        Ok(Restored {
            states,
            index,
            transition_count,
            current,
            history,
            checksums: Checksums::Verified,
        })
    }

    /// One state and the checksum the snapshot states for it.
    fn decode_state(&self, r: &mut Reader<'_>, count: usize) -> Result<(StateRecord, u32)> {
        let name = r.str("a state name")?;
        self.check_name(name).map_err(|e| match e {
            Error::InvalidArgument(reason) => invalid(reason),
            other => other,
        })?;
        let endpoint = r.str("an endpoint")?;
        let flags = r.u8("a state's flags")?;
        if flags & !(LOCKED | FINAL) != 0 {
            return Err(invalid(format!(
                "state {name:?} has unknown flags {flags:#04x}"
            )));
        }
        let checksum = r.take(4, "a state checksum")?;
        let checksum = u32::from_le_bytes([
            checksum.first().copied().unwrap_or(0),
            checksum.get(1).copied().unwrap_or(0),
            checksum.get(2).copied().unwrap_or(0),
            checksum.get(3).copied().unwrap_or(0),
        ]);
        if checksum == 0 {
            return Err(invalid("a state checksum of 0 marks a malformed snapshot"));
        }
        // An entry takes at least 3 bytes: a key length, a kind, a value.
        let entries = r.count("a metadata count", 3)?;
        let mut metadata: Vec<(MetaKey, MetaValue)> = Vec::with_capacity(entries);
        for _ in 0..entries {
            let key = r.str("a metadata key")?;
            if metadata.iter().any(|(k, _)| k == key) {
                return Err(invalid(format!("metadata key {key:?} repeats")));
            }
            let reserved = RESERVED_METADATA_KEYS.contains(&key);
            let value = match (r.u8("a metadata kind")?, reserved) {
                (KIND_INT, true) => MetaValue::Int(r.varint("a metadata integer")?),
                (KIND_JSON, false) => {
                    let raw = r.str("a metadata value")?;
                    match json::parse(raw) {
                        Ok(node) if node.raw.len() == raw.len() => MetaValue::Raw(raw.to_owned()),
                        _ => {
                            return Err(invalid(format!("metadata {key:?} is not one JSON value")));
                        }
                    }
                }
                (_, true) => {
                    return Err(invalid(format!(
                        "metadata {key:?} must be a non-negative integer"
                    )));
                }
                (_, false) => {
                    return Err(invalid(format!("metadata {key:?} must be JSON text")));
                }
            };
            metadata.push((meta_key(key), value));
        }
        for key in ["createdAt", "version", "lastModified"] {
            if !metadata.iter().any(|(k, _)| k == key) {
                return Err(invalid(format!("metadata of {name:?} lacks {key:?}")));
            }
        }
        let n = r.count("a transition count", 1)?;
        if n > count {
            return Err(invalid(format!(
                "{name:?} lists {n} transitions among {count} states"
            )));
        }
        let mut targets = Vec::with_capacity(n);
        for _ in 0..n {
            let t = r.id("a transition target", count)?;
            if targets.contains(&t) {
                return Err(invalid(format!("{name:?} lists a transition twice")));
            }
            targets.push(t);
        }
        let is_final = flags & FINAL != 0;
        if is_final && !targets.is_empty() {
            return Err(invalid(format!("final state {name:?} has transitions")));
        }
        Ok((
            StateRecord {
                name: name.to_owned(),
                endpoint: endpoint.to_owned(),
                is_final,
                locked: flags & LOCKED != 0,
                metadata,
                targets,
                checksum,
                counters: Counters::default(),
            },
            checksum,
        ))
    }
}

/// The body of a compact snapshot whose header and CRC hold.
fn check_header(bytes: &[u8]) -> Result<&[u8]> {
    let (header, body) = bytes
        .split_at_checked(COMPACT_HEADER_BYTES)
        .ok_or_else(|| invalid("a compact snapshot has a 16-byte header"))?;
    let word = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|w| <[u8; 4]>::try_from(w).ok())
            .map_or(0, u32::from_le_bytes)
    };
    if header.get(..4) != Some(&COMPACT_MAGIC[..]) {
        return Err(invalid(
            "not a compact snapshot (no \"PCSM\" magic); pass JSON snapshots as text or objects",
        ));
    }
    if header.get(4) != Some(&COMPACT_VERSION) {
        return Err(invalid(format!(
            "unsupported compact snapshot version {}",
            header.get(4).copied().unwrap_or(0)
        )));
    }
    if header.get(5..8) != Some(&[0, 0, 0][..]) {
        return Err(invalid("the reserved header bytes must be zero"));
    }
    let length = word(8);
    if usize::try_from(length).ok() != Some(body.len()) {
        return Err(invalid(format!(
            "the header gives a {length}-byte body, {} bytes follow it",
            body.len()
        )));
    }
    let expected = word(12);
    let actual = crc32(crc32(0, header.get(..12).unwrap_or_default()), body);
    if actual != expected {
        return Err(Error::IntegrityCheckFailed { expected, actual });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::super::machine::{Config, StateOptions};
    use super::super::snapshot::RestoreOptions;
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn machine() -> StateMachine {
        let mut m = StateMachine::default();
        let a = m.add_state("A", StateOptions::default(), T0).unwrap();
        let b = m
            .add_state(
                "B é",
                StateOptions {
                    endpoint: Some("/b".into()),
                    metadata: vec![("9".into(), "[1,\"x\"]".into())],
                    ..StateOptions::default()
                },
                T0,
            )
            .unwrap();
        let c = m
            .add_state(
                "C",
                StateOptions {
                    is_final: true,
                    ..StateOptions::default()
                },
                T0,
            )
            .unwrap();
        m.add_transition(a, b).unwrap();
        m.add_transition(b, a).unwrap();
        m.add_transition(b, c).unwrap();
        m.transition(b, T0 + 1).unwrap();
        m.transition(a, T0 + 2).unwrap();
        m.transition(b, T0 + 3).unwrap();
        m.lock(a, T0 + 4).unwrap();
        m.set_metadata(b, "note", r#"{"x":"\"y\""}"#, T0 + 5)
            .unwrap();
        m
    }

    /// Recomputes the CRC after an edit of the body or header.
    fn reseal(bytes: &mut [u8]) {
        let crc = crc32(crc32(0, &bytes[..12]), &bytes[16..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    }

    fn code(m: &mut StateMachine, bytes: &[u8]) -> &'static str {
        let before = m.snapshot_bytes(T0);
        match m.restore_bytes(bytes) {
            Ok(_) => "ok",
            Err(e) => {
                assert_eq!(m.snapshot_bytes(T0), before, "a refused restore changed it");
                e.code()
            }
        }
    }

    #[test]
    fn crc_vectors() {
        assert_eq!(crc32(0, b""), 0);
        assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(0, b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        let text = b"The quick brown fox jumps over the lazy dog";
        for cut in 0..text.len() {
            assert_eq!(crc32(crc32(0, &text[..cut]), &text[cut..]), 0x414F_A339);
        }
    }

    #[test]
    fn round_trip_is_exact_and_matches_the_json_form() {
        let m = machine();
        let bytes = m.snapshot_bytes(T0 + 10);
        assert_eq!(&bytes[..4], b"PCSM");
        let mut r = StateMachine::default();
        assert_eq!(r.restore_bytes(&bytes).unwrap(), SnapshotFormat::Polycall);
        assert_eq!(r.snapshot_bytes(T0 + 10), bytes);
        assert_eq!(r.snapshot(T0 + 10), m.snapshot(T0 + 10));
        assert_eq!(r.metadata_entries_json(1), m.metadata_entries_json(1));
        assert_eq!(r.current(), m.current());
        assert_eq!(r.transition_count(), 3);
        // The JSON form of the restored machine restores to the same machine.
        let mut j = StateMachine::default();
        j.restore(&r.snapshot(T0 + 10), RestoreOptions::default())
            .unwrap();
        assert_eq!(j.snapshot(T0 + 10), m.snapshot(T0 + 10));
        assert_eq!(j.snapshot_bytes(T0 + 10).len(), bytes.len());
        // The compact form is much smaller than the JSON form.
        assert!(bytes.len() * 2 < m.snapshot(T0).len());
    }

    #[test]
    fn empty_machine_round_trips() {
        let m = StateMachine::default();
        let bytes = m.snapshot_bytes(0);
        let mut r = StateMachine::default();
        r.restore_bytes(&bytes).unwrap();
        assert!(r.is_empty());
        assert_eq!(r.current(), None);
    }

    #[test]
    fn every_flipped_bit_and_every_cut_is_refused() {
        let bytes = machine().snapshot_bytes(T0);
        let mut live = StateMachine::default();
        live.add_state("keep", StateOptions::default(), T0).unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let c = code(&mut live, &bad);
                assert!(
                    c == "INTEGRITY_CHECK_FAILED" || c == "INVALID_SNAPSHOT",
                    "byte {i} bit {bit}: {c}"
                );
            }
        }
        for cut in 0..bytes.len() {
            assert_eq!(
                code(&mut live, &bytes[..cut]),
                "INVALID_SNAPSHOT",
                "cut {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(code(&mut live, &longer), "INVALID_SNAPSHOT");
        assert_eq!(live.names().collect::<Vec<_>>(), ["keep"]);
    }

    #[test]
    fn resealed_edits_meet_the_rules_behind_the_crc() {
        let m = machine();
        let bytes = m.snapshot_bytes(T0);
        let mut live = StateMachine::default();
        // The current state (1 = "B é") edited to "C": the history ends in B.
        let mut forged = bytes.clone();
        let at = 16 + 6; // after the 6-byte timestamp varint
        assert_eq!(forged[at], 2);
        forged[at] = 3;
        reseal(&mut forged);
        assert_eq!(code(&mut live, &forged), "INVALID_SNAPSHOT");
        // A lock flag flipped: the state checksum no longer matches.
        let name_at = forged.windows(2).position(|w| w == [1, b'A']).unwrap();
        let mut unlocked = bytes.clone();
        let flags = name_at + 2 + 1 + 2; // "A", endpoint "/a"
        assert_eq!(unlocked[flags], LOCKED);
        unlocked[flags] = 0;
        reseal(&mut unlocked);
        assert_eq!(code(&mut live, &unlocked), "INTEGRITY_CHECK_FAILED");
        // Unknown flag bits, a version byte, reserved bytes.
        for (at, value) in [(flags, 4), (4, 2), (6, 1)] {
            let mut bad = bytes.clone();
            bad[at] = value;
            reseal(&mut bad);
            assert_eq!(code(&mut live, &bad), "INVALID_SNAPSHOT", "byte {at}");
        }
        // The untouched snapshot restores.
        assert_eq!(code(&mut live, &bytes), "ok");
    }

    #[test]
    fn limits_and_locks() {
        let bytes = machine().snapshot_bytes(T0);
        let small = |config: Config| {
            let mut m = StateMachine::new(config);
            m.restore_bytes(&bytes).map(|_| m.history().len())
        };
        let e = small(Config {
            max_states: 2,
            ..Config::default()
        })
        .unwrap_err();
        assert_eq!(e.code(), "MAX_STATES_REACHED");
        let e = small(Config {
            max_transitions: 2,
            ..Config::default()
        })
        .unwrap_err();
        assert_eq!(e.code(), "MAX_TRANSITIONS_REACHED");
        let e = small(Config {
            max_name_bytes: 2,
            ..Config::default()
        })
        .unwrap_err();
        assert_eq!(e.code(), "STATE_NAME_TOO_LONG");
        assert_eq!(
            small(Config {
                max_history: 2,
                ..Config::default()
            })
            .unwrap(),
            2
        );
        // Over a locked live state: refused, and the lock stays.
        let mut m = machine();
        let e = m.restore_bytes(&bytes).unwrap_err();
        assert_eq!((e.code(), e.errno()), ("STATE_LOCKED", Some(8)));
        assert_eq!(m.is_locked(0), Some(true));
        // A bad snapshot reports its own error first.
        assert_eq!(
            m.restore_bytes(b"PCSM").unwrap_err().code(),
            "INVALID_SNAPSHOT"
        );
        m.unlock(0).unwrap();
        m.restore_bytes(&bytes).unwrap();
        assert_eq!(m.is_locked(0), Some(true));
    }

    #[test]
    fn varints_are_shortest_and_bounded() {
        let read = |bytes: &[u8]| Reader { rest: bytes }.varint("n");
        assert_eq!(read(&[0]).unwrap(), 0);
        assert_eq!(read(&[0x7f]).unwrap(), 127);
        assert_eq!(read(&[0x80, 0x01]).unwrap(), 128);
        let mut max = Vec::new();
        put_varint(&mut max, MAX_SAFE);
        assert_eq!(read(&max).unwrap(), MAX_SAFE);
        let mut over = Vec::new();
        put_varint(&mut over, MAX_SAFE + 1);
        assert!(read(&over).is_err());
        assert!(read(&[0x80, 0x00]).is_err(), "overlong");
        assert!(read(&[0xff; 12]).is_err());
        assert!(read(&[0x80]).is_err(), "truncated");
        // A count larger than the bytes left is refused before anything is allocated.
        let mut huge = Vec::new();
        put_varint(&mut huge, 1 << 40);
        assert!(Reader { rest: &huge }.count("n", 1).is_err());
    }
}
