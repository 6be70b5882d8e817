//! Sans-I/O core of polycall.
//!
//! Everything byte-level lives here: the LibPolyCall v1 frame codec (docs/protocol.md §1-§5, §7),
//! the checksum (§2), the handshake payload (§4), the error identifiers (§8.1, §8.4), the state
//! machines (the protocol session machine of §6 and user state machines of §9), and the PCR1
//! frame of the upstream runtime's RPC wire (docs/protocol.md §P1), and the secure layer
//! (Noise handshakes, sealed frames, identities, snapshot signatures, compression). The crate
//! knows nothing about Node, sockets or timers: callers push byte slices in and get frames or
//! errors back.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod checksum;
pub mod crypto;
pub mod error;
pub mod packet;
pub mod pcr1;
pub mod state;

pub use checksum::checksum;
pub use error::{Error, Result};
pub use packet::{
    DecodedFrame, Frame, FrameDecoder, HEADER_SIZE, Header, MAX_PAYLOAD, MessageType,
    PROTOCOL_VERSION, Payload, encode_frame, encode_into, flags,
};
