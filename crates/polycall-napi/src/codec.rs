//! Frame codec bindings: checksum, encode, streaming decode, handshake payloads.

use napi::Result;
use napi::bindgen_prelude::{Buffer, BufferSlice};

use napi_derive::napi;
use polycall_core::MessageType;
use polycall_core::packet::handshake::{self, HandshakeForm, Strictness};

use crate::error::{invalid, to_js};

// `napi::Result<T, String>`: the status string becomes the JS error's `code`.

/// Checksum of `data` (docs/protocol.md §2).
#[napi]
pub fn checksum(data: &[u8]) -> u32 {
    polycall_core::checksum(data)
}

/// Writes one frame into `out` (exactly 16 + payload bytes). Returns the payload checksum.
#[napi]
pub fn encode_into(
    mut out: BufferSlice,
    kind: u32,
    flags: u32,
    sequence: u32,
    payload: &[u8],
) -> Result<u32, String> {
    let kind = MessageType::try_from(kind).map_err(to_js)?;
    let flags = u16::try_from(flags).map_err(|_| invalid("flags must fit in 16 bits"))?;
    polycall_core::encode_into(&mut out, kind, flags, sequence, payload)
        .map(|h| h.checksum)
        .map_err(to_js)
}

/// A parsed HANDSHAKE payload.
#[napi(object)]
pub struct BindingHandshake {
    /// `'empty'`, `'short'` or `'long'`.
    pub form: String,
    /// Version byte of the long form.
    pub version: Option<u32>,
    /// Flags field of the long form (capability bits); 0 otherwise.
    pub flags: u32,
    /// True when the peer sent no long form or no capability bits.
    pub legacy: bool,
    /// polycall extension: the peer's limit of requests in flight per connection.
    pub max_in_flight: Option<u32>,
}

/// Parses a HANDSHAKE payload (docs/protocol.md §4); `strict` refuses an empty payload.
#[napi]
pub fn parse_handshake(payload: &[u8], strict: bool) -> Result<BindingHandshake, String> {
    let mode = if strict {
        Strictness::Strict
    } else {
        Strictness::Lenient
    };
    let h = handshake::parse(payload, mode).map_err(to_js)?;
    Ok(BindingHandshake {
        form: match h.form {
            HandshakeForm::Empty => "empty",
            HandshakeForm::Short => "short",
            HandshakeForm::Long => "long",
        }
        .to_owned(),
        version: h.version.map(u32::from),
        flags: u32::from(h.flags),
        legacy: h.is_legacy(),
        max_in_flight: h.max_in_flight,
    })
}

/// Builds the 8-byte long-form HANDSHAKE payload carrying `flags` (capability bits), or the
/// 12-byte extended form when `max_in_flight` is given.
#[napi]
pub fn build_handshake(flags: u32, max_in_flight: Option<u32>) -> Result<Buffer, String> {
    let flags = u16::try_from(flags).map_err(|_| invalid("flags must fit in 16 bits"))?;
    Ok(match max_in_flight {
        Some(n) => handshake::build_extended(flags, n).to_vec(),
        None => handshake::build(flags).to_vec(),
    }
    .into())
}

/// One frame inspected field by field (for `polycall decode`).
#[napi(object)]
pub struct BindingInspection {
    /// Version byte.
    pub version: u32,
    /// Raw type byte.
    pub kind: u32,
    /// Flags field.
    pub flags: u32,
    /// Sequence field.
    pub sequence: u32,
    /// `payload_length` field.
    pub payload_length: u32,
    /// Checksum field.
    pub checksum: u32,
    /// Checksum of the payload when all of it is present.
    pub computed_checksum: Option<u32>,
    /// The payload bytes present.
    pub payload: Buffer,
    /// Bytes after the announced payload.
    pub trailing: u32,
    /// `[code, message]` of every rule the bytes break.
    pub problems: Vec<Vec<String>>,
}

/// Inspects `bytes` as one frame; throws `ERR_POLYCALL_TRUNCATED_HEADER` under 16 bytes.
#[napi]
pub fn inspect_frame(bytes: &[u8]) -> Result<BindingInspection, String> {
    let i = polycall_core::packet::inspect::inspect(bytes).map_err(to_js)?;
    Ok(BindingInspection {
        version: u32::from(i.version),
        kind: u32::from(i.kind),
        flags: u32::from(i.flags),
        sequence: i.sequence,
        payload_length: i.payload_length,
        checksum: i.checksum,
        computed_checksum: i.computed_checksum,
        payload: i.payload.to_vec().into(),
        trailing: u32::try_from(i.trailing).unwrap_or(u32::MAX),
        problems: i
            .problems
            .iter()
            .map(|e| vec![format!("ERR_POLYCALL_{}", e.code()), e.to_string()])
            .collect(),
    })
}

/// Encodes one PCR1 frame (big-endian header, no checksum).
#[napi]
pub fn encode_pcr1(kind: u32, corr: u32, payload: &[u8]) -> Result<Buffer, String> {
    let kind = u8::try_from(kind)
        .map_err(|_| invalid("PCR1 type must be 1..4"))
        .and_then(|k| polycall_core::pcr1::Pcr1Type::try_from(k).map_err(to_js))?;
    polycall_core::pcr1::encode_frame(kind, corr, payload)
        .map(Buffer::from)
        .map_err(to_js)
}
