//! State machines (docs/protocol.md §6 and §9).
//!
//! - [`StateMachine`]: user state machines with node-polycall's rules (§9.2), the C library's
//!   limits and status codes (§8.4, §9.1), integrity checksums and snapshots that
//!   node-polycall can read and write, and a compact binary snapshot ([`StateMachine::snapshot_bytes`]).
//! - [`session`]: the fixed protocol session machine of §6 and its accepted-frame tables.
//! - [`node_state_checksum`], [`c_state_checksum`], [`endpoint_for`]: the reference
//!   bindings' checksums and endpoint names, checked against the golden vectors.

mod checksum;
mod compact;
pub(crate) mod json;
mod machine;
pub mod session;
mod snapshot;

pub use checksum::{
    C_COVERED_BYTES, c_state_checksum, c_state_covered_bytes, endpoint_for, node_state_checksum,
};
pub use compact::{COMPACT_HEADER_BYTES, COMPACT_MAGIC, COMPACT_VERSION, crc32};
pub use machine::{
    Config, Counters, DEFAULT_MAX_HISTORY, DEFAULT_MAX_NAME_BYTES, DEFAULT_MAX_STATES,
    DEFAULT_MAX_TRANSITIONS, Diagnostics, HistoryEntry, RESERVED_METADATA_KEYS, StateId,
    StateMachine, StateOptions, parse_metadata_object,
};
pub use session::{SessionMachine, SessionRole, SessionState};
pub use snapshot::{RestoreOptions, SNAPSHOT_FORMAT, SnapshotFormat};
