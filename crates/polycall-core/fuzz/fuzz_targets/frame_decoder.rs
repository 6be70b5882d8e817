//! The v1 stream decoder (PROTOCOL.md §7) against the specification's algorithm, under random
//! chunking; see the harness (`src/lib.rs`) for the input layout and the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polycall_core::packet::V1;

fuzz_target!(|data: &[u8]| polycall_fuzz::check_stream::<V1>(data));
