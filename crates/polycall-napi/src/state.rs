//! State-machine bindings (docs/protocol.md §6, §9).
//!
//! Machines live in a per-thread slab and JS holds a `u32` handle (slot index, generation
//! above), the same scheme as the decoder bindings, and states are passed as their `u32` ids.
//!
//! The guard-less transition is the hot path. Measured on Node 20 here (CPU time, napi-rs 3.16),
//! a `#[napi]` function without arguments costs about 30 ns, while the first argument adds about
//! 75 ns (napi-rs then builds its `CallbackInfo` and borrow scope) and `Date.now()` about 40 ns.
//! So `sm_step()` takes no arguments: the handle and the target are in a `Float64Array` mailbox
//! registered once per thread (`sm_set_mailbox`), the glue reads the clock, and the result is the
//! transition's timestamp, or -1 when the core refuses it (the error is kept for `sm_raise`,
//! because building and throwing a JS error on every refusal costs more than the second call on
//! the rare failure path). The core decides every transition; nothing is cached in JS.
//!
//! Snapshots cross once each way: `sm_snapshot` / `sm_restore` carry the JSON text,
//! `sm_snapshot_bytes` / `sm_restore_bytes` the compact binary form.

#![allow(
    clippy::needless_pass_by_value,
    reason = "#[napi] functions receive JS strings as owned Strings"
)]

use std::cell::RefCell;

use napi::bindgen_prelude::{BufferSlice, Either, Float64Array, Uint32Array};
use napi::{Env, Result};
use napi_derive::napi;
use polycall_core::state::{
    self, Config, RestoreOptions, SnapshotFormat, StateMachine, StateOptions,
};

use crate::error::{invalid, to_js};
use crate::slab::Slab;

struct Entry {
    machine: StateMachine,
    /// The refusal reported by the last `sm_transition` or `sm_precheck` that returned false.
    refusal: Option<polycall_core::Error>,
}

thread_local! {
    // One slab per JS thread: each worker has its own machines.
    static MACHINES: RefCell<Slab<Entry>> = RefCell::new(Slab::default());
    // The transition mailbox of this thread: `[handle, target]`, written by JS before `sm_step`.
    static MAILBOX: RefCell<Option<Float64Array>> = const { RefCell::new(None) };
}

/// Milliseconds since the Unix epoch, as `Date.now()` gives them (the same clock, floored).
fn clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A mailbox slot as a `u32`; anything else (a fraction, a negative, NaN) as `u32::MAX`, which
/// is neither a live handle nor a state id.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the value is checked to be an integer in u32's range first"
)]
fn slot(mail: &[f64], i: usize) -> u32 {
    match mail.get(i) {
        Some(&v) if v >= 0.0 && v <= f64::from(u32::MAX) && v.fract() == 0.0 => v as u32,
        _ => u32::MAX,
    }
}

fn freed() -> napi::Error<String> {
    invalid("the state machine was freed")
}

fn with<T>(handle: u32, f: impl FnOnce(&mut Entry) -> T) -> Result<T, String> {
    MACHINES.with_borrow_mut(|slab| slab.get_mut(handle).map(f).ok_or_else(freed))
}

fn with_machine<T>(
    handle: u32,
    f: impl FnOnce(&mut StateMachine) -> polycall_core::Result<T>,
) -> Result<T, String> {
    with(handle, |e| f(&mut e.machine))?.map_err(to_js)
}

/// JS milliseconds (`Date.now()`) as the core's `u64`; NaN and negatives become 0.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "Date.now() values are non-negative integers far below 2^53; the cast saturates anyway"
)]
fn millis(now: f64) -> u64 {
    if now > 0.0 { now as u64 } else { 0 }
}

/// Counters and timestamps as JS numbers (exact below 2^53, which they never reach).
#[allow(
    clippy::cast_precision_loss,
    reason = "counters and millisecond timestamps stay far below 2^53"
)]
fn num(n: u64) -> f64 {
    n as f64
}

