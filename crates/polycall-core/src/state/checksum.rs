//! State integrity checksums and endpoint names (docs/protocol.md §9.1, §9.2).
//!
//! - [`node_state_checksum`]: node-polycall's checksum, Java's `String.hashCode` over the
//!   UTF-16 code units of a state's JSON, read as unsigned.
//! - [`c_state_checksum`]: the C library's checksum of a state record, for the one layout
//!   that is reproducible: LP64, little-endian, enter and exit actions both NULL.
//! - [`endpoint_for`]: node-polycall's default endpoint of a state name.

/// Bytes of the C record's name field (31 characters and a NUL).
pub const C_NAME_FIELD: usize = 32;
/// Bytes the C checksum covers on LP64: name, two pointers, final flag, padding, id.
pub const C_COVERED_BYTES: usize = 56;

/// Java's `String.hashCode` over the UTF-16 code units of `text`, as an unsigned number:
/// `h = h * 31 + unit (mod 2^32)` from 0. This is node-polycall's state checksum when `text`
/// is the state's compact JSON.
///
/// ```
/// use polycall_core::state::node_state_checksum;
/// assert_eq!(node_state_checksum("{}"), 3938);
/// ```
pub fn node_state_checksum(text: &str) -> u32 {
    JavaHash::default().update(text).finish()
}

/// `31^n mod 2^32`.
const fn pow31(n: u32) -> u32 {
    let mut p = 1u32;
    let mut i = 0;
    while i < n {
        p = p.wrapping_mul(31);
        i += 1;
    }
    p
}

/// Powers of 31 for an 8-unit block: `POW[i] = 31^(7 - i)`, and `31^8`.
const POW: [u32; 8] = [
    pow31(7),
    pow31(6),
    pow31(5),
    pow31(4),
    pow31(3),
    pow31(2),
    pow31(1),
    1,
];
const POW8: u32 = pow31(8);

/// [`node_state_checksum`] fed in pieces: the hash of the concatenation of every `update`.
///
/// `h * 31 + unit` is a chain of dependent multiplications; an ASCII block of eight units is
/// folded in at once as `h * 31^8 + sum(unit_i * 31^(7 - i))`, whose products are independent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct JavaHash(u32);

impl JavaHash {
    /// Adds the UTF-16 code units of `text`.
    #[must_use]
    pub(crate) fn update(mut self, text: &str) -> Self {
        let mut rest = text;
        while !rest.is_empty() {
            let ascii = rest
                .bytes()
                .position(|b| !b.is_ascii())
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(ascii);
            self.ascii(run.as_bytes());
            let mut chars = tail.chars();
            if let Some(c) = chars.next() {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    self.0 = self.0.wrapping_mul(31).wrapping_add(u32::from(*unit));
                }
            }
            rest = chars.as_str();
        }
        self
    }

    fn ascii(&mut self, bytes: &[u8]) {
        let mut blocks = bytes.chunks_exact(8);
        for block in &mut blocks {
            let sum = block.iter().zip(POW).fold(0u32, |acc, (b, p)| {
                acc.wrapping_add(u32::from(*b).wrapping_mul(p))
            });
            self.0 = self.0.wrapping_mul(POW8).wrapping_add(sum);
        }
        for b in blocks.remainder() {
            self.0 = self.0.wrapping_mul(31).wrapping_add(u32::from(*b));
        }
    }

    /// The hash so far.
    pub(crate) fn finish(self) -> u32 {
        self.0
    }
}

/// The 56 bytes the C library's state checksum covers on an LP64 build whose state has no
/// enter or exit action: `name` cut to 31 bytes and NUL padded to 32, two NULL pointers,
/// `is_final`, three zero padding bytes, `id` as u32 LE.
pub fn c_state_covered_bytes(name: &str, is_final: bool, id: u32) -> [u8; C_COVERED_BYTES] {
    let mut bytes = [0u8; C_COVERED_BYTES];
    let kept = name.len().min(C_NAME_FIELD - 1);
    if let (Some(dst), Some(src)) = (bytes.get_mut(..kept), name.as_bytes().get(..kept)) {
        dst.copy_from_slice(src);
    }
    if let Some(flag) = bytes.get_mut(48) {
        *flag = u8::from(is_final);
    }
    if let Some(dst) = bytes.get_mut(52..56) {
        dst.copy_from_slice(&id.to_le_bytes());
    }
    bytes
}

