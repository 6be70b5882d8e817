//! Snapshot signatures (docs/security.md, "Snapshot signatures").
//!
//! A snapshot's 32-bit checksums catch corruption, but anyone who edits a snapshot can
//! recompute them. A signature makes an edit detectable by whoever holds the signer's Ed25519
//! public key. A signed snapshot is the snapshot object with one more member:
//!
//! ```text
//! "signature": { "alg": "Ed25519", "key": "ed25519:<base64url>", "value": "<base64url of 64 bytes>" }
//! ```
//!
//! `value` is the Ed25519 signature (RFC 8032) of the bytes `polycall snapshot signature v1`
//! and a NUL byte, followed by the **canonical form** of the snapshot without its `signature`
//! member. The canonical form is computed here, in Rust, from the parsed JSON: object members
//! sorted by the UTF-16 code units of their keys, no whitespace, strings escaped as
//! `JSON.stringify` escapes them, numbers written as they appear in the text. That is the JSON
//! canonicalization scheme of RFC 8785 for any text `JSON.stringify` wrote (which writes numbers
//! in their shortest round-trip form). So key order, spacing or escaping in storage never breaks
//! a signature, and the signature holds across `JSON.parse`/`JSON.stringify` round trips.

use base64ct::{Base64UrlUnpadded, Encoding};

use super::identity::{self, Identity};
use super::primitives;
use crate::error::{Error, Result};
use crate::state::json::{self, Node, Value};

/// The member a signed snapshot carries its signature in.
pub const SIGNATURE_MEMBER: &str = "signature";
/// The `alg` value of a signature.
pub const ALGORITHM: &str = "Ed25519";
/// What precedes the canonical snapshot in the signed message: a domain label, so a snapshot
/// signature can never be taken for a signature over anything else by the same key.
pub const CONTEXT: &[u8] = b"polycall snapshot signature v1\0";

/// A snapshot signature, as the `signature` member holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSignature {
    /// `ed25519:<base64url>`: the signer's signing key.
    pub key: String,
    /// The 64-byte signature in unpadded base64url.
    pub value: String,
}

fn write_canonical(node: &Node<'_>, out: &mut String) {
    match &node.value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(raw) => out.push_str(raw),
        Value::String(s) => json::write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            write_object(members.iter().map(|m| (m.key.as_str(), &m.node)), out);
        }
    }
}

fn write_object<'n, 'a: 'n>(
    members: impl Iterator<Item = (&'n str, &'n Node<'a>)>,
    out: &mut String,
) {
    let mut sorted: Vec<(&str, &Node<'_>)> = members.collect();
    sorted.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    out.push('{');
    for (i, (key, node)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_str(out, key);
        out.push(':');
        write_canonical(node, out);
    }
    out.push('}');
}

fn parse_object(text: &str) -> Result<Node<'_>> {
    let root = json::parse(text).map_err(|e| Error::InvalidSnapshot(format!("not JSON: {e}")))?;
    if root.members().is_none() {
        return Err(Error::InvalidSnapshot("a snapshot is a JSON object".into()));
    }
    Ok(root)
}

fn canonical_without_signature(root: &Node<'_>) -> String {
    let mut out = String::with_capacity(root.raw.len());
    let members = root.members().unwrap_or_default();
    write_object(
        members
            .iter()
            .filter(|m| m.key != SIGNATURE_MEMBER)
            .map(|m| (m.key.as_str(), &m.node)),
        &mut out,
    );
    out
}

/// The canonical form (module docs) of a JSON document.
///
/// # Errors
/// `INVALID_SNAPSHOT` when `text` is not JSON.
pub fn canonical_json(text: &str) -> Result<String> {
    let root = json::parse(text).map_err(|e| Error::InvalidSnapshot(format!("not JSON: {e}")))?;
    let mut out = String::with_capacity(text.len());
    write_canonical(&root, &mut out);
    Ok(out)
}

fn message(canonical: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + canonical.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(canonical.as_bytes());
    m
}

/// Signs a snapshot's JSON text (any `signature` member it has is left out and replaced).
///
/// # Errors
/// `INVALID_SNAPSHOT` when `text` is not a JSON object.
pub fn sign_snapshot(identity: &Identity, text: &str) -> Result<SnapshotSignature> {
    let root = parse_object(text)?;
    let signature = identity.sign(&message(&canonical_without_signature(&root)));
    Ok(SnapshotSignature {
        key: identity::format_signing_key(&identity.signing_key()),
        value: Base64UrlUnpadded::encode_string(&signature),
    })
}

fn member<'n>(node: &'n Node<'_>, key: &str) -> Result<&'n str> {
    node.get(key)
        .and_then(Node::as_str)
        .ok_or_else(|| Error::BadSignature(format!("the signature has no string {key:?}")))
}