fn size(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Creates a state machine and returns its handle. A `maxHistory` of 0 means 100.
#[napi]
pub fn sm_new(
    max_states: u32,
    max_transitions: u32,
    max_name_bytes: u32,
    max_history: u32,
    allow_self_transitions: bool,
) -> Result<u32, String> {
    let machine = StateMachine::new(Config {
        max_states: size(max_states),
        max_transitions: size(max_transitions),
        max_name_bytes: size(max_name_bytes),
        max_history: size(max_history),
        allow_self_transitions,
    });
    MACHINES.with_borrow_mut(|slab| {
        slab.insert(Entry {
            machine,
            refusal: None,
        })
        .ok_or_else(|| invalid("too many live state machines"))
    })
}

/// Releases a state machine. Freeing twice, or a stale handle, does nothing.
#[napi]
pub fn sm_free(handle: u32) {
    MACHINES.with_borrow_mut(|slab| slab.remove(handle));
}

/// Adds a state and returns its id. `metadata` is a JSON object of extra metadata.
#[napi]
pub fn sm_add_state(
    handle: u32,
    name: String,
    endpoint: Option<String>,
    is_final: bool,
    deferred: bool,
    metadata: Option<String>,
    now: f64,
) -> Result<u32, String> {
    let metadata = match metadata {
        Some(text) => state::parse_metadata_object(&text).map_err(to_js)?,
        None => Vec::new(),
    };
    let options = StateOptions {
        endpoint,
        is_final,
        deferred,
        metadata,
    };
    with_machine(handle, |m| m.add_state(&name, options, millis(now)))
}

/// Adds the transition `from -> to` (state ids).
#[napi]
pub fn sm_add_transition(handle: u32, from: u32, to: u32) -> Result<(), String> {
    with_machine(handle, |m| m.add_transition(from, to))
}

/// Fires the transition from the current state to `to`. Returns false when the core refuses
/// it (`sm_raise` then throws the reason). `sm_step` is the same without arguments.
#[napi]
pub fn sm_transition(handle: u32, to: u32, now: f64) -> Result<bool, String> {
    with(handle, |e| match e.machine.transition(to, millis(now)) {
        Ok(_) => true,
        Err(err) => {
            e.refusal = Some(err);
            false
        }
    })
}

/// Registers this thread's transition mailbox, a `Float64Array` of at least two elements that
/// JS fills with `[handle, target]` before each `sm_step`.
#[napi]
pub fn sm_set_mailbox(env: Env, mail: Float64Array) -> Result<(), String> {
    if mail.len() < 2 {
        return Err(invalid("the mailbox needs two slots"));
    }
    let first = MAILBOX.with_borrow_mut(|m| m.replace(mail).is_none());
    if first {
        // At environment teardown, leave the array's reference alone: releasing a reference of
        // an environment that is going away is not allowed.
        env.add_env_cleanup_hook((), |()| {
            MAILBOX.with_borrow_mut(|m| std::mem::forget(m.take()));
        })
        .map_err(|e| invalid(e.reason.clone()))?;
    }
    Ok(())
}

/// Fires the transition from the current state of the machine in mailbox slot 0 to the state
/// in slot 1, stamped with the clock now. Returns the timestamp (ms since the Unix epoch), or
/// -1 when the core refuses it (`sm_raise` then throws the reason).
#[napi]
pub fn sm_step() -> Result<f64, String> {
    let (handle, to) = MAILBOX.with_borrow(|m| {
        m.as_deref()
            .map(|mail| (slot(mail, 0), slot(mail, 1)))
            .ok_or_else(|| invalid("no transition mailbox registered"))
    })?;
    let now = clock_ms();
    with(handle, |e| match e.machine.transition(to, now) {
        Ok(_) => num(now),
        Err(err) => {
            e.refusal = Some(err);
            -1.0
        }
    })
}

/// Checks the transition to `to` without firing it; a refusal counts as a failed transition.
/// Returns false when refused (`sm_raise` then throws the reason).
#[napi]
pub fn sm_precheck(handle: u32, to: u32) -> Result<bool, String> {
    with(handle, |e| match e.machine.precheck(to) {
        Ok(_) => true,
        Err(err) => {
            e.refusal = Some(err);
            false
        }
    })
}

/// Counts a failed transition of the current state (a guard said no, a hook threw, the call
/// was aborted while its guard or hooks ran).
#[napi]
pub fn sm_record_failure(handle: u32) -> Result<(), String> {
    with(handle, |e| e.machine.record_failure())
}

/// Throws the refusal kept by the last `sm_transition` or `sm_precheck` that returned false.
#[napi]
pub fn sm_raise(handle: u32) -> Result<(), String> {
    match with(handle, |e| e.refusal.take())? {
        Some(err) => Err(to_js(err)),
        None => Err(invalid("no refusal to report")),
    }
}

/// The current state's id, or -1 when there is none.
#[napi]
pub fn sm_current(handle: u32) -> Result<i64, String> {
    with(handle, |e| e.machine.current().map_or(-1, i64::from))
}

/// Locks state `id` (strict: locking a locked state throws `STATE_LOCKED`).
#[napi]
pub fn sm_lock(handle: u32, id: u32, now: f64) -> Result<(), String> {
    with_machine(handle, |m| m.lock(id, millis(now)))
}

/// Unlocks state `id` (strict: unlocking an unlocked state throws `STATE_NOT_LOCKED`).
#[napi]
pub fn sm_unlock(handle: u32, id: u32) -> Result<(), String> {
    with_machine(handle, |m| m.unlock(id))
}

/// Sets metadata `key` of state `id` to the JSON text `value`; bumps the version.
#[napi]
pub fn sm_set_metadata(
    handle: u32,
    id: u32,
    key: String,
    value: String,
    now: f64,
) -> Result<(), String> {
    with_machine(handle, |m| m.set_metadata(id, &key, &value, millis(now)))
}

/// Everything known about one state.
#[napi(object)]
pub struct BindingStateInfo {
    /// State name.
    pub name: String,
    /// Endpoint.
    pub endpoint: String,
    /// Locked flag.
    pub locked: bool,
    /// Final flag.
    pub is_final: bool,
    /// Metadata as a JSON array of `[key, value]` pairs, in insertion order.
    pub metadata: String,
    /// Ids of the transition targets, in the order added.
    pub targets: Vec<u32>,
    /// Metadata version.
    pub version: f64,
    /// Metadata `createdAt` (ms).
    pub created_at: f64,
    /// Metadata `lastModified` (ms).
    pub last_modified: f64,
    /// Metadata `lockedAt` (ms), while locked.
    pub locked_at: Option<f64>,
    /// Stored node-polycall checksum.
    pub checksum: u32,
    /// C-compatible checksum (NULL-action LP64 layout).
    pub c_checksum: u32,
    /// Transitions into the state.
    pub transitions_in: f64,
    /// Transitions out of the state.
    pub transitions_out: f64,
    /// Refused or failed transitions from the state.
    pub failed_transitions: f64,
    /// Integrity checks run.
    pub integrity_checks: f64,
    /// Integrity checks failed.
    pub integrity_failures: f64,
}

/// Name, flags, metadata, targets, checksums and counters of state `id`.
#[napi]
pub fn sm_state_info(handle: u32, id: u32) -> Result<BindingStateInfo, String> {
    with_machine(handle, |m| {
        let d = m.diagnostics(id)?;
        Ok(BindingStateInfo {
            name: m.name(id).unwrap_or_default().to_owned(),
            endpoint: m.endpoint(id).unwrap_or_default().to_owned(),
            locked: d.locked,
            is_final: d.is_final,
            metadata: m.metadata_entries_json(id)?,
            targets: m.targets(id).unwrap_or_default().to_vec(),
            version: num(d.version),
            created_at: num(d.created_at),
            last_modified: num(d.last_modified),
            locked_at: d.locked_at.map(num),
            checksum: d.checksum,
            c_checksum: d.c_checksum,
            transitions_in: num(d.counters.transitions_in),
            transitions_out: num(d.counters.transitions_out),
            failed_transitions: num(d.counters.failed_transitions),
            integrity_checks: num(d.counters.integrity_checks),
            integrity_failures: num(d.counters.integrity_failures),
        })
    })
}

/// The node-polycall JSON of state `id` (the text its checksum covers).
#[napi]
pub fn sm_state_json(handle: u32, id: u32) -> Result<String, String> {
    with_machine(handle, |m| m.state_json(id))
}

/// node-polycall's snapshot of state `id`, as JSON text.
#[napi]
pub fn sm_state_snapshot(handle: u32, id: u32, now: f64) -> Result<String, String> {
    with_machine(handle, |m| m.state_snapshot(id, millis(now)))
}

/// Restores one state from its snapshot's JSON text; returns the state's id.
#[napi]
pub fn sm_restore_state(handle: u32, text: String) -> Result<u32, String> {
    with_machine(handle, |m| m.restore_state(&text))
}

/// Verifies state `id` against its stored checksum and, if given, `expected`.
#[napi]
pub fn sm_verify(handle: u32, id: u32, expected: Option<u32>) -> Result<u32, String> {
    with_machine(handle, |m| m.verify(id, expected))
}

/// Counts an integrity failure decided by a user hook.
#[napi]
pub fn sm_record_integrity_failure(handle: u32, id: u32) -> Result<(), String> {
    with_machine(handle, |m| m.record_integrity_failure(id))
}

/// The machine snapshot, as JSON text.
#[napi]
pub fn sm_snapshot(handle: u32, now: f64) -> Result<String, String> {
    with(handle, |e| e.machine.snapshot(millis(now)))
}

/// The compact machine snapshot (`polycall_core::state` `snapshot_bytes`).
///
/// The bytes are copied into a new Buffer, which costs less than handing the `Vec` over as an
/// external buffer (whose finaliser the garbage collector then has to run).
#[napi]
pub fn sm_snapshot_bytes(env: &Env, handle: u32, now: f64) -> Result<BufferSlice<'_>, String> {
    let bytes = with(handle, |e| e.machine.snapshot_bytes(millis(now)))?;
    BufferSlice::copy_from(env, bytes).map_err(|e| invalid(e.reason.clone()))
}

