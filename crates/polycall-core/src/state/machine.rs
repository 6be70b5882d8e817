//! The user state machine (docs/protocol.md §9.2, node-polycall semantics, with the §9.1 C limits
//! and status codes).
//!
//! Kept from node-polycall: transitions keyed by `from -> to`; the check order (missing
//! transition, then self-transition, then locks); strict lock and unlock; history of
//! `{from, to, timestamp}` capped at 100 by default (0 also means 100); the per-state metadata
//! map seeded with `createdAt`, `version` 1 and `lastModified`, where setting metadata bumps
//! `version` and `lastModified` and locking records `lockedAt` without bumping; the state
//! checksum over the state's JSON.
//!
//! Changed on purpose: a transition fires only from its own source state (C fires any named
//! transition from anywhere), a final state cannot be left (C lets it), capacity limits are
//! configuration (defaulting to C's 32 states, 64 transitions and 31-byte names) and exceeding
//! one is an error instead of a silent cut, unlocking removes `lockedAt` (so lock then unlock
//! gives back the same checksum), and the diagnostics counters count. The metadata object is
//! written in JavaScript's property order (array-index keys such as `"7"` first), the order a
//! parsed JavaScript object has, so a snapshot keeps its checksums through `JSON.parse` and
//! `JSON.stringify`; other keys keep node-polycall's insertion order.
//!
//! Time comes from the caller (`now`, milliseconds since the Unix epoch): the core reads no
//! clock, which keeps it deterministic under test.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use super::checksum::{c_state_checksum, endpoint_for, node_state_checksum};
use super::json::{self, write_str, write_u64};
use crate::error::{Error, Result};

/// Index of a state in its machine, in the order states were added.
pub type StateId = u32;

/// Default state limit: the C library's 32.
pub const DEFAULT_MAX_STATES: usize = 32;
/// Default transition limit: the C library's 64.
pub const DEFAULT_MAX_TRANSITIONS: usize = 64;
/// Default name limit in UTF-8 bytes: the C library's 32-byte field minus its NUL.
pub const DEFAULT_MAX_NAME_BYTES: usize = 31;
/// Default history length, node-polycall's 100.
pub const DEFAULT_MAX_HISTORY: usize = 100;

/// Metadata keys the machine maintains itself.
pub const RESERVED_METADATA_KEYS: [&str; 4] = ["createdAt", "version", "lastModified", "lockedAt"];

/// Limits and switches of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Most states the machine holds.
    pub max_states: usize,
    /// Most transitions the machine holds.
    pub max_transitions: usize,
    /// Longest state name, in UTF-8 bytes.
    pub max_name_bytes: usize,
    /// History entries kept (oldest dropped first); 0 means the default, 100.
    pub max_history: usize,
    /// Whether a transition from a state to itself may fire.
    pub allow_self_transitions: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_states: DEFAULT_MAX_STATES,
            max_transitions: DEFAULT_MAX_TRANSITIONS,
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
            max_history: DEFAULT_MAX_HISTORY,
            allow_self_transitions: false,
        }
    }
}

/// How a state is added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateOptions {
    /// The endpoint; `None` derives node-polycall's default from the name.
    pub endpoint: Option<String>,
    /// A final state cannot be left and may have no outgoing transitions.
    pub is_final: bool,
    /// A deferred state does not become current when the machine has none yet.
    pub deferred: bool,
    /// Extra metadata, `(key, JSON text of the value)`, stored after the seeded keys without
    /// bumping the version. Keys must not be [`RESERVED_METADATA_KEYS`].
    pub metadata: Vec<(String, String)>,
}

/// A metadata value: an integer the machine maintains, or the JSON text of a user value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MetaValue {
    Int(u64),
    Raw(String),
}

/// Per-state counters reported by [`StateMachine::diagnostics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Transitions that entered the state.
    pub transitions_in: u64,
    /// Transitions that left the state.
    pub transitions_out: u64,
    /// Transitions from the state that were refused or failed.
    pub failed_transitions: u64,
    /// Integrity checks run on the state.
    pub integrity_checks: u64,
    /// Integrity checks that failed.
    pub integrity_failures: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StateRecord {
    pub name: String,
    pub endpoint: String,
    pub is_final: bool,
    pub locked: bool,
    pub metadata: Vec<(MetaKey, MetaValue)>,
    /// Outgoing transitions, in the order they were added.
    pub targets: Vec<StateId>,
    /// The node-polycall checksum as of the last change made through the machine.
    pub checksum: u32,
    pub counters: Counters,
}

impl StateRecord {
    pub(super) fn int(&self, key: &str) -> Option<u64> {
        self.metadata.iter().find_map(|(k, v)| match v {
            MetaValue::Int(n) if k == key => Some(*n),
            _ => None,
        })
    }

    pub(super) fn set_meta(&mut self, key: &str, value: MetaValue) {
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.metadata.push((meta_key(key), value));
        }
    }
}

