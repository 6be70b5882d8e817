//! State and machine snapshots (docs/protocol.md §9.2), readable by node-polycall and from it.
//!
//! A **state snapshot** is node-polycall's `{"timestamp", "state", "checksum"}`: `state` is
//! the state's JSON ([`StateMachine::state_json`]) and `checksum` its
//! [`node_state_checksum`](super::node_state_checksum). A checksum of 0 marks a malformed
//! snapshot, as in node-polycall.
//!
//! A **machine snapshot** extends node-polycall's `{timestamp, currentState, states:[{name,
//! snapshot}], history}`, so node-polycall reads it, with what node-polycall loses:
//!
//! ```text
//! {"format":"polycall.state-machine/1","timestamp":T,"currentState":"READY",
//!  "states":[{"name":"INIT","snapshot":{"timestamp":T,"state":{..},"checksum":C},"final":false},..],
//!  "transitions":[{"from":"INIT","to":"READY"},..],
//!  "history":[{"from":"INIT","to":"READY","timestamp":T},..],
//!  "checksum":M}
//! ```
//!
//! `M` is the same hash over the object's text without its `checksum` member (`{` + the other
//! members, compact, in order + `}`), so a snapshot can be checked with nothing but
//! `JSON.stringify`. `transitions` is the table; each state's `transitions` list repeats its
//! outgoing part (node-polycall's layout), and the two must agree.
//!
//! Restore verifies everything before it changes anything: the machine checksum, every state
//! checksum, names, limits, references, and that the history is a walk that ends in the current
//! state (each entry starts where the one before ended, none leaves a final state). On any error
//! the machine is left as it was. Unlike node-polycall, restore rebuilds the transition table.
//!
//! A snapshot without `format`, `transitions` and `checksum` reads as node-polycall's layout,
//! which no machine checksum covers: deleting those three members from one of ours would
//! otherwise turn it into an unchecked snapshot. So it is refused unless the caller opts in with
//! [`RestoreOptions::legacy`]. Even then everything it carries is checked as far as it can be:
//! its states' checksums and references, the history walk, every history entry naming a
//! transition of the restored table (the states' own `transitions` lists, plus the live
//! transitions between states the snapshot also has), and, with no history, a current state that
//! is the first state (the one node-polycall makes current) or none. What it cannot show is that
//! a guard approved each step: only restore legacy snapshots from a source that is trusted.
//!
//! Restore replaces every live state, so it follows the C library's rule for a locked target
//! (PROTOCOL.md §8.4, `ERROR_STATE_LOCKED`): while any live state is locked it refuses with
//! `STATE_LOCKED` and changes nothing; the locks a snapshot carries come back with it.

use std::collections::{HashMap, VecDeque};

use super::checksum::{JavaHash, node_state_checksum};
use super::json::{self, Node, write_str, write_u64};
use super::machine::{
    Counters, HistoryEntry, MetaKey, MetaValue, RESERVED_METADATA_KEYS, StateId, StateMachine,
    StateRecord, meta_key, write_state_json,
};
use crate::error::{Error, Result};

/// The `format` value of a polycall machine snapshot.
pub const SNAPSHOT_FORMAT: &str = "polycall.state-machine/1";

/// Which layout a restored machine snapshot had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotFormat {
    /// polycall's layout, with the transition table and a machine checksum.
    Polycall,
    /// node-polycall's layout: per-state checksums only.
    NodePolycall,
}

/// Options of [`StateMachine::restore`]. The default is strict: only polycall's layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Also accept node-polycall's layout (no `format`, `transitions` or machine `checksum`),
    /// checked as far as it can be (module docs).
    pub legacy: bool,
}

/// A decoded snapshot, checked as far as it can be on its own.
pub(super) struct Restored {
    pub states: Vec<StateRecord>,
    pub index: HashMap<String, StateId>,
    pub transition_count: usize,
    pub current: Option<StateId>,
    pub history: VecDeque<HistoryEntry>,
    pub checksums: Checksums,
}

/// Whether the states' stored checksums are still to be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checksums {
    /// Computed from the restored records (the JSON layout, whose checksums cover the text as
    /// it was written, which may order metadata differently).
    Recompute,
    /// Already computed over the restored records and compared with the snapshot's.
    Verified,
}

pub(super) fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidSnapshot(reason.into())
}

/// A state parsed from its snapshot: the record (no targets yet) and its target names.
struct ParsedState {
    record: StateRecord,
    targets: Vec<String>,
}

