//! Identity, key-text and snapshot-signature bindings (docs/security.md).
//!
//! An identity lives in native memory behind a `#[napi]` class: JS holds the object, never the
//! seed or a secret key, and [`BindingIdentity::destroy`] drops (and so zeroes) them at once.
//! The identity file is read and written here, so its text never becomes a JS string either.

#![allow(
    clippy::needless_pass_by_value,
    reason = "#[napi] functions receive JS strings as owned Strings"
)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::Path;

use napi::Result;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use polycall_core::crypto::identity::{self, Identity, MAX_FILE_LEN};
use polycall_core::crypto::{Zeroizing, primitives, signature};

use crate::error::to_js;

fn file_error(what: &str, path: &str, e: &std::io::Error) -> napi::Error<String> {
    to_js(polycall_core::Error::IdentityFile(format!(
        "{what} {path}: {e}"
    )))
}

fn destroyed() -> napi::Error<String> {
    napi::Error::new(
        "ERR_POLYCALL_CLOSED".to_owned(),
        "the identity was destroyed".to_owned(),
    )
}

/// A long-term identity (X25519 static key and Ed25519 signing key, derived from one seed).
/// Its secrets stay in native memory and are zeroed on `destroy()` or garbage collection.
#[napi]
pub struct BindingIdentity {
    inner: Option<Identity>,
}

impl BindingIdentity {
    /// The identity, unless destroyed.
    pub fn get(&self) -> Result<&Identity, String> {
        self.inner.as_ref().ok_or_else(destroyed)
    }
}

#[napi]
impl BindingIdentity {
    /// A new identity from OS randomness.
    #[napi(factory, catch_unwind)]
    pub fn generate() -> Result<Self, String> {
        Ok(Self {
            inner: Some(Identity::generate().map_err(to_js)?),
        })
    }

    /// The identity of a 32-byte seed.
    #[napi(factory, catch_unwind)]
    pub fn from_seed(seed: &[u8]) -> Result<Self, String> {
        Ok(Self {
            inner: Some(Identity::from_seed(seed).map_err(to_js)?),
        })
    }

    /// Reads an identity file (at most 4 KiB).
    #[napi(factory, catch_unwind)]
    pub fn load(path: String) -> Result<Self, String> {
        let file = File::open(&path).map_err(|e| file_error("cannot open", &path, &e))?;
        // One allocation of the final size: no reallocation leaves a copy of the secret behind.
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_FILE_LEN + 1));
        file.take(MAX_FILE_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| file_error("cannot read", &path, &e))?;
        Ok(Self {
            inner: Some(Identity::from_file_text(&bytes).map_err(to_js)?),
        })
    }

    /// Writes the identity file with mode 0600 (on Unix). Without `overwrite`, an existing file
    /// is refused; with it, the file is replaced atomically (written beside it, then renamed).
    #[napi(catch_unwind)]
    pub fn save(&self, path: String, overwrite: bool) -> Result<(), String> {
        let text = self.get()?.to_file_text();
        if overwrite {
            let dir = Path::new(&path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty());
            let name = Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tag = u64::from_le_bytes(*primitives::random::<8>().map_err(to_js)?);
            let temp_name = format!(".{name}.{tag:016x}.tmp");
            let temp = dir.map_or_else(
                || Path::new(&temp_name).to_path_buf(),
                |d| d.join(&temp_name),
            );
            let written = write_new(&temp, text.as_bytes()).and_then(|()| fs::rename(&temp, &path));
            if let Err(e) = written {
                let _ = fs::remove_file(&temp);
                return Err(file_error("cannot write", &path, &e));
            }
            Ok(())
        } else {
            write_new(Path::new(&path), text.as_bytes())
                .map_err(|e| file_error("cannot create", &path, &e))
        }
    }

    /// The X25519 public key (32 bytes).
    #[napi]
    pub fn public_key(&self) -> Result<Buffer, String> {
        Ok(self.get()?.public_key().to_vec().into())
    }

    /// The Ed25519 public key that verifies this identity's signatures (32 bytes).
    #[napi]
    pub fn signing_key(&self) -> Result<Buffer, String> {
        Ok(self.get()?.signing_key().to_vec().into())
    }

    /// Drops the secrets now (idempotent); later calls throw `ERR_POLYCALL_CLOSED`.
    #[napi]
    pub fn destroy(&mut self) {
        self.inner = None;
    }

    /// Whether `destroy()` was called.
    #[napi(getter)]
    pub fn destroyed(&self) -> bool {
        self.inner.is_none()
    }
}

/// Creates `path` (refusing an existing one) with mode 0600 on Unix and writes `bytes` to disk.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// `x25519:<base64url>` of a 32-byte public key.
#[napi]
pub fn format_public_key(key: &[u8]) -> Result<String, String> {
    let key: &[u8; 32] = key.try_into().map_err(|_| {
        to_js(polycall_core::Error::InvalidKey(
            "a public key is 32 bytes".into(),
        ))
    })?;
    Ok(identity::format_public_key(key))
}

/// The 32 bytes of `x25519:<base64url>`.
#[napi(catch_unwind)]
pub fn parse_public_key(text: String) -> Result<Buffer, String> {
    Ok(identity::parse_public_key(&text)
        .map_err(to_js)?
        .to_vec()
        .into())
}

/// Checks 32 bytes as an X25519 public key (not a low-order point).
#[napi(catch_unwind)]
pub fn check_public_key(key: &[u8]) -> Result<(), String> {
    identity::check_public_key(key).map(|_| ()).map_err(to_js)
}

/// `ed25519:<base64url>` of a 32-byte signing key.
#[napi(catch_unwind)]
pub fn format_signing_key(key: &[u8]) -> Result<String, String> {
    Ok(identity::format_signing_key(
        &identity::check_signing_key(key).map_err(to_js)?,
    ))
}

/// The 32 bytes of `ed25519:<base64url>`.
#[napi(catch_unwind)]
pub fn parse_signing_key(text: String) -> Result<Buffer, String> {
    Ok(identity::parse_signing_key(&text)
        .map_err(to_js)?
        .to_vec()
        .into())
}

/// A snapshot signature: the `signature` member's fields.
#[napi(object)]
pub struct BindingSnapshotSignature {
    /// Always `'Ed25519'`.
    pub alg: String,
    /// `ed25519:<base64url>`, the signer's signing key.
    pub key: String,
    /// The signature, unpadded base64url.
    pub value: String,
}

/// Signs a snapshot's JSON text (its `signature` member, if any, is left out).
#[napi(catch_unwind)]
pub fn snapshot_sign(
    identity: &BindingIdentity,
    text: String,
) -> Result<BindingSnapshotSignature, String> {
    let s = signature::sign_snapshot(identity.get()?, &text).map_err(to_js)?;
    Ok(BindingSnapshotSignature {
        alg: signature::ALGORITHM.to_owned(),
        key: s.key,
        value: s.value,
    })
}

/// Verifies a signed snapshot's JSON text against a 32-byte Ed25519 signing key.
#[napi(catch_unwind)]
pub fn snapshot_verify(text: String, key: &[u8]) -> Result<(), String> {
    let key = identity::check_signing_key(key).map_err(to_js)?;
    signature::verify_snapshot(&text, &key).map_err(to_js)
}

/// The canonical JSON form a snapshot signature covers (for tests and tools).
#[napi(catch_unwind)]
pub fn canonical_json(text: String) -> Result<String, String> {
    signature::canonical_json(&text).map_err(to_js)
}
