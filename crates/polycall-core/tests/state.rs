//! The `state_machine` vectors of protocol-vectors.json against the state core, and
//! snapshot interoperability with node-polycall's layouts (docs/protocol.md §9.2).
#![allow(missing_docs)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "vector values are within range by construction"
)]

mod common;

use common::{hex, s, u, vectors};
use polycall_core::state::{
    Config, RestoreOptions, SnapshotFormat, StateMachine, StateOptions, c_state_checksum,
    c_state_covered_bytes, endpoint_for, node_state_checksum,
};
use serde_json::Value;

const T0: u64 = 1_700_000_000_000;

fn js_vector(name: &str) -> (String, u32) {
    let v = vectors();
    let c = v["state_machine"]["js_state_checksum"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| s(c, "name") == name)
        .unwrap()
        .clone();
    (s(&c, "json").to_owned(), u(&c, "checksum") as u32)
}

fn state_snapshot(json: &str, checksum: u32) -> String {
    format!(r#"{{"timestamp":{T0},"state":{json},"checksum":{checksum}}}"#)
}

#[test]
fn c_state_checksums() {
    let v = vectors();
    let cases = v["state_machine"]["c_state_checksum_lp64"]["vectors"]
        .as_array()
        .unwrap();
    assert_eq!(cases.len(), 8);
    for c in cases {
        let name = s(c, "name");
        let is_final = c["is_final"].as_bool().unwrap();
        let id = u(c, "id") as u32;
        let covered = c_state_covered_bytes(name, is_final, id);
        assert_eq!(covered.as_slice(), hex(s(c, "covered_bytes_hex")), "{name}");
        let stored = s(c, "stored_name");
        assert_eq!(&covered[..stored.len()], stored.as_bytes(), "{name}");
        assert_eq!(covered[stored.len()], 0, "{name}");
        let sum = c_state_checksum(name, is_final, id);
        assert_eq!(u64::from(sum), u(c, "checksum"), "{name}");
        assert_eq!(format!("{sum:08x}"), s(c, "checksum_hex"), "{name}");
    }
}

#[test]
fn c_checksums_of_the_demo_machine_in_diagnostics() {
    let mut m = StateMachine::default();
    for (name, is_final) in [
        ("INIT", false),
        ("READY", false),
        ("RUNNING", false),
        ("PAUSED", false),
        ("ERROR", true),
    ] {
        let options = StateOptions {
            is_final,
            ..StateOptions::default()
        };
        let id = m.add_state(name, options, T0).unwrap();
        assert_eq!(
            m.diagnostics(id).unwrap().c_checksum,
            c_state_checksum(name, is_final, id)
        );
    }
    assert_eq!(m.diagnostics(4).unwrap().c_checksum, 0x9c52_524f);
}

#[test]
fn node_state_checksums() {
    let v = vectors();
    let cases = v["state_machine"]["js_state_checksum"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for c in cases {
        let sum = node_state_checksum(s(c, "json"));
        assert_eq!(u64::from(sum), u(c, "checksum"), "{}", s(c, "name"));
        assert_eq!(format!("{sum:08x}"), s(c, "checksum_hex"));
    }
}

#[test]
fn endpoint_names() {
    let v = vectors();
    for c in v["state_machine"]["js_endpoint_names"].as_array().unwrap() {
        assert_eq!(endpoint_for(s(c, "state_name")), s(c, "endpoint"));
    }
}

#[test]
fn a_new_state_serialises_like_node_polycall() {
    let (json, checksum) = js_vector("ready");
    let mut m = StateMachine::default();
    let id = m.add_state("ready", StateOptions::default(), T0).unwrap();
    assert_eq!(m.state_json(id).unwrap(), json);
    assert_eq!(m.checksum(id), Some(checksum));
    assert_eq!(m.verify(id, Some(checksum)).unwrap(), checksum);
}

#[test]
fn node_polycall_state_snapshots_restore_exactly() {
    // A locked state with metadata and transitions, made by node-polycall.
    let (json, checksum) = js_vector("locked_with_transitions");
    let mut m = StateMachine::default();
    let id = m
        .add_state("Ready State", StateOptions::default(), 1)
        .unwrap();
    m.add_state("running", StateOptions::default(), 1).unwrap();
    m.add_state("error", StateOptions::default(), 1).unwrap();
    assert_eq!(
        m.restore_state(&state_snapshot(&json, checksum)).unwrap(),
        id
    );
    assert_eq!(m.state_json(id).unwrap(), json);
    assert_eq!(m.checksum(id), Some(checksum));
    assert_eq!(m.is_locked(id), Some(true));
    let d = m.diagnostics(id).unwrap();
    assert_eq!(d.locked_at, Some(1_700_000_000_900));
    assert_eq!(d.last_modified, 1_700_000_000_500);
    assert_eq!(m.transition_count(), 2);
    // Our snapshot of it carries the same state JSON and checksum.
    let ours: Value = serde_json::from_str(&m.state_snapshot(id, T0).unwrap()).unwrap();
    assert_eq!(ours["checksum"].as_u64(), Some(u64::from(checksum)));
    assert_eq!(ours["state"], serde_json::from_str::<Value>(&json).unwrap());

    // Non-ASCII name and endpoint, version 3: the live state must be at version 3 too.
    let (json, checksum) = js_vector("non_ascii");
    let mut m = StateMachine::default();
    let id = m.add_state("café 😀", StateOptions::default(), 0).unwrap();
    let e = m
        .restore_state(&state_snapshot(&json, checksum))
        .unwrap_err();
    assert_eq!((e.code(), e.errno()), ("STATE_VERSION_MISMATCH", Some(9)));
    m.set_metadata(id, "a", "1", 0).unwrap();
    m.set_metadata(id, "a", "2", 0).unwrap();
    m.restore_state(&state_snapshot(&json, checksum)).unwrap();
    assert_eq!(m.state_json(id).unwrap(), json);
    assert_eq!(m.endpoint(id), Some("/café-😀"));
}

#[test]
fn node_polycall_machine_snapshot_from_vector_states() {
    let (ready, ready_sum) = js_vector("ready");
    let (locked, locked_sum) = js_vector("locked_with_transitions");
    let entry = |name: &str, json: &str, sum: u32| {
        format!(
            r#"{{"name":"{name}","snapshot":{}}}"#,
            state_snapshot(json, sum)
        )
    };
    // Minimal states for the transition targets of "Ready State".
    let plain = |name: &str| {
        let json = format!(
            r#"{{"name":"{name}","isLocked":false,"endpoint":"/{name}","metadata":{{"createdAt":{T0},"version":1,"lastModified":{T0}}},"transitions":[]}}"#
        );
        let sum = node_state_checksum(&json);
        entry(name, &json, sum)
    };
    let text = format!(
        r#"{{"timestamp":{T0},"currentState":"ready","states":[{},{},{},{}],"history":[]}}"#,
        entry("ready", &ready, ready_sum),
        entry("Ready State", &locked, locked_sum),
        plain("running"),
        plain("error"),
    );
    let mut m = StateMachine::default();
    // Strict by default: node-polycall's layout needs the legacy option.
    let e = m.restore(&text, RestoreOptions::default()).unwrap_err();
    assert_eq!(e.code(), "INVALID_SNAPSHOT");
    assert_eq!(
        m.restore(&text, RestoreOptions { legacy: true }).unwrap(),
        SnapshotFormat::NodePolycall
    );
    assert_eq!(m.current(), m.id("ready"));
    let rs = m.id("Ready State").unwrap();
    assert_eq!(m.state_json(rs).unwrap(), locked);
    assert_eq!(m.transition_count(), 2);

    // Our snapshot restores here, and is a superset of node-polycall's layout.
    let ours = m.snapshot(T0 + 1);
    let v: Value = serde_json::from_str(&ours).unwrap();
    for key in ["timestamp", "currentState", "states", "history"] {
        assert!(v.get(key).is_some(), "{key}");
    }
    assert_eq!(
        v["states"][1]["snapshot"]["checksum"].as_u64(),
        Some(u64::from(locked_sum))
    );
    let mut again = StateMachine::default();
    again.restore(&ours, RestoreOptions::default()).unwrap();
    assert_eq!(again.snapshot(T0 + 1), ours);
}

#[test]
fn tampered_state_inside_a_machine_snapshot_is_refused() {
    let mut m = StateMachine::new(Config::default());
    m.add_state("a", StateOptions::default(), T0).unwrap();
    let text = m.snapshot(T0);
    // Change the state JSON and fix up the machine checksum: the state checksum still fails.
    let edited = text.replace("\"isLocked\":false", "\"isLocked\":true");
    let cut = edited.rfind(",\"checksum\":").unwrap();
    let body = format!("{}}}", &edited[..cut]);
    let resealed = format!(
        "{},\"checksum\":{}}}",
        &edited[..cut],
        node_state_checksum(&body)
    );
    let e = StateMachine::default()
        .restore(&resealed, RestoreOptions::default())
        .unwrap_err();
    assert_eq!((e.code(), e.errno()), ("INTEGRITY_CHECK_FAILED", Some(7)));
}
