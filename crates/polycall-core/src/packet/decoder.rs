//! The streaming frame decoder (docs/protocol.md §7, decoder algorithm), generic over the frame
//! format so the v1 frame and the PCR1 frame (docs/protocol.md §P1) share one implementation.
//!
//! TCP keeps no message boundaries, so one pushed chunk may hold many frames, part of one, or
//! the end of one and the start of the next. The decoder keeps at most one unfinished frame
//! between chunks, validates each header before it stores a single payload byte (so a length
//! field cannot make it allocate more than the configured limit, and it grows the buffer
//! only as bytes actually arrive), checks the checksum, and reports each frame once.
//!
//! Frames that lie wholly inside a chunk are reported as byte ranges of that chunk, so a
//! caller that owns the chunk can hand out zero-copy views. Only a frame whose payload
//! straddles chunks is assembled into an owned buffer, and a single call completes at most
//! one such frame (the one already in progress when the call began).

use super::header::{HEADER_SIZE, Header, MAX_PAYLOAD};
use crate::checksum::{checksum, update};
use crate::error::{Error, Result};

/// A frame format: a 16-byte header validated on its own, then `payload_length` bytes.
pub trait FrameFormat {
    /// The validated header.
    type Header: Copy + core::fmt::Debug + PartialEq + Eq;
    /// The format's largest payload, inclusive.
    const MAX_PAYLOAD: u32;
    /// Parses and validates a header before any payload byte is looked at.
    ///
    /// # Errors
    /// The format's header errors.
    fn decode_header(bytes: &[u8; HEADER_SIZE], max_payload: u32) -> Result<Self::Header>;
    /// The header when it is valid, `None` otherwise (then [`FrameFormat::decode_header`] names
    /// the error). The decoder's loop over whole frames calls this one: without an error value
    /// to carry, the compiler keeps each header in plain registers.
    fn parse_header(bytes: &[u8; HEADER_SIZE], max_payload: u32) -> Option<Self::Header> {
        Self::decode_header(bytes, max_payload).ok()
    }
    /// The header's payload length.
    fn payload_length(header: &Self::Header) -> u32;
    /// The checksum the payload must have, for formats that carry one.
    fn checksum(header: &Self::Header) -> Option<u32>;
    /// The error for a stream that ended inside a header.
    fn truncated_header(buffered: usize) -> Error;
    /// The error for a stream that ended inside a payload.
    fn truncated_payload(expected: u32, received: u32) -> Error;
}

/// The LibPolyCall v1 frame (docs/protocol.md §1-§2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1;

impl FrameFormat for V1 {
    type Header = Header;
    const MAX_PAYLOAD: u32 = MAX_PAYLOAD;

    fn decode_header(bytes: &[u8; HEADER_SIZE], max_payload: u32) -> Result<Header> {
        Header::decode(bytes, max_payload)
    }
    fn parse_header(bytes: &[u8; HEADER_SIZE], max_payload: u32) -> Option<Header> {
        Header::parse(bytes, max_payload)
    }
    fn payload_length(header: &Header) -> u32 {
        header.payload_length
    }
    fn checksum(header: &Header) -> Option<u32> {
        Some(header.checksum)
    }
    fn truncated_header(buffered: usize) -> Error {
        Error::TruncatedHeader { buffered }
    }
    fn truncated_payload(expected: u32, received: u32) -> Error {
        Error::TruncatedPayload { expected, received }
    }
}

/// Where a decoded frame's payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `chunk[start..end]` of the chunk passed to [`FrameDecoder::decode`].
    InChunk {
        /// First payload byte.
        start: usize,
        /// One past the last payload byte.
        end: usize,
    },
    /// The payload arrived across several chunks and was assembled here.
    Assembled(Vec<u8>),
}

/// One frame reported by [`StreamDecoder::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFrame<H = Header> {
    /// The validated header.
    pub header: H,
    /// The payload's location.
    pub payload: Payload,
}

/// A frame with an owned payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<H = Header> {
    /// The validated header.
    pub header: H,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Partial<H> {
    header: H,
    payload: Vec<u8>,
    sum: u32,
}

/// Incremental decoder of one byte stream in format `F`. Unusable after an error: every later
/// call returns that error again, since neither format has a resynchronisation marker.
#[derive(Debug)]
pub struct StreamDecoder<F: FrameFormat> {
    max_payload: u32,
    head: [u8; HEADER_SIZE],
    head_len: usize,
    partial: Option<Partial<F::Header>>,
    failed: Option<Error>,
}

