//! N-API glue for polycall. Conversions and one call into `polycall-core` per function;
//! protocol logic lives in the core crate. Every item is internal to the package: the public
//! names are defined in `ts/` (see `ts/native.ts`, the only importer of this addon).
#![deny(clippy::undocumented_unsafe_blocks)]
#![allow(
    clippy::missing_errors_doc,
    reason = "these docs are written for JS readers in binding.d.cts; the thrown codes are listed in docs/errors.md"
)]

pub mod codec;
pub mod decoder;
pub mod error;
pub mod identity;
pub mod secure;
pub mod slab;
pub mod state;