/// A metadata key: the machine's own keys are borrowed, so a state costs no allocation for them.
pub(super) type MetaKey = Cow<'static, str>;

/// `key` as a [`MetaKey`], borrowed when it is one of [`RESERVED_METADATA_KEYS`].
pub(super) fn meta_key(key: &str) -> MetaKey {
    RESERVED_METADATA_KEYS
        .iter()
        .find(|k| **k == key)
        .map_or_else(|| MetaKey::Owned(key.to_owned()), |k| MetaKey::Borrowed(k))
}

/// One completed transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The state left.
    pub from: StateId,
    /// The state entered.
    pub to: StateId,
    /// When, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// What [`StateMachine::diagnostics`] reports about one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    /// The state's id.
    pub id: StateId,
    /// The metadata `version`: 1 at creation, bumped by each metadata change.
    pub version: u64,
    /// Metadata `createdAt`.
    pub created_at: u64,
    /// Metadata `lastModified`.
    pub last_modified: u64,
    /// Metadata `lockedAt`, while locked.
    pub locked_at: Option<u64>,
    /// Whether the state is locked.
    pub locked: bool,
    /// Whether the state is final.
    pub is_final: bool,
    /// The stored node-polycall checksum.
    pub checksum: u32,
    /// The C-compatible checksum (NULL-action LP64 layout, id = this state's id).
    pub c_checksum: u32,
    /// The counters.
    pub counters: Counters,
}

/// A state machine: states, the transition table, the current state, history, locks,
/// metadata and integrity checksums. It decides whether a transition may happen and records
/// the outcome; guards and hooks belong to the caller, which asks [`StateMachine::precheck`]
/// before running them and [`StateMachine::transition`] to commit.
#[derive(Debug, Clone)]
pub struct StateMachine {
    pub(super) config: Config,
    pub(super) states: Vec<StateRecord>,
    pub(super) index: HashMap<String, StateId>,
    pub(super) transition_count: usize,
    pub(super) current: Option<StateId>,
    pub(super) history: VecDeque<HistoryEntry>,
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

fn quoted(name: Option<&str>) -> String {
    name.map_or_else(|| "(none)".to_owned(), |n| format!("{n:?}"))
}

impl StateMachine {
    /// An empty machine. A `max_history` of 0 is taken as the default, 100.
    pub fn new(mut config: Config) -> Self {
        if config.max_history == 0 {
            config.max_history = DEFAULT_MAX_HISTORY;
        }
        Self {
            config,
            states: Vec::new(),
            index: HashMap::new(),
            transition_count: 0,
            current: None,
            history: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of states.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// True when the machine has no state.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The id of the state called `name`.
    pub fn id(&self, name: &str) -> Option<StateId> {
        self.index.get(name).copied()
    }

    /// The name of state `id`.
    pub fn name(&self, id: StateId) -> Option<&str> {
        self.states.get(id as usize).map(|s| s.name.as_str())
    }

    /// State names in id order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.states.iter().map(|s| s.name.as_str())
    }

    /// The current state, `None` until a non-deferred state is added.
    pub fn current(&self) -> Option<StateId> {
        self.current
    }

    /// The endpoint of state `id`.
    pub fn endpoint(&self, id: StateId) -> Option<&str> {
        self.states.get(id as usize).map(|s| s.endpoint.as_str())
    }

    /// Whether state `id` is locked.
    pub fn is_locked(&self, id: StateId) -> Option<bool> {
        self.states.get(id as usize).map(|s| s.locked)
    }

    /// Whether state `id` is final.
    pub fn is_final(&self, id: StateId) -> Option<bool> {
        self.states.get(id as usize).map(|s| s.is_final)
    }

    /// Outgoing transitions of state `id`, in the order they were added.
    pub fn targets(&self, id: StateId) -> Option<&[StateId]> {
        self.states.get(id as usize).map(|s| s.targets.as_slice())
    }

    /// Every transition as `(from, to)`, grouped by source state in id order.
    pub fn transitions(&self) -> impl Iterator<Item = (StateId, StateId)> + '_ {
        (0u32..)
            .zip(&self.states)
            .flat_map(|(from, s)| s.targets.iter().map(move |to| (from, *to)))
    }

    /// Number of transitions.
    pub fn transition_count(&self) -> usize {
        self.transition_count
    }

    /// Completed transitions, oldest first (at most `max_history`).
    pub fn history(&self) -> impl ExactSizeIterator<Item = &HistoryEntry> {
        self.history.iter()
    }

    pub(super) fn record(&self, id: StateId) -> Result<&StateRecord> {
        self.states
            .get(id as usize)
            .ok_or_else(|| Error::InvalidState(format!("#{id}")))
    }

    fn record_mut(&mut self, id: StateId) -> Result<&mut StateRecord> {
        self.states
            .get_mut(id as usize)
            .ok_or_else(|| Error::InvalidState(format!("#{id}")))
    }

