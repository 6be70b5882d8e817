//! The LibPolyCall v1 frame (docs/protocol.md §1, §3, §7): a 16-byte little-endian header and
//! `payload_length` payload bytes, back to back on the stream.

mod decoder;
mod encode;
pub mod handshake;
mod header;
pub mod inspect;

pub use decoder::{DecodedFrame, Frame, FrameDecoder, FrameFormat, Payload, StreamDecoder, V1};
pub use encode::{encode_frame, encode_into};
pub use header::{HEADER_SIZE, Header, MAX_PAYLOAD, MessageType, PROTOCOL_VERSION, flags};