/// The C library's state checksum (§9.1) for the NULL-action LP64 layout: over
/// [`c_state_covered_bytes`], `acc = rotate_left(acc, 8) + byte (mod 2^32)` from 0. Real C
/// values embed pointer bytes whenever an action is attached; this matches them exactly when
/// none is.
///
/// ```
/// use polycall_core::state::c_state_checksum;
/// assert_eq!(c_state_checksum("INIT", false, 0), 0x494e_4954);
/// ```
pub fn c_state_checksum(name: &str, is_final: bool, id: u32) -> u32 {
    c_state_covered_bytes(name, is_final, id)
        .iter()
        .fold(0u32, |acc, b| {
            acc.rotate_left(8).wrapping_add(u32::from(*b))
        })
}

/// JavaScript's `\s` and `String.prototype.trim` set (`WhiteSpace` and `LineTerminator`). It
/// differs from Rust's `char::is_whitespace`: it has U+FEFF and lacks U+0085.
fn is_js_space(c: char) -> bool {
    matches!(
        c,
        '\u{9}'..='\u{d}'
            | ' '
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
            | '\u{feff}'
    )
}

/// node-polycall's default endpoint: `"/" + name.trim().toLowerCase().replace(/\s+/g, "-")`.
/// Whitespace follows JavaScript's definition; lower-casing is Unicode's, which matches V8 for
/// the names state machines use (node-polycall asks for ASCII names anyway).
///
/// ```
/// use polycall_core::state::endpoint_for;
/// assert_eq!(endpoint_for("  Multi   Word\tName "), "/multi-word-name");
/// ```
pub fn endpoint_for(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    out.push('/');
    let mut in_space = false;
    for c in name.trim_matches(is_js_space).to_lowercase().chars() {
        if is_js_space(c) {
            if !in_space {
                out.push('-');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(text: &str) -> u32 {
        text.encode_utf16().fold(0u32, |h, unit| {
            h.wrapping_mul(31).wrapping_add(u32::from(unit))
        })
    }

    #[test]
    fn blocked_hash_matches_the_unit_by_unit_definition() {
        let texts = [
            "",
            "{}",
            "0123456",
            "01234567",
            "012345678",
            r#"{"name":"READY","isLocked":false,"endpoint":"/ready"}"#,
            "café au lait, 😀 and \u{2028}: mixed ASCII and not, across block edges",
            "é",
            "😀😀😀😀😀😀😀😀😀",
        ];
        for text in texts {
            assert_eq!(node_state_checksum(text), reference(text), "{text:?}");
            // Any split gives the hash of the whole.
            for cut in (0..=text.len()).filter(|i| text.is_char_boundary(*i)) {
                let (a, b) = text.split_at(cut);
                assert_eq!(
                    JavaHash::default().update(a).update(b).finish(),
                    reference(text)
                );
            }
        }
    }

    #[test]
    fn java_hash_over_utf16_units() {
        assert_eq!(node_state_checksum(""), 0);
        assert_eq!(node_state_checksum("a"), 97);
        // An astral character counts as two UTF-16 units.
        let pair = (0xD83Du32 * 31).wrapping_add(0xDE00);
        assert_eq!(node_state_checksum("😀"), pair);
    }

    #[test]
    fn c_checksum_layout() {
        let b = c_state_covered_bytes("ERROR", true, 4);
        assert_eq!(&b[..5], b"ERROR");
        assert!(b[5..48].iter().all(|x| *x == 0));
        assert_eq!(b[48], 1);
        assert_eq!(&b[49..52], &[0, 0, 0]);
        assert_eq!(&b[52..], &[4, 0, 0, 0]);
        // Names are cut at 31 bytes, leaving the NUL.
        let long = "n".repeat(40);
        let b = c_state_covered_bytes(&long, false, 0);
        assert!(b[..31].iter().all(|x| *x == b'n'));
        assert_eq!(b[31], 0);
        assert_eq!(c_state_checksum(&long, false, 0), 0x7373_7305);
    }

    #[test]
    fn endpoints() {
        assert_eq!(endpoint_for("ready"), "/ready");
        assert_eq!(endpoint_for("Ready State"), "/ready-state");
        assert_eq!(endpoint_for("UPPER"), "/upper");
        assert_eq!(endpoint_for("café 😀"), "/café-😀");
        assert_eq!(endpoint_for("\u{feff}a\u{3000}\u{a0}b\u{feff}"), "/a-b");
        // U+0085 is not JavaScript whitespace.
        assert_eq!(endpoint_for("a\u{85}b"), "/a\u{85}b");
    }
}