    /// Checks a name against the configured limit (non-empty, at most `max_name_bytes`).
    pub(super) fn check_name(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "a state name must be a non-empty string".to_owned(),
            ));
        }
        if name.len() > self.config.max_name_bytes {
            return Err(Error::StateNameTooLong {
                length: name.len(),
                limit: self.config.max_name_bytes,
            });
        }
        Ok(())
    }

    /// Adds a state. The first non-deferred state added becomes current.
    ///
    /// # Errors
    /// `InvalidArgument` for an empty name or bad metadata, `StateNameTooLong`,
    /// `DuplicateState`, `MaxStatesReached`.
    pub fn add_state(&mut self, name: &str, options: StateOptions, now: u64) -> Result<StateId> {
        self.check_name(name)?;
        if self.index.contains_key(name) {
            return Err(Error::DuplicateState(name.to_owned()));
        }
        if self.states.len() >= self.config.max_states {
            return Err(Error::MaxStatesReached {
                limit: self.config.max_states,
            });
        }
        let mut metadata = vec![
            (MetaKey::Borrowed("createdAt"), MetaValue::Int(now)),
            (MetaKey::Borrowed("version"), MetaValue::Int(1)),
            (MetaKey::Borrowed("lastModified"), MetaValue::Int(now)),
        ];
        for (key, raw) in options.metadata {
            let value = user_value(&key, &raw)?;
            if let Some(slot) = metadata.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
            } else {
                metadata.push((MetaKey::Owned(key), value));
            }
        }
        let id = StateId::try_from(self.states.len()).map_err(|_| Error::MaxStatesReached {
            limit: self.config.max_states,
        })?;
        let mut record = StateRecord {
            endpoint: options.endpoint.unwrap_or_else(|| endpoint_for(name)),
            name: name.to_owned(),
            is_final: options.is_final,
            locked: false,
            metadata,
            targets: Vec::new(),
            checksum: 0,
            counters: Counters::default(),
        };
        record.checksum = node_state_checksum(&self.json_of(&record));
        self.states.push(record);
        self.index.insert(name.to_owned(), id);
        if self.current.is_none() && !options.deferred {
            self.current = Some(id);
        }
        Ok(id)
    }

    /// Adds the transition `from -> to`.
    ///
    /// # Errors
    /// `InvalidState` for an unknown id, `FinalState` when `from` is final,
    /// `DuplicateTransition`, `MaxTransitionsReached`.
    pub fn add_transition(&mut self, from: StateId, to: StateId) -> Result<()> {
        let target = self.record(to)?.name.clone();
        let source = self.record(from)?;
        if source.is_final {
            return Err(Error::FinalState(source.name.clone()));
        }
        if source.targets.contains(&to) {
            return Err(Error::DuplicateTransition {
                from: source.name.clone(),
                to: target,
            });
        }
        if self.transition_count >= self.config.max_transitions {
            return Err(Error::MaxTransitionsReached {
                limit: self.config.max_transitions,
            });
        }
        self.record_mut(from)?.targets.push(to);
        self.transition_count += 1;
        self.refresh(from);
        Ok(())
    }

    /// Whether `from -> to` exists.
    pub fn has_transition(&self, from: StateId, to: StateId) -> bool {
        self.targets(from).is_some_and(|t| t.contains(&to))
    }

    /// Whether a transition from the current state to `to` may fire now, without recording
    /// anything. Returns the current state.
    ///
    /// Order (node-polycall's, extended): no current state or a missing transition
    /// (`InvalidTransition`; a final source gives `FinalState`), self-transition while not
    /// allowed (`SelfTransition`), source or target locked (`StateLocked`).
    ///
    /// # Errors
    /// As listed.
    pub fn check(&self, to: StateId) -> Result<StateId> {
        let target = self.states.get(to as usize);
        let Some(from) = self.current else {
            return Err(Error::InvalidTransition {
                from: quoted(None),
                to: quoted(target.map(|t| t.name.as_str())),
            });
        };
        let source = self.record(from)?;
        if source.is_final {
            return Err(Error::FinalState(source.name.clone()));
        }
        let (Some(target), true) = (target, source.targets.contains(&to)) else {
            return Err(Error::InvalidTransition {
                from: quoted(Some(&source.name)),
                to: quoted(target.map(|t| t.name.as_str())),
            });
        };
        if from == to && !self.config.allow_self_transitions {
            return Err(Error::SelfTransition(source.name.clone()));
        }
        if source.locked {
            return Err(Error::StateLocked(source.name.clone()));
        }
        if target.locked {
            return Err(Error::StateLocked(target.name.clone()));
        }
        Ok(from)
    }

    /// [`StateMachine::check`], counting a refusal as a failed transition of the current state.
    /// Callers with guards run this first and [`StateMachine::transition`] after the guard.
    ///
    /// # Errors
    /// As for `check`.
    pub fn precheck(&mut self, to: StateId) -> Result<StateId> {
        self.check(to).inspect_err(|_| self.record_failure())
    }

    /// Counts a failed transition of the current state (a guard said no, a hook threw, the
    /// caller gave up).
    pub fn record_failure(&mut self) {
        if let Some(state) = self.current.and_then(|c| self.states.get_mut(c as usize)) {
            state.counters.failed_transitions += 1;
        }
    }

    /// Fires the transition from the current state to `to`: checks it (a refusal counts as a
    /// failure), makes `to` current, updates the counters and appends to the history.
    /// Returns the state left.
    ///
    /// # Errors
    /// As for [`StateMachine::check`].
    pub fn transition(&mut self, to: StateId, now: u64) -> Result<StateId> {
        let from = self.precheck(to)?;
        if let Some(s) = self.states.get_mut(from as usize) {
            s.counters.transitions_out += 1;
        }
        if let Some(s) = self.states.get_mut(to as usize) {
            s.counters.transitions_in += 1;
        }
        self.current = Some(to);
        if self.history.len() >= self.config.max_history {
            self.history.pop_front();
        }
        self.history.push_back(HistoryEntry {
            from,
            to,
            timestamp: now,
        });
        Ok(from)
    }

    /// Locks state `id`, recording `lockedAt` (the version is not bumped). A locked state can
    /// be neither left nor entered.
    ///
    /// # Errors
    /// `InvalidState`; `StateLocked` when it is locked already (locking is strict).
    pub fn lock(&mut self, id: StateId, now: u64) -> Result<()> {
        let state = self.record_mut(id)?;
        if state.locked {
            return Err(Error::StateLocked(state.name.clone()));
        }
        state.locked = true;
        state.set_meta("lockedAt", MetaValue::Int(now));
        self.refresh(id);
        Ok(())
    }

    /// Unlocks state `id` and removes `lockedAt`.
    ///
    /// # Errors
    /// `InvalidState`; `StateNotLocked` when it is not locked (unlocking is strict).
    pub fn unlock(&mut self, id: StateId) -> Result<()> {
        let state = self.record_mut(id)?;
        if !state.locked {
            return Err(Error::StateNotLocked(state.name.clone()));
        }
        state.locked = false;
        state.metadata.retain(|(k, _)| k != "lockedAt");
        self.refresh(id);
        Ok(())
    }

    /// Sets a metadata entry (`raw` is the value's JSON text), keeping an existing key's
    /// position, and bumps `version` and `lastModified`.
    ///
    /// # Errors
    /// `InvalidState`; `InvalidArgument` for a reserved key or text that is not one JSON value.
    pub fn set_metadata(&mut self, id: StateId, key: &str, raw: &str, now: u64) -> Result<()> {
        let value = user_value(key, raw)?;
        let state = self.record_mut(id)?;
        state.set_meta(key, value);
        let version = state.int("version").unwrap_or(0).saturating_add(1);
        state.set_meta("version", MetaValue::Int(version));
        state.set_meta("lastModified", MetaValue::Int(now));
        self.refresh(id);
        Ok(())
    }

    /// The state's metadata as a compact JSON object, keys in JavaScript's property order
    /// (array-index keys first, then insertion order), as in [`StateMachine::state_json`].
    ///
    /// # Errors
    /// `InvalidState`.
    pub fn metadata_json(&self, id: StateId) -> Result<String> {
        let mut out = String::new();
        write_metadata(&mut out, &self.record(id)?.metadata);
        Ok(out)
    }

    /// The state's metadata as a compact JSON array of `[key, value]` pairs, in insertion order
    /// (a JSON object would lose the order of integer-like keys once parsed in JavaScript).
    ///
    /// # Errors
    /// `InvalidState`.
    pub fn metadata_entries_json(&self, id: StateId) -> Result<String> {
        let mut out = String::from("[");
        for (i, (k, v)) in self.record(id)?.metadata.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('[');
            write_str(&mut out, k);
            out.push(',');
            write_value(&mut out, v);
            out.push(']');
        }
        out.push(']');
        Ok(out)
    }

    /// The state's node-polycall JSON, the text its checksum covers:
    /// `{"name","isLocked","endpoint","metadata","transitions"}` in that order, compact.
    ///
    /// # Errors
    /// `InvalidState`.
    pub fn state_json(&self, id: StateId) -> Result<String> {
        Ok(self.json_of(self.record(id)?))
    }

    pub(super) fn json_of(&self, s: &StateRecord) -> String {
        let mut out = String::with_capacity(128);
        write_state_json(&mut out, s, &self.states);
        out
    }

    /// Recomputes the stored checksum of state `id` after a change made through the machine.
    pub(super) fn refresh(&mut self, id: StateId) {
        if let Some(s) = self.states.get(id as usize) {
            let sum = node_state_checksum(&self.json_of(s));
            if let Some(s) = self.states.get_mut(id as usize) {
                s.checksum = sum;
            }
        }
    }

    /// [`StateMachine::refresh`] for every state.
    pub(super) fn refresh_all(&mut self) {
        let mut scratch = String::with_capacity(256);
        let sums: Vec<u32> = self
            .states
            .iter()
            .map(|s| state_checksum(&mut scratch, s, &self.states))
            .collect();
        for (s, sum) in self.states.iter_mut().zip(sums) {
            s.checksum = sum;
        }
    }

    /// The stored node-polycall checksum of state `id`.
    pub fn checksum(&self, id: StateId) -> Option<u32> {
        self.states.get(id as usize).map(|s| s.checksum)
    }

    /// Verifies state `id`: recomputes its checksum and compares it with the stored one and,
    /// when given, with `expected` (for example the checksum of an earlier snapshot). Counts
    /// the check, and a failure. Returns the checksum.
    ///
    /// # Errors
    /// `InvalidState`; `IntegrityCheckFailed`.
    pub fn verify(&mut self, id: StateId, expected: Option<u32>) -> Result<u32> {
        let actual = node_state_checksum(&self.json_of(self.record(id)?));
        let state = self.record_mut(id)?;
        state.counters.integrity_checks += 1;
        let wanted = expected.unwrap_or(state.checksum);
        if actual != state.checksum || actual != wanted {
            state.counters.integrity_failures += 1;
            return Err(Error::IntegrityCheckFailed {
                expected: wanted,
                actual,
            });
        }
        Ok(actual)
    }

    /// Counts a failed integrity check decided outside the core (a user integrity hook).
    ///
    /// # Errors
    /// `InvalidState`.
    pub fn record_integrity_failure(&mut self, id: StateId) -> Result<()> {
        self.record_mut(id)?.counters.integrity_failures += 1;
        Ok(())
    }

    /// Version, times, lock state, checksums and counters of state `id`.
    ///
    /// # Errors
    /// `InvalidState`.
    pub fn diagnostics(&self, id: StateId) -> Result<Diagnostics> {
        let s = self.record(id)?;
        Ok(Diagnostics {
            id,
            version: s.int("version").unwrap_or(0),
            created_at: s.int("createdAt").unwrap_or(0),
            last_modified: s.int("lastModified").unwrap_or(0),
            locked_at: s.int("lockedAt"),
            locked: s.locked,
            is_final: s.is_final,
            checksum: s.checksum,
            c_checksum: c_state_checksum(&s.name, s.is_final, id),
            counters: s.counters,
        })
    }
}

