//! Compact machine snapshots (`StateMachine::snapshot_bytes`) through
//! `StateMachine::restore_bytes`, onto a live machine.
//!
//! Input: one mode byte, then the snapshot's bytes. Mode bit 0 reseals them first: the header's
//! body length and the CRC-32 are recomputed, as anyone can (a CRC is not a MAC), so mutations
//! get past the CRC to the checks behind it. Bit 1 locks a live state first. Bit 2 starts from
//! a compact snapshot of the live machine with the input's bytes written over its body from the
//! input's first byte on (so the fuzzer starts near valid layouts without a corpus).
//!
//! Properties: no panic; a refused restore changes nothing and reports a restore error; over a
//! locked state restore always refuses, with the snapshot's own error if it has one and
//! `STATE_LOCKED` otherwise; a restored machine keeps the invariants (its history is a walk
//! ending in the current state; every state checksum holds; limits hold), its own compact
//! snapshot restores to the same bytes, and its JSON snapshot restores strictly to the same
//! text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polycall_core::state::{
    COMPACT_HEADER_BYTES, Config, RestoreOptions, SnapshotFormat, StateMachine, StateOptions, crc32,
};

const T0: u64 = 1_700_000_000_000;

/// A live machine with a lock-free state, a final state and some history.
fn live() -> StateMachine {
    let mut m = StateMachine::new(Config {
        max_states: 8,
        max_transitions: 16,
        max_history: 8,
        ..Config::default()
    });
    let ready = m.add_state("ready", StateOptions::default(), T0).unwrap();
    let running = m
        .add_state(
            "running",
            StateOptions {
                metadata: vec![("owner".into(), "\"ops\"".into())],
                ..StateOptions::default()
            },
            T0,
        )
        .unwrap();
    let done = m
        .add_state(
            "error",
            StateOptions {
                is_final: true,
                ..StateOptions::default()
            },
            T0,
        )
        .unwrap();
    m.add_transition(ready, running).unwrap();
    m.add_transition(running, ready).unwrap();
    m.add_transition(running, done).unwrap();
    m.transition(running, T0 + 1).unwrap();
    m.transition(ready, T0 + 2).unwrap();
    m.transition(running, T0 + 3).unwrap();
    m
}

/// Recomputes the header's body length and CRC-32.
fn reseal(bytes: &mut [u8]) {
    if bytes.len() < COMPACT_HEADER_BYTES {
        return;
    }
    let body = u32::try_from(bytes.len() - COMPACT_HEADER_BYTES).unwrap_or(u32::MAX);
    bytes[8..12].copy_from_slice(&body.to_le_bytes());
    let crc = crc32(crc32(0, &bytes[..12]), &bytes[COMPACT_HEADER_BYTES..]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
}

const RESTORE_ERRORS: [&str; 6] = [
    "INVALID_SNAPSHOT",
    "INTEGRITY_CHECK_FAILED",
    "STATE_LOCKED",
    "MAX_STATES_REACHED",
    "MAX_TRANSITIONS_REACHED",
    "STATE_NAME_TOO_LONG",
];

fn restore(m: &mut StateMachine, bytes: &[u8]) -> Result<SnapshotFormat, &'static str> {
    let before = m.snapshot_bytes(T0);
    let r = m.restore_bytes(bytes).map_err(|e| e.code());
    if let Err(code) = r {
        assert!(RESTORE_ERRORS.contains(&code), "{code}");
        assert_eq!(
            m.snapshot_bytes(T0),
            before,
            "a refused restore changed the machine"
        );
    }
    r
}

fn check_invariants(m: &mut StateMachine) {
    let len = u32::try_from(m.len()).unwrap();
    let config = *m.config();
    assert!(m.len() <= config.max_states);
    assert!(m.transition_count() <= config.max_transitions);
    assert_eq!(m.transitions().count(), m.transition_count());
    let history: Vec<_> = m.history().copied().collect();
    assert!(history.len() <= config.max_history);
    for pair in history.windows(2) {
        assert_eq!(pair[0].to, pair[1].from, "the history is a walk");
    }
    for h in &history {
        assert!(h.from < len && h.to < len);
        assert_eq!(
            m.is_final(h.from),
            Some(false),
            "no step leaves a final state"
        );
    }
    if let Some(last) = history.last() {
        assert_eq!(m.current(), Some(last.to));
    }
    for id in 0..len {
        assert!(m.verify(id, None).is_ok(), "state {id} keeps its checksum");
        assert!(!m.is_final(id).unwrap() || m.targets(id).unwrap().is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = if mode & 4 != 0 {
        let mut base = live().snapshot_bytes(T0);
        let at = COMPACT_HEADER_BYTES + usize::from(rest.first().copied().unwrap_or(0));
        let tail = rest.get(1..).unwrap_or_default();
        base.truncate(at.min(base.len()));
        base.extend_from_slice(tail);
        base
    } else {
        rest.to_vec()
    };
    if mode & 1 != 0 {
        reseal(&mut bytes);
    }

    let mut m = live();
    let result = restore(&mut m, &bytes);
    assert_ne!(result, Ok(SnapshotFormat::NodePolycall));

    if mode & 2 != 0 {
        let mut locked = live();
        locked.lock(0, T0 + 4).unwrap();
        let got = restore(&mut locked, &bytes);
        match result {
            Ok(_) => assert_eq!(got, Err("STATE_LOCKED")),
            Err(code) => assert_eq!(got, Err(code), "the snapshot's own error comes first"),
        }
    }

    if result.is_ok() {
        check_invariants(&mut m);
        // Its own compact snapshot comes back as the same bytes.
        let again = m.snapshot_bytes(T0 + 9);
        let mut copy = StateMachine::new(*m.config());
        assert_eq!(copy.restore_bytes(&again), Ok(SnapshotFormat::Polycall));
        assert_eq!(copy.snapshot_bytes(T0 + 9), again);
        // And its JSON snapshot restores strictly to the same text.
        let text = m.snapshot(T0 + 9);
        let mut json = StateMachine::new(*m.config());
        assert_eq!(
            json.restore(&text, RestoreOptions::default()),
            Ok(SnapshotFormat::Polycall)
        );
        assert_eq!(json.snapshot(T0 + 9), text);
    }
});
