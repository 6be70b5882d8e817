//! Machine snapshots (JSON text) through `StateMachine::restore`, and state snapshots through
//! `restore_state`, onto a live machine.
//!
//! Input: one mode byte, then the snapshot text (UTF-8). Mode bit 0 reseals the text first:
//! every state checksum and the machine checksum are recomputed, as anyone can (they are not
//! MACs), so mutations get past the checksums to the checks behind them. Bit 1 locks a live
//! state first. Bit 2 restores with `legacy`.
//!
//! Properties: a refused restore changes nothing and reports a restore error; over a locked
//! state restore always refuses, with the snapshot's own error if it has one and `STATE_LOCKED`
//! otherwise; legacy accepts everything strict accepts, and the same way; node-polycall's layout
//! comes back only under legacy; a restored machine keeps the invariants (its history is a walk
//! ending in the current state, and under legacy one along its transitions; every state checksum
//! holds; limits hold) and its own snapshot restores, strictly, to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polycall_core::state::{
    Config, RestoreOptions, SnapshotFormat, StateMachine, StateOptions, node_state_checksum,
};
use serde_json::Value;

const T0: u64 = 1_700_000_000_000;

/// A live machine whose names overlap the seeds' (node-polycall vector states).
fn live() -> StateMachine {
    let mut m = StateMachine::new(Config {
        max_states: 8,
        max_transitions: 16,
        max_history: 8,
        ..Config::default()
    });
    let ready = m.add_state("ready", StateOptions::default(), T0).unwrap();
    let running = m.add_state("running", StateOptions::default(), T0).unwrap();
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
    m
}

fn java_hash(v: &Value) -> u32 {
    let text = serde_json::to_string(v).unwrap();
    node_state_checksum(&text)
}

/// Recomputes every checksum of a machine or state snapshot, in the text serde writes (which
/// is what the checksums are then computed over).
fn reseal(text: &str) -> Option<String> {
    let mut root: Value = serde_json::from_str(text).ok()?;
    let obj = root.as_object_mut()?;
    let seal_state = |snap: &mut Value| {
        if let Some(s) = snap.as_object_mut()
            && let Some(state) = s.get("state")
        {
            let sum = java_hash(state);
            s.insert("checksum".into(), Value::from(sum));
        }
    };
    if obj.contains_key("state") {
        seal_state(&mut root);
        return serde_json::to_string(&root).ok();
    }
    if let Some(states) = obj.get_mut("states").and_then(Value::as_array_mut) {
        for entry in states {
            if let Some(snap) = entry.get_mut("snapshot") {
                seal_state(snap);
            }
        }
    }
    if obj.contains_key("checksum") {
        let mut body = obj.clone();
        body.shift_remove("checksum");
        let sum = java_hash(&Value::Object(body));
        obj.insert("checksum".into(), Value::from(sum));
    }
    serde_json::to_string(&root).ok()
}

const RESTORE_ERRORS: [&str; 6] = [
    "INVALID_SNAPSHOT",
    "INTEGRITY_CHECK_FAILED",
    "STATE_LOCKED",
    "MAX_STATES_REACHED",
    "MAX_TRANSITIONS_REACHED",
    "STATE_NAME_TOO_LONG",
];

fn restore(m: &mut StateMachine, text: &str, legacy: bool) -> Result<SnapshotFormat, &'static str> {
    let before = m.snapshot(T0);
    let r = m
        .restore(text, RestoreOptions { legacy })
        .map_err(|e| e.code());
    if let Err(code) = r {
        assert!(RESTORE_ERRORS.contains(&code), "{code}");
        assert_eq!(
            m.snapshot(T0),
            before,
            "a refused restore changed the machine"
        );
    }
    r
}

fn check_invariants(m: &mut StateMachine, format: SnapshotFormat) {
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
        if format == SnapshotFormat::NodePolycall {
            assert!(
                m.has_transition(h.from, h.to),
                "a legacy step is a transition"
            );
        }
    }
    match history.last() {
        Some(last) => assert_eq!(m.current(), Some(last.to)),
        None if format == SnapshotFormat::NodePolycall => {
            assert!(matches!(m.current(), None | Some(0)))
        }
        None => {}
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
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let resealed;
    let text = if mode & 1 != 0 {
        match reseal(text) {
            Some(t) => {
                resealed = t;
                resealed.as_str()
            }
            None => text,
        }
    } else {
        text
    };
    let legacy = mode & 4 != 0;

    let mut m = live();
    let result = restore(&mut m, text, legacy);
    let strict_result = if legacy {
        let strict_result = restore(&mut live(), text, false);
        // Legacy accepts a superset, and accepts it the same way.
        if let Ok(f) = strict_result {
            assert_eq!(result, Ok(f));
        }
        strict_result
    } else {
        result
    };
    assert_ne!(strict_result, Ok(SnapshotFormat::NodePolycall));

    if mode & 2 != 0 {
        let mut locked = live();
        locked.lock(0, T0 + 2).unwrap();
        let got = restore(&mut locked, text, legacy);
        match result {
            Ok(_) => assert_eq!(got, Err("STATE_LOCKED")),
            Err(code) => assert_eq!(got, Err(code), "the snapshot's own error comes first"),
        }
    }

    if let Ok(format) = result {
        check_invariants(&mut m, format);
        let again = m.snapshot(T0 + 9);
        let mut copy = StateMachine::new(*m.config());
        assert_eq!(
            copy.restore(&again, RestoreOptions::default()),
            Ok(SnapshotFormat::Polycall)
        );
        assert_eq!(copy.snapshot(T0 + 9), again);
    }

    // The same text as one state's snapshot.
    let mut m = live();
    let before = m.snapshot(T0);
    match m.restore_state(text) {
        Ok(id) => assert!(m.verify(id, None).is_ok()),
        Err(_) => assert_eq!(m.snapshot(T0), before),
    }
});