/// A user metadata value: the key must not be reserved and `raw` must be one JSON value.
fn user_value(key: &str, raw: &str) -> Result<MetaValue> {
    if RESERVED_METADATA_KEYS.contains(&key) {
        return Err(Error::InvalidArgument(format!(
            "metadata key {key:?} is maintained by the machine"
        )));
    }
    let node = json::parse(raw)
        .map_err(|e| Error::InvalidArgument(format!("metadata {key:?} is not JSON: {e}")))?;
    Ok(MetaValue::Raw(node.raw.to_owned()))
}

/// The key as a JavaScript array index (a canonical decimal below 2^32 - 1), if it is one.
fn array_index(key: &str) -> Option<u32> {
    let canonical = key == "0"
        || (!key.is_empty() && !key.starts_with('0') && key.bytes().all(|b| b.is_ascii_digit()));
    if !canonical {
        return None;
    }
    key.parse::<u32>().ok().filter(|n| *n != u32::MAX)
}

/// Appends the state's node-polycall JSON (the text its checksum covers) to `out`; target ids
/// are named from `states`, the machine the state belongs to.
pub(super) fn write_state_json(out: &mut String, s: &StateRecord, states: &[StateRecord]) {
    out.push_str("{\"name\":");
    write_str(out, &s.name);
    out.push_str(",\"isLocked\":");
    out.push_str(if s.locked { "true" } else { "false" });
    out.push_str(",\"endpoint\":");
    write_str(out, &s.endpoint);
    out.push_str(",\"metadata\":");
    write_metadata(out, &s.metadata);
    out.push_str(",\"transitions\":[");
    for (i, t) in s.targets.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, states.get(*t as usize).map_or("", |t| t.name.as_str()));
    }
    out.push_str("]}");
}