/// Restores a compact machine snapshot; returns the restored state names in id order, joined
/// by NUL characters into one string when none contains one and there is at least one (one JS
/// string costs far less to create than one per state), else as a list.
#[napi]
pub fn sm_restore_bytes(handle: u32, bytes: &[u8]) -> Result<Either<String, Vec<String>>, String> {
    with_machine(handle, |m| {
        m.restore_bytes(bytes)?;
        if m.is_empty() || m.names().any(|n| n.contains('\0')) {
            return Ok(Either::B(m.names().map(str::to_owned).collect()));
        }
        let mut joined = String::with_capacity(m.names().map(|n| n.len() + 1).sum());
        for (i, n) in m.names().enumerate() {
            if i > 0 {
                joined.push('\0');
            }
            joined.push_str(n);
        }
        Ok(Either::A(joined))
    })
}

/// Restores a machine snapshot from its JSON text; returns `'polycall'` or `'node-polycall'`.
/// `legacy` also accepts node-polycall's layout.
#[napi]
pub fn sm_restore(handle: u32, text: String, legacy: bool) -> Result<String, String> {
    let format = with_machine(handle, |m| m.restore(&text, RestoreOptions { legacy }))?;
    Ok(match format {
        SnapshotFormat::Polycall => "polycall",
        SnapshotFormat::NodePolycall => "node-polycall",
    }
    .to_owned())
}

