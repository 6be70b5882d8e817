//! What the fuzz targets share: how an input becomes a byte stream and a chunking plan, a plain
//! model of each wire's decoder written from the specification's text (PROTOCOL.md §7,
//! PROTOCOL-PCR1.md §1) rather than from the core's code, and the properties every decoder run
//! must have.
//!
//! The properties, for any input:
//! - the stream decoder agrees with the model (same frames, same error, error fields included);
//! - it gives the same frames and the same error however the stream is cut into chunks (the
//!   fuzzer's cuts, one byte at a time, and the one-frame-per-call path the addon uses);
//! - every frame re-encodes to exactly the bytes it came from, and the frames tile the stream up
//!   to the error, whose bytes start right where the last frame ended;
//! - while decoding, the bytes held are exactly the bytes received minus the bytes of the frames
//!   delivered, and never more than one header and one payload of the limit;
//! - after an error the decoder holds nothing, delivers nothing, and repeats the same error.

use polycall_core::packet::{
    Frame, FrameFormat, HEADER_SIZE, Header, MessageType, StreamDecoder, V1,
};
use polycall_core::pcr1::{Pcr1, Pcr1Header, Pcr1Type};
use polycall_core::{Error, encode_frame};

/// An input split into its chunking plan and the stream to decode.
///
/// Layout: byte 0 holds the number of cut bytes in its low five bits and, in bit 5, whether a
/// lower payload limit follows (one byte `m`, limit `4 * m`). Then come the cut bytes: chunk
/// lengths `b + 1`, used in turn and cycled until the stream is used up. The rest is the stream.
#[derive(Debug)]
pub struct Plan<'a> {
    /// Chunk lengths (1..=256), cycled; empty means one chunk.
    pub cuts: Vec<usize>,
    /// The payload limit the decoder enforces.
    pub max_payload: u32,
    /// The bytes a peer sent.
    pub stream: &'a [u8],
}

impl<'a> Plan<'a> {
    /// Splits `data`; `None` when it is empty. `max` is the format's own limit.
    pub fn parse(data: &'a [u8], max: u32) -> Option<Self> {
        let (&control, rest) = data.split_first()?;
        let n = usize::from(control & 0x1f);
        let (max_payload, rest) = if control & 0x20 != 0 {
            let (&m, rest) = rest.split_first()?;
            (u32::from(m) * 4, rest)
        } else {
            (max, rest)
        };
        let n = n.min(rest.len());
        let (cuts, stream) = rest.split_at(n);
        Some(Self {
            cuts: cuts.iter().map(|&b| usize::from(b) + 1).collect(),
            max_payload,
            stream,
        })
    }

    /// The stream cut by the plan.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = self.stream;
        if self.cuts.is_empty() {
            if !rest.is_empty() {
                out.push(rest);
            }
            return out;
        }
        for &cut in self.cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(cut.min(rest.len()));
            out.push(piece);
            rest = tail;
        }
        out
    }
}

/// What one run of a decoder over a whole stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<H> {
    /// Frames in arrival order.
    pub frames: Vec<Frame<H>>,
    /// The error that stopped decoding, or the end-of-stream error, or none.
    pub error: Option<Error>,
}

/// A wire format the harness can model and re-encode.
pub trait Wire: FrameFormat + Sized {
    /// Encodes a decoded frame again.
    fn encode(frame: &Frame<Self::Header>) -> Vec<u8>;
    /// The specification's decoder, over a stream that ends after `stream`.
    fn model(stream: &[u8], max_payload: u32) -> Outcome<Self::Header>;
    /// Whether `e` is a framing error of this format raised before the stream ended.
    fn is_truncation(e: &Error) -> bool;
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// PROTOCOL.md §2, straight from the text: rotate left by 5, add the byte, modulo 2^32.
pub fn spec_checksum(payload: &[u8]) -> u32 {
    payload.iter().fold(0u32, |acc, &b| {
        acc.rotate_left(5).wrapping_add(u32::from(b))
    })
}

impl Wire for V1 {
    fn encode(frame: &Frame<Header>) -> Vec<u8> {
        let h = frame.header;
        encode_frame(h.kind, h.flags, h.sequence, &frame.payload)
            .expect("a decoded frame re-encodes")
    }

