//! The PCR1 stream decoder (PROTOCOL-PCR1.md §1) against the specification's header rules,
//! under random chunking; see the harness (`src/lib.rs`) for the input layout and properties.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polycall_core::pcr1::Pcr1;

fuzz_target!(|data: &[u8]| polycall_fuzz::check_stream::<Pcr1>(data));