/// The node-polycall checksum of a state's JSON, computed into `scratch` (cleared first).
pub(super) fn state_checksum(scratch: &mut String, s: &StateRecord, states: &[StateRecord]) -> u32 {
    scratch.clear();
    write_state_json(scratch, s, states);
    node_state_checksum(scratch)
}

/// Writes the metadata object in JavaScript's property order: array-index keys first, in
/// ascending order, then the other keys in insertion order. That is the order `JSON.parse`
/// gives the object back in, so a snapshot stays byte-identical (and its checksums valid) when
/// it travels as a parsed object and is serialised again.
pub(super) fn write_metadata(out: &mut String, metadata: &[(MetaKey, MetaValue)]) {
    let entry = |out: &mut String, i: usize, (k, v): &(MetaKey, MetaValue)| {
        if i > 0 {
            out.push(',');
        }
        write_str(out, k);
        out.push(':');
        write_value(out, v);
    };
    out.push('{');
    if metadata.iter().any(|e| array_index(&e.0).is_some()) {
        let mut indexed: Vec<(u32, &(MetaKey, MetaValue))> = metadata
            .iter()
            .filter_map(|e| array_index(&e.0).map(|i| (i, e)))
            .collect();
        indexed.sort_unstable_by_key(|(i, _)| *i);
        let named = metadata.iter().filter(|e| array_index(&e.0).is_none());
        for (i, e) in indexed.into_iter().map(|(_, e)| e).chain(named).enumerate() {
            entry(out, i, e);
        }
    } else {
        for (i, e) in metadata.iter().enumerate() {
            entry(out, i, e);
        }
    }
    out.push('}');
}

