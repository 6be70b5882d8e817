//! The one conversion from core errors to JS errors. napi uses the status string as the JS
//! error's `code`, so a core `CHECKSUM_MISMATCH` reaches JS as `ERR_POLYCALL_CHECKSUM_MISMATCH`.

/// Turns a core error into a JS error whose `code` is `ERR_POLYCALL_<IDENTIFIER>`.
#[allow(clippy::needless_pass_by_value)] // used as `.map_err(to_js)`, which passes by value
pub fn to_js(e: polycall_core::Error) -> napi::Error<String> {
    napi::Error::new(format!("ERR_POLYCALL_{}", e.code()), e.to_string())
}

/// An argument error raised by the glue itself.
pub fn invalid(reason: impl Into<String>) -> napi::Error<String> {
    napi::Error::new("ERR_POLYCALL_INVALID_ARGUMENT".to_owned(), reason.into())
}