/// State names in id order.
#[napi]
pub fn sm_names(handle: u32) -> Result<Vec<String>, String> {
    with(handle, |e| e.machine.names().map(str::to_owned).collect())
}

/// Every transition as a flat list of `from, to` id pairs.
#[napi]
pub fn sm_transitions(handle: u32) -> Result<Uint32Array, String> {
    with(handle, |e| {
        Uint32Array::new(
            e.machine
                .transitions()
                .flat_map(|(from, to)| [from, to])
                .collect(),
        )
    })
}

/// History as a flat list of `from, to, timestamp` triples, oldest first.
#[napi]
pub fn sm_history(handle: u32) -> Result<Vec<f64>, String> {
    with(handle, |e| {
        e.machine
            .history()
            .flat_map(|h| [f64::from(h.from), f64::from(h.to), num(h.timestamp)])
            .collect()
    })
}

/// The C library's state checksum for the NULL-action LP64 layout (docs/protocol.md §9.1).
#[napi]
pub fn c_state_checksum(name: String, is_final: bool, id: u32) -> u32 {
    state::c_state_checksum(&name, is_final, id)
}

/// node-polycall's state checksum of a JSON text (docs/protocol.md §9.2).
#[napi]
pub fn node_state_checksum(json: String) -> u32 {
    state::node_state_checksum(&json)
}

/// node-polycall's default endpoint of a state name.
#[napi]
pub fn state_endpoint(name: String) -> String {
    state::endpoint_for(&name)
}

/// The session machine's tables (docs/protocol.md §6): 6 edge masks (`1 << state`), then 6 server
/// and 6 client accepted-frame masks (`1 << type`), each indexed by state.
#[napi]
pub fn session_tables() -> Vec<u32> {
    use state::session::{CLIENT_ACCEPTS, EDGES, SERVER_ACCEPTS};
    EDGES
        .iter()
        .chain(&SERVER_ACCEPTS)
        .chain(&CLIENT_ACCEPTS)
        .map(|m| u32::from(*m))
        .collect()
}