    fn model(stream: &[u8], max_payload: u32) -> Outcome<Header> {
        let mut frames = Vec::new();
        let mut at = 0;
        let error = loop {
            let rest = &stream[at..];
            if rest.is_empty() {
                break None;
            }
            if rest.len() < HEADER_SIZE {
                break Some(Error::TruncatedHeader {
                    buffered: rest.len(),
                });
            }
            // §7 steps 2-4, in the order listed.
            if rest[0] != 1 {
                break Some(Error::VersionMismatch { found: rest[0] });
            }
            let kind = match rest[1] {
                1 => MessageType::Handshake,
                2 => MessageType::Auth,
                3 => MessageType::Command,
                4 => MessageType::Response,
                5 => MessageType::Error,
                6 => MessageType::Heartbeat,
                found => {
                    break Some(Error::UnknownMessageType {
                        found: u32::from(found),
                    });
                }
            };
            let length = le32(rest, 8);
            if length > max_payload {
                break Some(Error::PayloadTooLarge {
                    length: u64::from(length),
                    limit: max_payload,
                });
            }
            let body = &rest[HEADER_SIZE..];
            if body.len() < length as usize {
                break Some(Error::TruncatedPayload {
                    expected: length,
                    received: u32::try_from(body.len()).expect("small input"),
                });
            }
            let payload = &body[..length as usize];
            let stated = le32(rest, 12);
            let actual = spec_checksum(payload);
            if stated != actual {
                break Some(Error::ChecksumMismatch {
                    expected: stated,
                    actual,
                });
            }
            frames.push(Frame {
                header: Header {
                    kind,
                    flags: le16(rest, 2),
                    sequence: le32(rest, 4),
                    payload_length: length,
                    checksum: stated,
                },
                payload: payload.to_vec(),
            });
            at += HEADER_SIZE + length as usize;
        };
        Outcome { frames, error }
    }

    fn is_truncation(e: &Error) -> bool {
        matches!(
            e,
            Error::TruncatedHeader { .. } | Error::TruncatedPayload { .. }
        )
    }
}

impl Wire for Pcr1 {
    fn encode(frame: &Frame<Pcr1Header>) -> Vec<u8> {
        polycall_core::pcr1::encode_frame(frame.header.kind, frame.header.corr, &frame.payload)
            .expect("a decoded frame re-encodes")
    }

    fn model(stream: &[u8], max_payload: u32) -> Outcome<Pcr1Header> {
        let mut frames = Vec::new();
        let mut at = 0;
        let error = loop {
            let rest = &stream[at..];
            if rest.is_empty() {
                break None;
            }
            if rest.len() < HEADER_SIZE {
                break Some(Error::Pcr1TruncatedHeader {
                    buffered: rest.len(),
                });
            }
            // PROTOCOL-PCR1.md §1: magic, type, flags and reserved, length; all from the header.
            if &rest[..4] != b"PCR1" {
                break Some(Error::Pcr1BadMagic {
                    found: [rest[0], rest[1], rest[2], rest[3]],
                });
            }
            let kind = match rest[4] {
                1 => Pcr1Type::Request,
                2 => Pcr1Type::Response,
                3 => Pcr1Type::Control,
                4 => Pcr1Type::ControlReply,
                found => break Some(Error::Pcr1UnknownType { found }),
            };
            let (flags, reserved) = (rest[5], u16::from_be_bytes([rest[6], rest[7]]));
            if flags != 0 || reserved != 0 {
                break Some(Error::Pcr1ReservedBits { flags, reserved });
            }
            let length = be32(rest, 12);
            if length > max_payload {
                break Some(Error::Pcr1PayloadTooLarge {
                    length: u64::from(length),
                    limit: max_payload,
                });
            }
            let body = &rest[HEADER_SIZE..];
            if body.len() < length as usize {
                break Some(Error::Pcr1TruncatedPayload {
                    expected: length,
                    received: u32::try_from(body.len()).expect("small input"),
                });
            }
            frames.push(Frame {
                header: Pcr1Header {
                    kind,
                    corr: be32(rest, 8),
                    length,
                },
                payload: body[..length as usize].to_vec(),
            });
            at += HEADER_SIZE + length as usize;
        };
        Outcome { frames, error }
    }