/// Verifies a signed snapshot's JSON text against the expected signing key.
///
/// # Errors
/// `BAD_SIGNATURE` when the snapshot has no `signature`, a malformed one, one by another key,
/// or one that does not match its content; `INVALID_SNAPSHOT` when `text` is not a JSON object;
/// `INVALID_KEY` for a `key` that is not an Ed25519 public key.
pub fn verify_snapshot(text: &str, key: &[u8; 32]) -> Result<()> {
    identity::check_signing_key(key)?;
    let root = parse_object(text)?;
    let sig = root
        .get(SIGNATURE_MEMBER)
        .ok_or_else(|| Error::BadSignature("the snapshot is not signed".into()))?;
    if sig.members().is_none() {
        return Err(Error::BadSignature("\"signature\" is not an object".into()));
    }
    if member(sig, "alg")? != ALGORITHM {
        return Err(Error::BadSignature(
            "the signature algorithm is not Ed25519".into(),
        ));
    }
    let signer = identity::parse_signing_key(member(sig, "key")?)
        .map_err(|_| Error::BadSignature("the signature's key is not an ed25519: key".into()))?;
    if &signer != key {
        return Err(Error::BadSignature(
            "the snapshot is signed by another key".into(),
        ));
    }
    let mut bytes = [0u8; 64];
    let n = Base64UrlUnpadded::decode(member(sig, "value")?, &mut bytes)
        .map(<[u8]>::len)
        .map_err(|_| Error::BadSignature("the signature value is not base64url".into()))?;
    if n != bytes.len() {
        return Err(Error::BadSignature(
            "the signature value is not 64 bytes".into(),
        ));
    }
    if !primitives::ed25519_verify(key, &message(&canonical_without_signature(&root)), &bytes) {
        return Err(Error::BadSignature(
            "the signature does not match the snapshot".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_and_compacts() {
        let text = "{ \"b\": [1, {\"z\": null, \"a\": true}], \"a\": \"\\u00e9\\n\", \"\u{e000}\": 0, \"\u{1f600}\": 1 }";
        // U+1F600 is the surrogate pair D83D DE00, which sorts before U+E000 in UTF-16 order.
        assert_eq!(
            canonical_json(text).unwrap(),
            "{\"a\":\"é\\n\",\"b\":[1,{\"a\":true,\"z\":null}],\"\u{1f600}\":1,\"\u{e000}\":0}"
        );
        assert!(canonical_json("{").is_err());
    }

    #[test]
    fn sign_verify_and_refusals() {
        let id = Identity::from_seed(&[3; 32]).unwrap();
        let snap = r#"{"format":"polycall.state-machine/1","currentState":"A","checksum":5}"#;
        let sig = sign_snapshot(&id, snap).unwrap();
        let signed = format!(
            r#"{{"signature":{{"alg":"Ed25519","key":"{}","value":"{}"}}, "checksum":5,"currentState":"A","format":"polycall.state-machine/1"}}"#,
            sig.key, sig.value
        );
        verify_snapshot(&signed, &id.signing_key()).unwrap();
        let edited = signed.replace("\"A\"", "\"B\"");
        assert_eq!(
            verify_snapshot(&edited, &id.signing_key())
                .unwrap_err()
                .code(),
            "BAD_SIGNATURE"
        );
        let other = Identity::from_seed(&[4; 32]).unwrap();
        assert_eq!(
            verify_snapshot(&signed, &other.signing_key())
                .unwrap_err()
                .code(),
            "BAD_SIGNATURE"
        );
        assert_eq!(
            verify_snapshot(snap, &id.signing_key()).unwrap_err().code(),
            "BAD_SIGNATURE"
        );
        for broken in [
            signed.replace("Ed25519\"", "RSA\""),
            signed.replace(&sig.value, "AAAA"),
            signed.replace(&sig.key, "ed25519:AAAA"),
            r#"{"signature":1}"#.to_owned(),
            r#"{"signature":{"alg":"Ed25519"}}"#.to_owned(),
        ] {
            assert_eq!(
                verify_snapshot(&broken, &id.signing_key())
                    .unwrap_err()
                    .code(),
                "BAD_SIGNATURE",
                "{broken}"
            );
        }
        assert_eq!(
            verify_snapshot("[1]", &id.signing_key())
                .unwrap_err()
                .code(),
            "INVALID_SNAPSHOT"
        );
        assert_eq!(
            sign_snapshot(&id, "3").unwrap_err().code(),
            "INVALID_SNAPSHOT"
        );
        // Re-signing a signed snapshot signs the same content.
        assert_eq!(sign_snapshot(&id, &signed).unwrap(), sig);
    }
}