fn write_value(out: &mut String, v: &MetaValue) {
    match v {
        MetaValue::Int(n) => write_u64(out, *n),
        MetaValue::Raw(raw) => out.push_str(raw),
    }
}

/// Parses a JSON object of initial metadata into `(key, JSON text)` pairs for
/// [`StateOptions::metadata`].
///
/// # Errors
/// `InvalidArgument` when `text` is not a JSON object.
pub fn parse_metadata_object(text: &str) -> Result<Vec<(String, String)>> {
    let node = json::parse(text).map_err(|e| Error::InvalidArgument(format!("metadata: {e}")))?;
    let members = node
        .members()
        .ok_or_else(|| Error::InvalidArgument("metadata must be an object".to_owned()))?;
    Ok(members
        .iter()
        .map(|m| (m.key.as_str().to_owned(), m.node.raw.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn demo() -> (StateMachine, [StateId; 5]) {
        let mut m = StateMachine::default();
        let mut add = |name: &str, is_final: bool| {
            m.add_state(
                name,
                StateOptions {
                    is_final,
                    ..StateOptions::default()
                },
                T0,
            )
            .unwrap()
        };
        let ids = [
            add("INIT", false),
            add("READY", false),
            add("RUNNING", false),
            add("PAUSED", false),
            add("ERROR", true),
        ];
        let [init, ready, running, paused, error] = ids;
        for (f, t) in [
            (init, ready),
            (ready, running),
            (running, paused),
            (paused, running),
            (running, error),
        ] {
            m.add_transition(f, t).unwrap();
        }
        (m, ids)
    }

    fn deferred() -> StateOptions {
        StateOptions {
            deferred: true,
            ..StateOptions::default()
        }
    }

    #[test]
    fn first_state_becomes_current_unless_deferred() {
        let mut m = StateMachine::default();
        let a = m.add_state("A", deferred(), T0).unwrap();
        assert_eq!(m.current(), None);
        let b = m.add_state("B", StateOptions::default(), T0).unwrap();
        assert_eq!(m.current(), Some(b));
        m.add_state("C", StateOptions::default(), T0).unwrap();
        assert_eq!(m.current(), Some(b));
        assert_eq!((a, b), (0, 1));
    }

    #[test]
    fn transitions_follow_the_table_from_the_current_state_only() {
        let (mut m, [init, ready, running, paused, _]) = demo();
        assert_eq!(m.transition(ready, T0 + 1).unwrap(), init);
        assert_eq!(m.current(), Some(ready));
        // READY -> PAUSED does not exist, although RUNNING -> PAUSED does (C would fire it).
        let e = m.transition(paused, T0 + 2).unwrap_err();
        assert_eq!(e.code(), "INVALID_TRANSITION");
        assert_eq!(m.current(), Some(ready));
        m.transition(running, T0 + 3).unwrap();
        m.transition(paused, T0 + 4).unwrap();
        m.transition(running, T0 + 5).unwrap();
        let h: Vec<_> = m.history().map(|e| (e.from, e.to, e.timestamp)).collect();
        assert_eq!(
            h,
            [
                (init, ready, T0 + 1),
                (ready, running, T0 + 3),
                (running, paused, T0 + 4),
                (paused, running, T0 + 5)
            ]
        );
    }

    #[test]
    fn unknown_target_is_a_missing_transition() {
        let (mut m, _) = demo();
        let e = m.transition(99, T0).unwrap_err();
        assert_eq!(e.code(), "INVALID_TRANSITION");
        assert_eq!(e.to_string(), "no transition from \"INIT\" to (none)");
    }

    #[test]
    fn final_state_cannot_be_left_or_given_transitions() {
        let (mut m, [init, ready, running, _, error]) = demo();
        for to in [ready, running, error] {
            m.transition(to, T0).unwrap();
        }
        assert_eq!(m.transition(init, T0).unwrap_err().code(), "FINAL_STATE");
        assert_eq!(
            m.add_transition(error, init).unwrap_err().code(),
            "FINAL_STATE"
        );
        assert_eq!(m.current(), Some(error));
    }

    #[test]
    fn missing_transition_is_checked_before_self_transition() {
        let mut m = StateMachine::default();
        let a = m.add_state("A", StateOptions::default(), T0).unwrap();
        assert_eq!(
            m.transition(a, T0).unwrap_err().code(),
            "INVALID_TRANSITION"
        );
        m.add_transition(a, a).unwrap();
        assert_eq!(m.transition(a, T0).unwrap_err().code(), "SELF_TRANSITION");
        let mut allowed = StateMachine::new(Config {
            allow_self_transitions: true,
            ..Config::default()
        });
        let a = allowed.add_state("A", StateOptions::default(), T0).unwrap();
        allowed.add_transition(a, a).unwrap();
        assert_eq!(allowed.transition(a, T0).unwrap(), a);
        assert_eq!(allowed.history().len(), 1);
    }

    #[test]
    fn locked_source_or_target_refuses() {
        let (mut m, [init, ready, ..]) = demo();
        m.lock(ready, T0).unwrap();
        let e = m.transition(ready, T0).unwrap_err();
        assert_eq!((e.code(), e.errno()), ("STATE_LOCKED", Some(8)));
        m.unlock(ready).unwrap();
        m.lock(init, T0).unwrap();
        assert_eq!(m.transition(ready, T0).unwrap_err().code(), "STATE_LOCKED");
        m.unlock(init).unwrap();
        m.transition(ready, T0).unwrap();
    }

    #[test]
    fn lock_and_unlock_are_strict() {
        let (mut m, [init, ..]) = demo();
        assert_eq!(m.unlock(init).unwrap_err().code(), "STATE_NOT_LOCKED");
        m.lock(init, T0 + 9).unwrap();
        assert_eq!(m.lock(init, T0).unwrap_err().code(), "STATE_LOCKED");
        let d = m.diagnostics(init).unwrap();
        assert_eq!((d.locked, d.locked_at, d.version), (true, Some(T0 + 9), 1));
        m.unlock(init).unwrap();
        assert_eq!(m.diagnostics(init).unwrap().locked_at, None);
        assert_eq!(m.lock(99, T0).unwrap_err().code(), "INVALID_STATE");
    }

    #[test]
    fn lock_then_unlock_restores_the_checksum() {
        let (mut m, [init, ..]) = demo();
        let before = m.checksum(init).unwrap();
        m.lock(init, T0 + 5).unwrap();
        assert_ne!(m.checksum(init).unwrap(), before);
        m.unlock(init).unwrap();
        assert_eq!(m.checksum(init).unwrap(), before);
    }

    #[test]
    fn history_is_capped() {
        let mut m = StateMachine::new(Config {
            max_history: 3,
            ..Config::default()
        });
        let a = m.add_state("A", StateOptions::default(), T0).unwrap();
        let b = m.add_state("B", StateOptions::default(), T0).unwrap();
        m.add_transition(a, b).unwrap();
        m.add_transition(b, a).unwrap();
        for i in 0..10 {
            m.transition(if i % 2 == 0 { b } else { a }, i).unwrap();
        }
        let stamps: Vec<_> = m.history().map(|e| e.timestamp).collect();
        assert_eq!(stamps, [7, 8, 9]);
        assert_eq!(
            StateMachine::new(Config {
                max_history: 0,
                ..Config::default()
            })
            .config()
            .max_history,
            100
        );
    }

    #[test]
    fn limits_are_configuration() {
        let mut m = StateMachine::default();
        for i in 0..32 {
            m.add_state(&format!("S{i}"), StateOptions::default(), T0)
                .unwrap();
        }
        let e = m.add_state("S32", StateOptions::default(), T0).unwrap_err();
        assert_eq!((e.code(), e.errno()), ("MAX_STATES_REACHED", Some(3)));
        let mut n = 0;
        'outer: for f in 0..32 {
            for t in 0..32 {
                if n == 64 {
                    break 'outer;
                }
                m.add_transition(f, t).unwrap();
                n += 1;
            }
        }
        let e = m.add_transition(31, 0).unwrap_err();
        assert_eq!((e.code(), e.errno()), ("MAX_TRANSITIONS_REACHED", Some(4)));
        let e = m
            .add_state(&"n".repeat(32), StateOptions::default(), T0)
            .unwrap_err();
        assert_eq!(e.code(), "STATE_NAME_TOO_LONG");

        let mut big = StateMachine::new(Config {
            max_states: 100,
            max_transitions: 200,
            max_name_bytes: 64,
            ..Config::default()
        });
        for i in 0..100 {
            big.add_state(&format!("{i:0>40}"), StateOptions::default(), T0)
                .unwrap();
        }
        for i in 0..100 {
            big.add_transition(i, (i + 1) % 100).unwrap();
            big.add_transition(i, (i + 2) % 100).unwrap();
        }
        assert_eq!(big.transition_count(), 200);
    }

    #[test]
    fn adding_is_validated() {
        let (mut m, [init, ready, ..]) = demo();
        assert_eq!(
            m.add_state("", StateOptions::default(), T0)
                .unwrap_err()
                .code(),
            "INVALID_ARGUMENT"
        );
        assert_eq!(
            m.add_state("INIT", StateOptions::default(), T0)
                .unwrap_err()
                .code(),
            "DUPLICATE_STATE"
        );
        assert_eq!(
            m.add_transition(init, ready).unwrap_err().code(),
            "DUPLICATE_TRANSITION"
        );
        assert_eq!(
            m.add_transition(init, 77).unwrap_err().code(),
            "INVALID_STATE"
        );
    }

    #[test]
    fn metadata_bumps_version_and_keeps_order() {
        let mut m = StateMachine::default();
        let a = m
            .add_state(
                "a",
                StateOptions {
                    metadata: vec![("owner".into(), "\"ops\"".into())],
                    ..StateOptions::default()
                },
                T0,
            )
            .unwrap();
        assert_eq!(
            m.metadata_json(a).unwrap(),
            r#"{"createdAt":1700000000000,"version":1,"lastModified":1700000000000,"owner":"ops"}"#
        );
        m.set_metadata(a, "n", "[1, 2]", T0 + 7).unwrap();
        m.set_metadata(a, "owner", "null", T0 + 8).unwrap();
        assert_eq!(
            m.metadata_json(a).unwrap(),
            r#"{"createdAt":1700000000000,"version":3,"lastModified":1700000000008,"owner":null,"n":[1, 2]}"#
        );
        assert_eq!(
            m.set_metadata(a, "version", "9", T0).unwrap_err().code(),
            "INVALID_ARGUMENT"
        );
        assert_eq!(
            m.set_metadata(a, "x", "{", T0).unwrap_err().code(),
            "INVALID_ARGUMENT"
        );
        let d = m.diagnostics(a).unwrap();
        assert_eq!((d.version, d.created_at, d.last_modified), (3, T0, T0 + 8));
        m.set_metadata(a, "1", "true", T0 + 9).unwrap();
        assert!(
            m.metadata_entries_json(a)
                .unwrap()
                .ends_with(r#"["n",[1, 2]],["1",true]]"#)
        );
    }

    #[test]
    fn state_json_is_node_polycall_s_shape() {
        let mut m = StateMachine::default();
        let a = m
            .add_state("Ready State", StateOptions::default(), 1_700_000_000_000)
            .unwrap();
        let b = m.add_state("running", StateOptions::default(), T0).unwrap();
        m.add_transition(a, b).unwrap();
        assert_eq!(
            m.state_json(a).unwrap(),
            r#"{"name":"Ready State","isLocked":false,"endpoint":"/ready-state","metadata":{"createdAt":1700000000000,"version":1,"lastModified":1700000000000},"transitions":["running"]}"#
        );
        assert_eq!(
            m.checksum(a),
            Some(node_state_checksum(&m.state_json(a).unwrap()))
        );
    }

    #[test]
    fn verify_counts_checks_and_failures() {
        let (mut m, [init, ..]) = demo();
        let sum = m.verify(init, None).unwrap();
        assert_eq!(m.verify(init, Some(sum)).unwrap(), sum);
        let e = m.verify(init, Some(sum ^ 1)).unwrap_err();
        assert_eq!((e.code(), e.errno()), ("INTEGRITY_CHECK_FAILED", Some(7)));
        m.record_integrity_failure(init).unwrap();
        let c = m.diagnostics(init).unwrap().counters;
        assert_eq!((c.integrity_checks, c.integrity_failures), (3, 2));
    }

    #[test]
    fn counters_count() {
        let (mut m, [init, ready, running, ..]) = demo();
        m.transition(ready, T0).unwrap();
        m.transition(init, T0).unwrap_err();
        assert!(m.precheck(running).is_ok());
        m.record_failure();
        m.transition(running, T0).unwrap();
        let r = m.diagnostics(ready).unwrap().counters;
        assert_eq!(
            (r.transitions_in, r.transitions_out, r.failed_transitions),
            (1, 1, 2)
        );
        let i = m.diagnostics(init).unwrap();
        assert_eq!(i.counters.transitions_out, 1);
        assert_eq!(i.c_checksum, 0x494e_4954);
    }

    #[test]
    fn no_current_state_refuses() {
        let mut m = StateMachine::default();
        let a = m.add_state("A", deferred(), T0).unwrap();
        assert_eq!(
            m.transition(a, T0).unwrap_err().code(),
            "INVALID_TRANSITION"
        );
        m.record_failure();
    }

    #[test]
    fn metadata_object_parsing() {
        assert_eq!(
            parse_metadata_object(r#"{"a":1,"b":{"c":[true]}}"#).unwrap(),
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), r#"{"c":[true]}"#.to_owned())
            ]
        );
        assert!(parse_metadata_object("[1]").is_err());
    }
}