/// The v1 frame decoder.
pub type FrameDecoder = StreamDecoder<V1>;

impl<F: FrameFormat> Default for StreamDecoder<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: FrameFormat> StreamDecoder<F> {
    /// A decoder enforcing the format's payload limit (1 MiB for both formats).
    pub fn new() -> Self {
        Self {
            max_payload: F::MAX_PAYLOAD,
            head: [0; HEADER_SIZE],
            head_len: 0,
            partial: None,
            failed: None,
        }
    }

    /// A decoder with a lower payload limit.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` when `max_payload` exceeds the format's maximum of 1 048 576.
    pub fn with_max_payload(max_payload: u32) -> Result<Self> {
        if max_payload > F::MAX_PAYLOAD {
            return Err(Error::InvalidArgument(format!(
                "maxPayload {max_payload} exceeds the protocol maximum of {} bytes",
                F::MAX_PAYLOAD
            )));
        }
        Ok(Self {
            max_payload,
            ..Self::new()
        })
    }

    /// The payload limit in force.
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// Bytes held for an unfinished frame (header bytes plus payload bytes so far).
    pub fn buffered(&self) -> usize {
        match &self.partial {
            Some(p) => HEADER_SIZE + p.payload.len(),
            None => self.head_len,
        }
    }

    /// The error that stopped this decoder, if any.
    pub fn failure(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    /// Decodes frames from `chunk`, calling `sink` for each in arrival order, and stops after
    /// `max_frames` frames. Returns how many bytes of `chunk` were consumed: all of them
    /// (unfinished bytes are kept internally) unless `max_frames` frames were produced first,
    /// in which case the caller passes `chunk[consumed..]` again.
    ///
    /// On a bad frame, the frames before it have already gone to `sink`, the error is
    /// returned, and the decoder stays failed.
    ///
    /// # Errors
    /// The format's header errors (before any payload byte is stored) or `CHECKSUM_MISMATCH`;
    /// or the earlier error of a failed decoder.
    pub fn decode<S: FnMut(DecodedFrame<F::Header>)>(
        &mut self,
        chunk: &[u8],
        max_frames: usize,
        mut sink: S,
    ) -> Result<usize> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.decode_inner(chunk, max_frames, &mut sink);
        if let Err(e) = &result {
            self.fail(e.clone());
        }
        result
    }