    fn is_truncation(e: &Error) -> bool {
        matches!(
            e,
            Error::Pcr1TruncatedHeader { .. } | Error::Pcr1TruncatedPayload { .. }
        )
    }
}

fn frame_bytes<W: Wire>(f: &Frame<W::Header>) -> usize {
    HEADER_SIZE + f.payload.len()
}

/// Decodes `chunks` one `push` each, then ends the stream, checking the held-bytes invariant
/// after every call and the decoder's behaviour after an error.
pub fn run_pushes<W: Wire>(max_payload: u32, chunks: &[&[u8]]) -> Outcome<W::Header> {
    let mut d = StreamDecoder::<W>::with_max_payload(max_payload).expect("limit in range");
    let mut frames = Vec::new();
    let mut fed = 0usize;
    let mut delivered = 0usize;
    for chunk in chunks {
        fed += chunk.len();
        let before = frames.len();
        let result = d.push(chunk, &mut frames);
        delivered += frames[before..].iter().map(frame_bytes::<W>).sum::<usize>();
        if let Err(e) = result {
            assert_failed_for_good::<W>(&mut d, &e);
            return Outcome {
                frames,
                error: Some(e),
            };
        }
        assert_eq!(d.buffered(), fed - delivered, "bytes held");
        assert!(d.buffered() <= HEADER_SIZE + max_payload as usize);
    }
    let error = d.finish().err();
    if let Some(e) = &error {
        assert!(W::is_truncation(e), "finish() reported {e:?}");
        assert_failed_for_good::<W>(&mut d, e);
    }
    Outcome { frames, error }
}

/// Decodes `chunks` the way the addon does: at most one frame per call, handing the unread
/// rest of a chunk back in, with owned copies of in-chunk payloads.
pub fn run_one_frame_per_call<W: Wire>(max_payload: u32, chunks: &[&[u8]]) -> Outcome<W::Header> {
    use polycall_core::packet::Payload;
    let mut d = StreamDecoder::<W>::with_max_payload(max_payload).expect("limit in range");
    let mut frames = Vec::new();
    for chunk in chunks {
        let mut rest: &[u8] = chunk;
        loop {
            let mut got = None;
            let used = match d.decode(rest, 1, |f| got = Some(f)) {
                Ok(used) => used,
                Err(e) => {
                    assert!(got.is_none(), "a frame and an error from one call");
                    return Outcome {
                        frames,
                        error: Some(e),
                    };
                }
            };
            assert!(used <= rest.len());
            if let Some(f) = got {
                let payload = match f.payload {
                    Payload::InChunk { start, end } => rest[start..end].to_vec(),
                    Payload::Assembled(v) => v,
                };
                frames.push(Frame {
                    header: f.header,
                    payload,
                });
            } else {
                assert_eq!(used, rest.len(), "no frame, so the whole chunk is taken");
            }
            rest = &rest[used..];
            if rest.is_empty() {
                break;
            }
        }
    }
    Outcome {
        frames,
        error: d.finish().err(),
    }
}

fn assert_failed_for_good<W: Wire>(d: &mut StreamDecoder<W>, e: &Error) {
    assert_eq!(d.buffered(), 0, "a failed decoder holds nothing");
    assert_eq!(d.failure(), Some(e));
    let mut more = Vec::new();
    let valid_frame: &[u8] = &[0u8; HEADER_SIZE];
    assert_eq!(d.push(valid_frame, &mut more).as_ref(), Err(e));
    assert!(more.is_empty());
    assert_eq!(d.finish().as_ref(), Err(e));
}

/// How much of a stream the byte-at-a-time run feeds one byte per call.
const BYTEWISE: usize = 1024;

/// Every property of the module docs, for one input.
pub fn check_stream<W: Wire>(data: &[u8]) {
    let Some(plan) = Plan::parse(data, W::MAX_PAYLOAD) else {
        return;
    };
    let stream = plan.stream;
    let max = plan.max_payload;

    let model = W::model(stream, max);
    let whole = run_pushes::<W>(max, &[stream]);
    assert_eq!(
        whole, model,
        "the decoder disagrees with the specification's algorithm"
    );

    let cut = plan.chunks();
    assert_eq!(
        run_pushes::<W>(max, &cut),
        whole,
        "chunking {:?}",
        plan.cuts
    );
    // One byte at a time over the first KiB (every header and payload boundary there), then the
    // rest in one chunk: the full byte-by-byte run of a 4 KiB input would cost most of an
    // execution and find nothing the first KiB does not.
    let (head, tail) = stream.split_at(stream.len().min(BYTEWISE));
    let mut bytes: Vec<&[u8]> = head.chunks(1).collect();
    if !tail.is_empty() {
        bytes.push(tail);
    }
    assert_eq!(run_pushes::<W>(max, &bytes), whole, "one byte at a time");
    assert_eq!(
        run_one_frame_per_call::<W>(max, &cut),
        whole,
        "one frame per call"
    );

    // The frames tile the stream up to the error, each re-encoding to its own bytes.
    let mut at = 0;
    for f in &whole.frames {
        let again = W::encode(f);
        assert_eq!(
            &stream[at..at + again.len()],
            again.as_slice(),
            "re-encoded frame"
        );
        at += again.len();
    }
    let rest = &stream[at..];
    match &whole.error {
        None => assert!(rest.is_empty()),
        Some(e) if W::is_truncation(e) => assert!(!rest.is_empty()),
        Some(e) => {
            // The bad frame starts right after the last good one: on its own, it fails at
            // once with the same error.
            let alone = run_pushes::<W>(max, &[rest]);
            assert!(alone.frames.is_empty());
            assert_eq!(alone.error.as_ref(), Some(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_layout() {
        let p = Plan::parse(&[0x22, 10, 0, 2, b'a', b'b', b'c', b'd', b'e'], 1 << 20).unwrap();
        assert_eq!((p.max_payload, p.cuts.as_slice()), (40, &[1, 3][..]));
        assert_eq!(p.chunks(), [&b"a"[..], b"bcd", b"e"]);
        assert!(Plan::parse(&[], 1).is_none());
    }

    #[test]
    fn vectors_pass() {
        let mut data = vec![0x01, 4];
        data.extend(encode_frame(MessageType::Command, 8, 3, b"{\"command\":\"status\"}").unwrap());
        data.extend(encode_frame(MessageType::Heartbeat, 0, 4, b"").unwrap());
        check_stream::<V1>(&data);
        data[3] = 9;
        check_stream::<V1>(&data);
        data.truncate(30);
        check_stream::<V1>(&data);
        let mut pcr1 = vec![0x00];
        pcr1.extend(
            polycall_core::pcr1::encode_frame(Pcr1Type::Control, 21, b"{\"action\":\"ping\"}")
                .unwrap(),
        );
        check_stream::<Pcr1>(&pcr1);
        pcr1[6] = 1;
        check_stream::<Pcr1>(&pcr1);
    }
}
