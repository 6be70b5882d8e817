//! Helpers shared by the integration tests.
#![allow(dead_code, missing_docs)]
#![allow(
    clippy::missing_panics_doc,
    reason = "test helpers panic on malformed vector files by design"
)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "vector values are range-checked by the assertions that use them"
)]

use serde_json::Value;

pub fn vectors() -> Value {
    let text = include_str!("../vectors/protocol-vectors.json");
    serde_json::from_str(text).expect("vectors parse")
}

pub fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

pub fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing"))
}

pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} missing"))
}

/// A vector's payload: `payload_hex`, or a `fill`/`payload_fill` of one byte repeated.
pub fn payload_of(v: &Value) -> Vec<u8> {
    for key in ["fill", "payload_fill"] {
        if let Some(fill) = v.get(key) {
            return vec![u(fill, "byte") as u8; u(fill, "length") as usize];
        }
    }
    hex(v["payload_hex"].as_str().unwrap_or(""))
}