    /// Decodes every complete frame in `chunk` into `out` (owned payloads). Frames before a
    /// bad one are still appended to `out`.
    ///
    /// # Errors
    /// As [`FrameDecoder::decode`].
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Frame<F::Header>>) -> Result<()> {
        self.decode(chunk, usize::MAX, |f| {
            let payload = match f.payload {
                Payload::InChunk { start, end } => chunk
                    .get(start..end)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default(),
                Payload::Assembled(v) => v,
            };
            out.push(Frame {
                header: f.header,
                payload,
            });
        })
        .map(|_| ())
    }

    /// Declares the end of the stream.
    ///
    /// # Errors
    /// `TRUNCATED_HEADER` when 1 to 15 header bytes are buffered, `TRUNCATED_PAYLOAD` when a
    /// payload is incomplete, or the earlier error of a failed decoder.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let err = if let Some(p) = &self.partial {
            F::truncated_payload(
                F::payload_length(&p.header),
                u32::try_from(p.payload.len()).unwrap_or(u32::MAX),
            )
        } else if self.head_len > 0 {
            F::truncated_header(self.head_len)
        } else {
            return Ok(());
        };
        self.fail(err.clone());
        Err(err)
    }

    fn fail(&mut self, err: Error) {
        self.failed = Some(err);
        self.partial = None;
        self.head_len = 0;
    }

    fn verify(header: &F::Header, actual: u32) -> Result<()> {
        match F::checksum(header) {
            Some(expected) => Self::verify_sum(expected, actual),
            None => Ok(()),
        }
    }

    /// The running checksum over `bytes`, only for formats that carry one.
    fn sum(header: &F::Header, acc: u32, bytes: &[u8]) -> u32 {
        if F::checksum(header).is_some() {
            update(acc, bytes)
        } else {
            0
        }
    }

    /// Decodes from `chunk`: first the frame already in progress (if any), then whole frames
    /// straight from the chunk in a tight loop, and finally keeps the start of an unfinished
    /// frame. Same contract as [`StreamDecoder::decode`].
    fn decode_inner(
        &mut self,
        chunk: &[u8],
        max_frames: usize,
        sink: &mut impl FnMut(DecodedFrame<F::Header>),
    ) -> Result<usize> {
        if max_frames == 0 {
            return Ok(0);
        }
        let mut pos = 0usize;
        let mut produced = 0usize;
        if self.partial.is_some() || self.head_len > 0 {
            match self.resume(chunk, sink)? {
                Some(used) => {
                    pos = used;
                    produced = 1;
                }
                None => return Ok(chunk.len()),
            }
        }
        while produced < max_frames {
            let rest = chunk.get(pos..).unwrap_or_default();
            let Some((head, body)) = rest.split_first_chunk::<HEADER_SIZE>() else {
                // Fewer than 16 bytes left: the start of the next header, kept for the next call.
                self.keep_head(rest);
                return Ok(chunk.len());
            };
            let Some(header) = F::parse_header(head, self.max_payload) else {
                return Err(F::decode_header(head, self.max_payload)
                    .err()
                    .unwrap_or_else(|| {
                        Error::InvalidArgument("header refused without an error".into())
                    }));
            };
            let len = F::payload_length(&header) as usize;
            let start = pos + HEADER_SIZE;
            let Some(payload) = body.get(..len) else {
                self.begin_partial(header, body);
                return Ok(chunk.len());
            };
            if let Some(expected) = F::checksum(&header) {
                Self::verify_sum(expected, checksum(payload))?;
            }
            sink(DecodedFrame {
                header,
                payload: Payload::InChunk {
                    start,
                    end: start + len,
                },
            });
            pos = start + len;
            produced += 1;
        }
        Ok(pos)
    }

    /// Continues the frame in progress with the start of `chunk`. Returns how many bytes of
    /// `chunk` completed it (the frame went to `sink`), or `None` when all of `chunk` was
    /// taken and the frame is still unfinished.
    fn resume(
        &mut self,
        chunk: &[u8],
        sink: &mut impl FnMut(DecodedFrame<F::Header>),
    ) -> Result<Option<usize>> {
        if let Some(p) = self.partial.as_mut() {
            let total = F::payload_length(&p.header) as usize;
            let want = total - p.payload.len();
            let take = want.min(chunk.len());
            let (piece, _) = chunk.split_at(take);
            let needed = p.payload.len() + take;
            if needed > p.payload.capacity() {
                // Grow geometrically but never past the announced length, so memory tracks
                // the bytes that actually arrived.
                let target = needed.max(p.payload.capacity() * 2).min(total);
                p.payload.reserve_exact(target - p.payload.len());
            }
            p.sum = Self::sum(&p.header, p.sum, piece);
            p.payload.extend_from_slice(piece);
            if take < want {
                return Ok(None);
            }
            let Some(done) = self.partial.take() else {
                return Ok(None);
            };
            Self::verify(&done.header, done.sum)?;
            sink(DecodedFrame {
                header: done.header,
                payload: Payload::Assembled(done.payload),
            });
            return Ok(Some(take));
        }

        let take = (HEADER_SIZE - self.head_len).min(chunk.len());
        let (piece, _) = chunk.split_at(take);
        if let Some(dst) = self.head.get_mut(self.head_len..self.head_len + take) {
            dst.copy_from_slice(piece);
        }
        self.head_len += take;
        if self.head_len < HEADER_SIZE {
            return Ok(None);
        }
        self.head_len = 0;
        let header = F::decode_header(&self.head, self.max_payload)?;
        let len = F::payload_length(&header) as usize;
        let rest = chunk.get(take..).unwrap_or_default();
        let Some(payload) = rest.get(..len) else {
            self.begin_partial(header, rest);
            return Ok(None);
        };
        if let Some(expected) = F::checksum(&header) {
            Self::verify_sum(expected, checksum(payload))?;
        }
        sink(DecodedFrame {
            header,
            payload: Payload::InChunk {
                start: take,
                end: take + len,
            },
        });
        Ok(Some(take + len))
    }

    /// Keeps up to 15 bytes as the start of the next header.
    fn keep_head(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.head.get_mut(..bytes.len()) {
            dst.copy_from_slice(bytes);
            self.head_len = bytes.len();
        }
    }

    /// Starts buffering the payload of `header`, of which `bytes` arrived so far.
    fn begin_partial(&mut self, header: F::Header, bytes: &[u8]) {
        let len = F::payload_length(&header) as usize;
        let mut payload = Vec::with_capacity(bytes.len().max(4096).min(len));
        payload.extend_from_slice(bytes);
        self.partial = Some(Partial {
            sum: Self::sum(&header, 0, bytes),
            header,
            payload,
        });
    }

    fn verify_sum(expected: u32, actual: u32) -> Result<()> {
        if expected == actual {
            Ok(())
        } else {
            Err(Error::ChecksumMismatch { expected, actual })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{MessageType, encode_frame};

    fn frame(seq: u32, payload: &[u8]) -> Vec<u8> {
        encode_frame(MessageType::Command, 8, seq, payload).unwrap()
    }

    #[test]
    fn in_chunk_ranges_and_assembled_payloads() {
        let mut stream = frame(1, b"hello");
        stream.extend(frame(2, b"world!"));
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        let used = d.decode(&stream, usize::MAX, |f| got.push(f)).unwrap();
        assert_eq!(used, stream.len());
        assert_eq!(got[0].payload, Payload::InChunk { start: 16, end: 21 });
        assert_eq!(got[1].payload, Payload::InChunk { start: 37, end: 43 });

        let (a, b) = stream.split_at(19);
        let mut got = Vec::new();
        d.decode(a, usize::MAX, |f| got.push(f)).unwrap();
        assert!(got.is_empty());
        assert_eq!(d.buffered(), 19);
        d.decode(b, usize::MAX, |f| got.push(f)).unwrap();
        assert_eq!(got[0].payload, Payload::Assembled(b"hello".to_vec()));
        assert_eq!(got[1].payload, Payload::InChunk { start: 18, end: 24 });
        d.finish().unwrap();
    }

    #[test]
    fn max_frames_returns_consumed_prefix() {
        let mut stream = Vec::new();
        for i in 0..5 {
            stream.extend(frame(i, b"ab"));
        }
        let mut d = FrameDecoder::new();
        let mut n = 0;
        let used = d.decode(&stream, 2, |_| n += 1).unwrap();
        assert_eq!((n, used), (2, 36));
        let used2 = d.decode(&stream[used..], 10, |_| n += 1).unwrap();
        assert_eq!((n, used + used2), (5, stream.len()));
    }

    #[test]
    fn errors_are_sticky_and_keep_earlier_frames() {
        let mut stream = frame(1, b"ok");
        let mut bad = frame(2, b"bad");
        bad[12] ^= 1;
        stream.extend(bad);
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        let err = d.push(&stream, &mut out).unwrap_err();
        assert_eq!(err.code(), "CHECKSUM_MISMATCH");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].payload, b"ok");
        assert_eq!(d.push(&frame(3, b"x"), &mut out).unwrap_err(), err);
        assert_eq!(d.finish().unwrap_err(), err);
        assert_eq!(d.failure(), Some(&err));
    }

    #[test]
    fn oversize_length_fails_at_header_without_buffering() {
        let mut d = FrameDecoder::new();
        let mut head = [0u8; 16];
        head[0] = 1;
        head[1] = 3;
        head[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = d.decode(&head, usize::MAX, |_| ()).unwrap_err();
        assert_eq!(err.code(), "PAYLOAD_TOO_LARGE");
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn lower_limit_and_bad_limit() {
        let mut d = FrameDecoder::with_max_payload(4).unwrap();
        let err = d.decode(&frame(1, b"hello"), 9, |_| ()).unwrap_err();
        assert_eq!(err.code(), "PAYLOAD_TOO_LARGE");
        assert_eq!(err.to_string(), "payload_length 5 exceeds the 4-byte limit");
        assert!(FrameDecoder::with_max_payload(MAX_PAYLOAD + 1).is_err());
        assert_eq!(FrameDecoder::default().max_payload(), MAX_PAYLOAD);
    }

    #[test]
    fn truncation_at_end_of_stream() {
        let f = frame(1, b"hello");
        let mut d = FrameDecoder::new();
        d.decode(&f[..10], 9, |_| ()).unwrap();
        assert_eq!(d.finish().unwrap_err().code(), "TRUNCATED_HEADER");
        let mut d = FrameDecoder::new();
        d.decode(&f[..18], 9, |_| ()).unwrap();
        assert_eq!(
            d.finish().unwrap_err(),
            Error::TruncatedPayload {
                expected: 5,
                received: 2
            }
        );
    }

    #[test]
    fn large_payload_grows_with_arrival() {
        let payload = vec![7u8; 300_000];
        let f = frame(9, &payload);
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for piece in f.chunks(1000) {
            d.decode(piece, usize::MAX, |x| got.push(x)).unwrap();
            if got.is_empty() {
                assert!(d.buffered() <= 16 + 300_000);
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload, Payload::Assembled(payload));
    }
}