fn parse_state_snapshot(node: &Node<'_>) -> Result<ParsedState> {
    let state = node
        .get("state")
        .ok_or_else(|| invalid("a state snapshot needs \"state\""))?;
    let expected = node
        .get("checksum")
        .and_then(Node::as_safe_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid("a state snapshot needs a u32 \"checksum\""))?;
    if expected == 0 {
        return Err(invalid("a state checksum of 0 marks a malformed snapshot"));
    }
    let actual = node_state_checksum(state.raw);
    if actual != expected {
        return Err(Error::IntegrityCheckFailed { expected, actual });
    }
    let field = |key: &str| {
        state
            .get(key)
            .ok_or_else(|| invalid(format!("a state needs {key:?}")))
    };
    let name = field("name")?
        .as_str()
        .ok_or_else(|| invalid("a state name must be a string"))?;
    let locked = field("isLocked")?
        .as_bool()
        .ok_or_else(|| invalid("\"isLocked\" must be a boolean"))?;
    let endpoint = field("endpoint")?
        .as_str()
        .ok_or_else(|| invalid("\"endpoint\" must be a string"))?;
    let meta_members = field("metadata")?
        .members()
        .ok_or_else(|| invalid("\"metadata\" must be an object"))?;
    let mut metadata: Vec<(MetaKey, MetaValue)> = Vec::with_capacity(meta_members.len());
    for m in meta_members {
        let key = m.key.as_str();
        if metadata.iter().any(|(k, _)| k == key) {
            return Err(invalid(format!("metadata key {key:?} repeats")));
        }
        let value = if RESERVED_METADATA_KEYS.contains(&key) {
            MetaValue::Int(m.node.as_safe_u64().ok_or_else(|| {
                invalid(format!(
                    "metadata {:?} must be a non-negative integer",
                    m.key
                ))
            })?)
        } else {
            MetaValue::Raw(m.node.raw.to_owned())
        };
        metadata.push((meta_key(key), value));
    }
    for key in ["createdAt", "version", "lastModified"] {
        if !metadata.iter().any(|(k, _)| k == key) {
            return Err(invalid(format!("metadata of {name:?} lacks {key:?}")));
        }
    }
    let targets = field("transitions")?
        .items()
        .ok_or_else(|| invalid("\"transitions\" must be an array"))?
        .iter()
        .map(|t| {
            t.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid("transition targets must be state names"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ParsedState {
        record: StateRecord {
            name: name.to_owned(),
            endpoint: endpoint.to_owned(),
            is_final: false,
            locked,
            metadata,
            targets: Vec::new(),
            checksum: expected,
            counters: Counters::default(),
        },
        targets,
    })
}

/// Resolves target names against `index`; unknown or repeated names are refused.
fn resolve(
    index: &HashMap<String, StateId>,
    owner: &str,
    names: &[String],
) -> Result<Vec<StateId>> {
    let mut ids = Vec::with_capacity(names.len());
    for n in names {
        let id = *index
            .get(n)
            .ok_or_else(|| invalid(format!("{owner:?} has a transition to unknown state {n:?}")))?;
        if ids.contains(&id) {
            return Err(invalid(format!(
                "{owner:?} lists the transition to {n:?} twice"
            )));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn name_of<'n>(node: &'n Node<'_>, key: &str) -> Result<&'n str> {
    node.get(key)
        .and_then(Node::as_str)
        .ok_or_else(|| invalid(format!("{key:?} must be a state name")))
}

/// The id of a state the snapshot names in `place`.
fn state_id(index: &HashMap<String, StateId>, name: Option<&str>, place: &str) -> Result<StateId> {
    let name = name.ok_or_else(|| invalid(format!("{place} must name states")))?;
    index
        .get(name)
        .copied()
        .ok_or_else(|| invalid(format!("{place} names unknown state {name:?}")))
}

/// The members only polycall's layout has; a snapshot with any of them must have all of them.
const INTEGRITY_MEMBERS: [&str; 3] = ["format", "transitions", "checksum"];

/// Tells the layouts apart and, for polycall's, verifies the machine checksum.
fn snapshot_format(root: &Node<'_>, options: RestoreOptions) -> Result<SnapshotFormat> {
    let members = root
        .members()
        .ok_or_else(|| invalid("a machine snapshot must be an object"))?;
    if INTEGRITY_MEMBERS.iter().all(|k| root.get(k).is_none()) {
        if !options.legacy {
            return Err(invalid(
                "the snapshot has no format, transition table or machine checksum (node-polycall's \
                 layout); restoring it needs the legacy option",
            ));
        }
        return Ok(SnapshotFormat::NodePolycall);
    }
    let f = root.get("format").and_then(Node::as_str);
    if f != Some(SNAPSHOT_FORMAT) {
        return Err(invalid(format!("unsupported snapshot format {f:?}")));
    }
    let expected = root
        .get("checksum")
        .and_then(Node::as_safe_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid("a machine snapshot needs a u32 \"checksum\""))?;
    // The hash of `{` + the other members, compact, in order + `}`, fed in pieces.
    let mut covered = JavaHash::default().update("{");
    for (i, m) in members.iter().filter(|m| m.key != "checksum").enumerate() {
        if i > 0 {
            covered = covered.update(",");
        }
        covered = covered.update(m.raw_key).update(":").update(m.node.raw);
    }
    let actual = covered.update("}").finish();
    if actual != expected {
        return Err(Error::IntegrityCheckFailed { expected, actual });
    }
    Ok(SnapshotFormat::Polycall)
}

/// polycall's layout lists the table twice (top-level and per state); they must agree.
fn check_table(
    root: &Node<'_>,
    states: &[StateRecord],
    index: &HashMap<String, StateId>,
) -> Result<()> {
    let table = root
        .get("transitions")
        .and_then(Node::items)
        .ok_or_else(|| invalid("\"transitions\" must be an array"))?;
    let mut ids = Vec::with_capacity(table.len());
    for t in table {
        let from = state_id(index, t.get("from").and_then(Node::as_str), "transitions")?;
        let to = state_id(index, t.get("to").and_then(Node::as_str), "transitions")?;
        ids.push((from, to));
    }
    let listed = (0u32..)
        .zip(states)
        .flat_map(|(from, s)| s.targets.iter().map(move |to| (from, *to)));
    if listed.eq(ids) {
        Ok(())
    } else {
        Err(invalid(
            "\"transitions\" disagrees with the states' transition lists",
        ))
    }
}

fn name(states: &[StateRecord], id: StateId) -> &str {
    states.get(id as usize).map_or("", |s| s.name.as_str())
}

/// The history must be a walk of the machine that ends in the current state: each entry starts
/// where the one before it ended, none leaves a final state, and the last one entered the current
/// state. For node-polycall's layout, which no machine checksum covers, each entry must also be a
/// transition of the restored table, and a machine without history must still be in its first
/// state (or in none).
fn check_walk(
    states: &[StateRecord],
    current: Option<StateId>,
    history: &VecDeque<HistoryEntry>,
    format: SnapshotFormat,
) -> Result<()> {
    let legacy = format == SnapshotFormat::NodePolycall;
    let mut previous: Option<StateId> = None;
    for (i, h) in history.iter().enumerate() {
        let from = states.get(h.from as usize);
        if let Some(p) = previous
            && p != h.from
        {
            return Err(invalid(format!(
                "history entry {i} leaves {:?}, but the entry before it entered {:?}",
                name(states, h.from),
                name(states, p)
            )));
        }
        if from.is_some_and(|s| s.is_final) {
            return Err(invalid(format!(
                "history entry {i} leaves final state {:?}",
                name(states, h.from)
            )));
        }
        if legacy && !from.is_some_and(|s| s.targets.contains(&h.to)) {
            return Err(invalid(format!(
                "history entry {i} names {:?} -> {:?}, which is not a transition",
                name(states, h.from),
                name(states, h.to)
            )));
        }
        previous = Some(h.to);
    }
    match (previous, current) {
        (Some(last), Some(c)) if last != c => Err(invalid(format!(
            "the current state {:?} is not the state the history ends in, {:?}",
            name(states, c),
            name(states, last)
        ))),
        (Some(_), None) => Err(invalid("a machine with history needs a current state")),
        (None, Some(c)) if legacy && c != 0 => Err(invalid(format!(
            "with no history the current state must be the first state, {:?}, not {:?}",
            name(states, 0),
            name(states, c)
        ))),
        _ => Ok(()),
    }
}

impl StateMachine {
    fn write_state_snapshot(&self, out: &mut String, s: &StateRecord, now: u64) {
        out.push_str("{\"timestamp\":");
        write_u64(out, now);
        out.push_str(",\"state\":");
        let start = out.len();
        write_state_json(out, s, &self.states);
        let sum = node_state_checksum(out.get(start..).unwrap_or_default());
        out.push_str(",\"checksum\":");
        write_u64(out, u64::from(sum));
        out.push('}');
    }

    /// node-polycall's snapshot of state `id`: `{"timestamp","state","checksum"}`.
    ///
    /// # Errors
    /// `InvalidState`.
    pub fn state_snapshot(&self, id: StateId, now: u64) -> Result<String> {
        let mut out = String::with_capacity(256);
        self.write_state_snapshot(&mut out, self.record(id)?, now);
        Ok(out)
    }

    /// The machine snapshot (module docs), as compact JSON.
    pub fn snapshot(&self, now: u64) -> String {
        let mut out = String::with_capacity(256 * (self.states.len() + 1));
        out.push_str("{\"format\":");
        write_str(&mut out, SNAPSHOT_FORMAT);
        out.push_str(",\"timestamp\":");
        write_u64(&mut out, now);
        out.push_str(",\"currentState\":");
        match self.current.and_then(|c| self.name(c)) {
            Some(name) => write_str(&mut out, name),
            None => out.push_str("null"),
        }
        out.push_str(",\"states\":[");
        for (i, s) in self.states.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            write_str(&mut out, &s.name);
            out.push_str(",\"snapshot\":");
            self.write_state_snapshot(&mut out, s, now);
            out.push_str(",\"final\":");
            out.push_str(if s.is_final { "true" } else { "false" });
            out.push('}');
        }
        out.push_str("],\"transitions\":[");
        for (i, (from, to)) in self.transitions().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"from\":");
            write_str(&mut out, self.name(from).unwrap_or_default());
            out.push_str(",\"to\":");
            write_str(&mut out, self.name(to).unwrap_or_default());
            out.push('}');
        }
        out.push_str("],\"history\":[");
        for (i, h) in self.history.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"from\":");
            write_str(&mut out, self.name(h.from).unwrap_or_default());
            out.push_str(",\"to\":");
            write_str(&mut out, self.name(h.to).unwrap_or_default());
            out.push_str(",\"timestamp\":");
            write_u64(&mut out, h.timestamp);
            out.push('}');
        }
        out.push_str("]}");
        let sum = node_state_checksum(&out);
        out.pop();
        out.push_str(",\"checksum\":");
        write_u64(&mut out, u64::from(sum));
        out.push('}');
        out
    }

    /// Replaces the machine's states, transitions, current state and history with a machine
    /// snapshot's (module docs), after verifying all of it. Counters start from zero; the
    /// configuration stays. History longer than `max_history` keeps its newest entries.
    ///
    /// # Errors
    /// `IntegrityCheckFailed` (machine or state checksum), `InvalidSnapshot` (shape,
    /// references, format, a checksum of 0, a history that is not a walk ending in the current
    /// state, or node-polycall's layout without [`RestoreOptions::legacy`]), `StateNameTooLong`,
    /// `MaxStatesReached`, `MaxTransitionsReached`; `StateLocked` while a live state is locked
    /// (checked after the snapshot, so a bad snapshot reports its own error first).
    pub fn restore(&mut self, text: &str, options: RestoreOptions) -> Result<SnapshotFormat> {
        let root = json::parse(text).map_err(invalid)?;
        let format = snapshot_format(&root, options)?;
        let (mut states, index) = self.parse_states(&root)?;
        let mut count: usize = states.iter().map(|s| s.targets.len()).sum();
        match format {
            SnapshotFormat::Polycall => check_table(&root, &states, &index)?,
            SnapshotFormat::NodePolycall => {
                count += self.keep_live_transitions(&mut states, &index);
            }
        }
        if count > self.config.max_transitions {
            return Err(Error::MaxTransitionsReached {
                limit: self.config.max_transitions,
            });
        }
        let current = match root.get("currentState") {
            None => return Err(invalid("a machine snapshot needs \"currentState\"")),
            Some(node) if node.is_null() => None,
            Some(node) => Some(state_id(&index, node.as_str(), "currentState")?),
        };
        let history = self.parse_history(&root, &index)?;
        self.install(
            Restored {
                states,
                index,
                transition_count: count,
                current,
                history,
                checksums: Checksums::Recompute,
            },
            format,
        )?;
        Ok(format)
    }

    /// The last steps of every restore, once a snapshot is decoded and its checksums, limits
    /// and references hold: the history must be a walk ending in the current state, and no live
    /// state may be locked. Then the machine takes the snapshot's states, table, current state
    /// and history, with fresh counters.
    pub(super) fn install(&mut self, r: Restored, format: SnapshotFormat) -> Result<()> {
        check_walk(&r.states, r.current, &r.history, format)?;
        if let Some(locked) = self.states.iter().find(|s| s.locked) {
            return Err(Error::StateLocked(locked.name.clone()));
        }
        self.states = r.states;
        self.index = r.index;
        self.transition_count = r.transition_count;
        self.current = r.current;
        self.history = r.history;
        if r.checksums == Checksums::Recompute {
            self.refresh_all();
        }
        Ok(())
    }

    /// The snapshot's states with their outgoing transitions resolved, and the name index.
    fn parse_states(
        &self,
        root: &Node<'_>,
    ) -> Result<(Vec<StateRecord>, HashMap<String, StateId>)> {
        let entries = root
            .get("states")
            .and_then(Node::items)
            .ok_or_else(|| invalid("\"states\" must be an array"))?;
        if entries.len() > self.config.max_states {
            return Err(Error::MaxStatesReached {
                limit: self.config.max_states,
            });
        }
        let mut states = Vec::with_capacity(entries.len());
        let mut target_names = Vec::with_capacity(entries.len());
        let mut index = HashMap::with_capacity(entries.len());
        for (id, entry) in (0u32..).zip(entries) {
            let name = name_of(entry, "name")?;
            self.check_name(name).map_err(|e| match e {
                Error::InvalidArgument(reason) => invalid(reason),
                other => other,
            })?;
            let snapshot = entry
                .get("snapshot")
                .ok_or_else(|| invalid(format!("state {name:?} has no \"snapshot\"")))?;
            let ParsedState {
                mut record,
                targets,
            } = parse_state_snapshot(snapshot)?;
            if record.name != name {
                return Err(invalid(format!(
                    "entry {name:?} holds a snapshot of {:?}",
                    record.name
                )));
            }
            record.is_final = match entry.get("final") {
                None => false,
                Some(f) => f
                    .as_bool()
                    .ok_or_else(|| invalid("\"final\" must be a boolean"))?,
            };
            if index.insert(record.name.clone(), id).is_some() {
                return Err(invalid(format!("state {name:?} appears twice")));
            }
            states.push(record);
            target_names.push(targets);
        }
        for (record, names) in states.iter_mut().zip(&target_names) {
            record.targets = resolve(&index, &record.name, names)?;
            if record.is_final && !record.targets.is_empty() {
                return Err(invalid(format!(
                    "final state {:?} has transitions",
                    record.name
                )));
            }
        }
        Ok((states, index))
    }

    /// For a node-polycall snapshot, which carries no table: adds the live transitions whose
    /// states the snapshot also has. Returns how many were added.
    fn keep_live_transitions(
        &self,
        states: &mut [StateRecord],
        index: &HashMap<String, StateId>,
    ) -> usize {
        let mut added = 0;
        for (from, to) in self.transitions() {
            let (Some(f), Some(t)) = (
                self.name(from).and_then(|n| index.get(n)),
                self.name(to).and_then(|n| index.get(n)),
            ) else {
                continue;
            };
            if let Some(record) = states.get_mut(*f as usize)
                && !record.is_final
                && !record.targets.contains(t)
            {
                record.targets.push(*t);
                added += 1;
            }
        }
        added
    }

    fn parse_history(
        &self,
        root: &Node<'_>,
        index: &HashMap<String, StateId>,
    ) -> Result<VecDeque<HistoryEntry>> {
        let entries = root
            .get("history")
            .and_then(Node::items)
            .ok_or_else(|| invalid("\"history\" must be an array"))?;
        let skip = entries.len().saturating_sub(self.config.max_history);
        let mut history = VecDeque::with_capacity(entries.len() - skip);
        for h in entries.iter().skip(skip) {
            let timestamp = h
                .get("timestamp")
                .and_then(Node::as_safe_u64)
                .ok_or_else(|| invalid("history timestamps must be non-negative integers"))?;
            history.push_back(HistoryEntry {
                from: state_id(index, h.get("from").and_then(Node::as_str), "history")?,
                to: state_id(index, h.get("to").and_then(Node::as_str), "history")?,
                timestamp,
            });
        }
        Ok(history)
    }

    /// Restores one state from its node-polycall snapshot, following the C library's rules
    /// after verifying the checksum: the state must exist (`InvalidState`), be unlocked
    /// (`StateLocked`) and be at the snapshot's version (`StateVersionMismatch`). Lock flag,
    /// endpoint, metadata and outgoing transitions are taken from the snapshot; its final flag
    /// and counters stay. Returns the state's id.
    ///
    /// # Errors
    /// As listed, plus `IntegrityCheckFailed`, `InvalidSnapshot` and `MaxTransitionsReached`.
    pub fn restore_state(&mut self, text: &str) -> Result<StateId> {
        let root = json::parse(text).map_err(invalid)?;
        let ParsedState { record, targets } = parse_state_snapshot(&root)?;
        let id = self
            .id(&record.name)
            .ok_or_else(|| Error::InvalidState(record.name.clone()))?;
        let live = self.record(id)?;
        if live.locked {
            return Err(Error::StateLocked(live.name.clone()));
        }
        let (snapshot, current) = (record.int("version"), live.int("version"));
        if snapshot != current {
            return Err(Error::StateVersionMismatch {
                state: live.name.clone(),
                snapshot: snapshot.unwrap_or(0),
                live: current.unwrap_or(0),
            });
        }
        let targets = resolve(&self.index, &record.name, &targets)?;
        if live.is_final && !targets.is_empty() {
            return Err(invalid(format!(
                "final state {:?} has transitions",
                live.name
            )));
        }
        let count = self.transition_count - live.targets.len() + targets.len();
        if count > self.config.max_transitions {
            return Err(Error::MaxTransitionsReached {
                limit: self.config.max_transitions,
            });
        }
        if let Some(live) = self.states.get_mut(id as usize) {
            live.locked = record.locked;
            live.endpoint = record.endpoint;
            live.metadata = record.metadata;
            live.targets = targets;
        }
        self.transition_count = count;
        self.refresh(id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::machine::{Config, StateOptions};
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn machine() -> StateMachine {
        let mut m = StateMachine::default();
        let a = m.add_state("A", StateOptions::default(), T0).unwrap();
        let b = m.add_state("B", StateOptions::default(), T0).unwrap();
        let c = m
            .add_state(
                "C",
                StateOptions {
                    is_final: true,
                    ..StateOptions::default()
                },
                T0,
            )
            .unwrap();
        m.add_transition(a, b).unwrap();
        m.add_transition(b, a).unwrap();
        m.add_transition(b, c).unwrap();
        m.transition(b, T0 + 1).unwrap();
        m.lock(a, T0 + 2).unwrap();
        m.set_metadata(b, "note", r#"{"x":"\"y\""}"#, T0 + 3)
            .unwrap();
        m
    }

    #[test]
    fn machine_snapshot_round_trips() {
        let m = machine();
        let text = m.snapshot(T0 + 10);
        let mut r = StateMachine::default();
        assert_eq!(
            r.restore(&text, RestoreOptions::default()).unwrap(),
            SnapshotFormat::Polycall
        );
        assert_eq!(r.snapshot(T0 + 10), text);
        assert_eq!(r.current(), m.current());
        assert_eq!(r.transition_count(), 3);
        // The restored table works (node-polycall's restore would have lost it).
        r.transition(2, T0 + 11).unwrap();
        assert_eq!(r.current(), Some(2));
    }

    #[test]
    fn machine_checksum_covers_the_text_without_the_checksum_member() {
        let text = machine().snapshot(T0);
        let cut = text.rfind(",\"checksum\":").unwrap();
        let covered = format!("{}}}", &text[..cut]);
        let stated: u32 = text[cut + 12..text.len() - 1].parse().unwrap();
        assert_eq!(node_state_checksum(&covered), stated);
    }

    #[test]
    fn tampering_is_refused_and_leaves_the_machine_alone() {
        let text = machine().snapshot(T0);
        let mut r = StateMachine::default();
        r.add_state("keep", StateOptions::default(), T0).unwrap();
        let tampered = text.replace("\"currentState\":\"B\"", "\"currentState\":\"A\"");
        let e = r.restore(&tampered, RestoreOptions::default()).unwrap_err();
        assert_eq!((e.code(), e.errno()), ("INTEGRITY_CHECK_FAILED", Some(7)));
        let stripped = text.replace("\"format\":\"polycall.state-machine/1\",", "");
        assert_eq!(
            r.restore(&stripped, RestoreOptions::default())
                .unwrap_err()
                .code(),
            "INVALID_SNAPSHOT"
        );
        assert_eq!(r.names().collect::<Vec<_>>(), ["keep"]);
    }

    #[test]
    fn state_snapshot_round_trip_and_rules() {
        let mut m = machine();
        let b = m.id("B").unwrap();
        let snap = m.state_snapshot(b, T0 + 20).unwrap();
        assert!(snap.starts_with("{\"timestamp\":1700000000020,\"state\":{\"name\":\"B\""));
        m.lock(b, T0 + 21).unwrap();
        assert_eq!(m.restore_state(&snap).unwrap_err().code(), "STATE_LOCKED");
        m.unlock(b).unwrap();
        assert_eq!(m.restore_state(&snap).unwrap(), b);
        m.set_metadata(b, "k", "1", T0 + 22).unwrap();
        let e = m.restore_state(&snap).unwrap_err();
        assert_eq!((e.code(), e.errno()), ("STATE_VERSION_MISMATCH", Some(9)));
        let bad = snap.replace("\"isLocked\":false", "\"isLocked\":true");
        assert_eq!(
            m.restore_state(&bad).unwrap_err().code(),
            "INTEGRITY_CHECK_FAILED"
        );
        let mut other = StateMachine::default();
        other.add_state("A", StateOptions::default(), T0).unwrap();
        assert_eq!(
            other.restore_state(&snap).unwrap_err().code(),
            "INVALID_STATE"
        );
    }

    #[test]
    fn node_polycall_machine_snapshot_restores_with_live_transitions() {
        let state = |name: &str, targets: &str| {
            let json = format!(
                r#"{{"name":"{name}","isLocked":false,"endpoint":"/{lower}","metadata":{{"createdAt":1,"version":1,"lastModified":1}},"transitions":[{targets}]}}"#,
                lower = name.to_lowercase()
            );
            format!(
                r#"{{"name":"{name}","snapshot":{{"timestamp":5,"state":{json},"checksum":{}}}}}"#,
                node_state_checksum(&json)
            )
        };
        let text = format!(
            r#"{{"timestamp":5,"currentState":"B","states":[{},{},{}],"history":[{{"timestamp":4,"from":"A","to":"B"}}]}}"#,
            state("A", r#""B""#),
            state("B", ""),
            state("C", "")
        );
        let mut m = StateMachine::default();
        let live_b = m.add_state("B", StateOptions::default(), T0).unwrap();
        let live_c = m.add_state("C", StateOptions::default(), T0).unwrap();
        let live_z = m.add_state("Z", StateOptions::default(), T0).unwrap();
        m.add_transition(live_b, live_c).unwrap();
        m.add_transition(live_b, live_z).unwrap();
        let e = m.restore(&text, RestoreOptions::default()).unwrap_err();
        assert_eq!(e.code(), "INVALID_SNAPSHOT");
        assert_eq!(m.names().collect::<Vec<_>>(), ["B", "C", "Z"]);
        assert_eq!(
            m.restore(&text, RestoreOptions { legacy: true }).unwrap(),
            SnapshotFormat::NodePolycall
        );
        let names: Vec<_> = m
            .transitions()
            .map(|(f, t)| (m.name(f).unwrap(), m.name(t).unwrap()))
            .collect();
        assert_eq!(names, [("A", "B"), ("B", "C")]);
        assert_eq!(m.current(), m.id("B"));
        assert_eq!(m.history().len(), 1);
    }

    #[test]
    fn restore_checks_limits_and_references() {
        let text = machine().snapshot(T0);
        let mut small = StateMachine::new(Config {
            max_states: 2,
            ..Config::default()
        });
        assert_eq!(
            small
                .restore(&text, RestoreOptions::default())
                .unwrap_err()
                .code(),
            "MAX_STATES_REACHED"
        );
        let mut few = StateMachine::new(Config {
            max_transitions: 2,
            ..Config::default()
        });
        assert_eq!(
            few.restore(&text, RestoreOptions::default())
                .unwrap_err()
                .code(),
            "MAX_TRANSITIONS_REACHED"
        );
        let mut short = StateMachine::new(Config {
            max_history: 1,
            ..Config::default()
        });
        short.restore(&text, RestoreOptions::default()).unwrap();
        assert_eq!(short.history().len(), 1);
        for bad in [
            "",
            "[]",
            "{\"format\":\"other\",\"checksum\":1}",
            "{\"states\":[]}",
        ] {
            let e = StateMachine::default()
                .restore(bad, RestoreOptions::default())
                .unwrap_err();
            assert_eq!(e.code(), "INVALID_SNAPSHOT", "{bad}");
        }
    }

    /// The snapshot without `format`, the `transitions` table and `checksum`: how it reads when
    /// someone deletes the integrity members (node-polycall's layout).
    fn strip(text: &str) -> String {
        let t = text.replacen("\"format\":\"polycall.state-machine/1\",", "", 1);
        let start = t.rfind(",\"transitions\":[").unwrap();
        let end = start + t[start..].find("],\"history\":").unwrap() + 1;
        let t = format!("{}{}", &t[..start], &t[end..]);
        let cut = t.rfind(",\"checksum\":").unwrap();
        format!("{}}}", &t[..cut])
    }

    /// Recomputes the machine checksum after an edit: the checksum is not a MAC.
    fn reseal(text: &str) -> String {
        let cut = text.rfind(",\"checksum\":").unwrap();
        let body = format!("{}}}", &text[..cut]);
        format!(
            "{},\"checksum\":{}}}",
            &text[..cut],
            node_state_checksum(&body)
        )
    }

    fn code_of(text: &str, legacy: bool) -> &'static str {
        let mut r = StateMachine::default();
        r.add_state("keep", StateOptions::default(), T0).unwrap();
        let before = r.snapshot(T0);
        let code = match r.restore(text, RestoreOptions { legacy }) {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        if code != "ok" {
            assert_eq!(
                r.snapshot(T0),
                before,
                "a refused restore changed the machine"
            );
        }
        code
    }

    #[test]
    fn deleted_integrity_members_are_refused_unless_legacy() {
        let text = machine().snapshot(T0);
        let stripped = strip(&text);
        assert!(!stripped.contains("\"format\"") && !stripped.contains("\"checksum\":3"));
        assert_eq!(code_of(&stripped, false), "INVALID_SNAPSHOT");
        // Opting in, the stripped snapshot is a consistent node-polycall snapshot.
        assert_eq!(code_of(&stripped, true), "ok");
        // Deleting one or two of the three members is refused in either mode.
        let cut = text.rfind(",\"checksum\":").unwrap();
        let no_checksum = format!("{}}}", &text[..cut]);
        let no_format = text.replacen("\"format\":\"polycall.state-machine/1\",", "", 1);
        let start = text.rfind(",\"transitions\":[").unwrap();
        let end = start + text[start..].find("],\"history\":").unwrap() + 1;
        let no_table = reseal(&format!("{}{}", &text[..start], &text[end..]));
        for partial in [no_checksum, no_format, no_table] {
            assert_eq!(code_of(&partial, false), "INVALID_SNAPSHOT", "{partial}");
            assert_eq!(code_of(&partial, true), "INVALID_SNAPSHOT", "{partial}");
        }
    }

    #[test]
    fn a_forged_current_state_is_refused() {
        // The machine went A -> B; C is reachable only through B -> C.
        let text = machine().snapshot(T0);
        let to_c = |t: &str| t.replace("\"currentState\":\"B\"", "\"currentState\":\"C\"");
        let forged = to_c(&strip(&text));
        assert_eq!(code_of(&forged, false), "INVALID_SNAPSHOT");
        // Legacy: the history ends in B, not C.
        assert_eq!(code_of(&forged, true), "INVALID_SNAPSHOT");
        // Legacy without history: a machine that never moved is in its first state.
        let quiet = forged.replace(
            "\"history\":[{\"from\":\"A\",\"to\":\"B\",\"timestamp\":1700000000001}]",
            "\"history\":[]",
        );
        assert_ne!(quiet, forged);
        assert_eq!(code_of(&quiet, true), "INVALID_SNAPSHOT");
        assert_eq!(
            code_of(
                &quiet.replace("\"currentState\":\"C\"", "\"currentState\":\"A\""),
                true
            ),
            "ok"
        );
        // Ours, edited and resealed: the walk still has to end in the current state.
        assert_eq!(code_of(&reseal(&to_c(&text)), false), "INVALID_SNAPSHOT");
    }

    #[test]
    fn forged_history_is_refused() {
        let text = machine().snapshot(T0);
        let real = "\"history\":[{\"from\":\"A\",\"to\":\"B\",\"timestamp\":1700000000001}]";
        assert!(text.contains(real));
        let with = |t: &str, history: &str, current: &str| {
            t.replace(real, &format!("\"history\":[{history}]"))
                .replace(
                    "\"currentState\":\"B\"",
                    &format!("\"currentState\":\"{current}\""),
                )
        };
        let step = |from: &str, to: &str| {
            format!("{{\"from\":\"{from}\",\"to\":\"{to}\",\"timestamp\":1}}")
        };
        // No transition A -> C exists (legacy checks each step against the table).
        let jump = with(&strip(&text), &step("A", "C"), "C");
        assert_eq!(code_of(&jump, false), "INVALID_SNAPSHOT");
        assert_eq!(code_of(&jump, true), "INVALID_SNAPSHOT");
        // Steps that do not chain, in either layout.
        let broken = format!("{},{}", step("A", "B"), step("A", "B"));
        assert_eq!(
            code_of(&with(&strip(&text), &broken, "B"), true),
            "INVALID_SNAPSHOT"
        );
        assert_eq!(
            code_of(&reseal(&with(&text, &broken, "B")), false),
            "INVALID_SNAPSHOT"
        );
        // Leaving the final state C, in either layout.
        let out_of_final = format!("{},{},{}", step("A", "B"), step("B", "C"), step("C", "A"));
        assert_eq!(
            code_of(&with(&strip(&text), &out_of_final, "A"), true),
            "INVALID_SNAPSHOT"
        );
        assert_eq!(
            code_of(&reseal(&with(&text, &out_of_final, "A")), false),
            "INVALID_SNAPSHOT"
        );
        // History without a current state.
        let nowhere = reseal(&text.replace("\"currentState\":\"B\"", "\"currentState\":null"));
        assert_eq!(code_of(&nowhere, false), "INVALID_SNAPSHOT");
        // A real walk restores in both.
        let walk = format!("{},{},{}", step("A", "B"), step("B", "A"), step("A", "B"));
        assert_eq!(code_of(&with(&strip(&text), &walk, "B"), true), "ok");
        assert_eq!(code_of(&reseal(&with(&text, &walk, "B")), false), "ok");
    }

    #[test]
    fn restoring_onto_a_locked_state_is_refused_and_keeps_the_lock() {
        let mut m = machine();
        let a = m.id("A").unwrap();
        assert_eq!(m.is_locked(a), Some(true));
        let own = m.snapshot(T0 + 5);
        let mut other = StateMachine::default();
        other.add_state("A", StateOptions::default(), T0).unwrap();
        let cases = [
            (other.snapshot(T0), false),
            (other.snapshot(T0), true),
            (own.clone(), false),
            (strip(&other.snapshot(T0)), true),
        ];
        for (text, legacy) in cases {
            let e = m.restore(&text, RestoreOptions { legacy }).unwrap_err();
            assert_eq!((e.code(), e.errno()), ("STATE_LOCKED", Some(8)));
            assert_eq!(m.snapshot(T0 + 5), own);
        }
        // A bad snapshot reports its own error first.
        assert_eq!(
            m.restore("{}", RestoreOptions::default())
                .unwrap_err()
                .code(),
            "INVALID_SNAPSHOT"
        );
        // Unlocked, it restores, and the snapshot brings its own locks back.
        m.unlock(a).unwrap();
        m.restore(&own, RestoreOptions::default()).unwrap();
        assert_eq!(m.is_locked(a), Some(true));
        assert_eq!(m.snapshot(T0 + 5), own);
    }

    #[test]
    fn zero_state_checksum_is_malformed() {
        let mut m = StateMachine::default();
        m.add_state("A", StateOptions::default(), T0).unwrap();
        let snap = m.state_snapshot(0, T0).unwrap();
        let cut = snap.rfind("\"checksum\":").unwrap();
        let zero = format!("{}\"checksum\":0}}", &snap[..cut]);
        assert_eq!(
            m.restore_state(&zero).unwrap_err().code(),
            "INVALID_SNAPSHOT"
        );
    }
}
