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
//! checksum, names, limits and references. On any error the machine is left as it was. Unlike
//! node-polycall, restore rebuilds the transition table. A node-polycall snapshot (no `format`,
//! no `checksum`) has no table and no machine checksum: its states' own `transitions` lists
//! become the table, plus the live transitions between states that the snapshot also has.
//! [`RestoreOptions::require_checksum`] refuses such snapshots.

use std::collections::{HashMap, VecDeque};

use super::checksum::node_state_checksum;
use super::json::{self, Node, write_str, write_u64};
use super::machine::{
    Counters, HistoryEntry, MetaValue, RESERVED_METADATA_KEYS, StateId, StateMachine, StateRecord,
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

/// Options of [`StateMachine::restore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Refuse snapshots without a machine checksum (node-polycall's layout).
    pub require_checksum: bool,
}

fn invalid(reason: impl Into<String>) -> Error {
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
    let mut metadata: Vec<(String, MetaValue)> = Vec::with_capacity(meta_members.len());
    for m in meta_members {
        if metadata.iter().any(|(k, _)| *k == m.key) {
            return Err(invalid(format!("metadata key {:?} repeats", m.key)));
        }
        let value = if RESERVED_METADATA_KEYS.contains(&m.key.as_str()) {
            MetaValue::Int(m.node.as_safe_u64().ok_or_else(|| {
                invalid(format!(
                    "metadata {:?} must be a non-negative integer",
                    m.key
                ))
            })?)
        } else {
            MetaValue::Raw(m.node.raw.to_owned())
        };
        metadata.push((m.key.clone(), value));
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

/// Tells the layouts apart and, for polycall's, verifies the machine checksum.
fn snapshot_format(root: &Node<'_>, options: RestoreOptions) -> Result<SnapshotFormat> {
    let members = root
        .members()
        .ok_or_else(|| invalid("a machine snapshot must be an object"))?;
    if root.get("format").is_none() && root.get("checksum").is_none() {
        if options.require_checksum {
            return Err(invalid(
                "the snapshot has no machine checksum (node-polycall layout)",
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
    let mut covered = String::with_capacity(root.raw.len());
    covered.push('{');
    for m in members.iter().filter(|m| m.key != "checksum") {
        if covered.len() > 1 {
            covered.push(',');
        }
        covered.push_str(m.raw_key);
        covered.push(':');
        covered.push_str(m.node.raw);
    }
    covered.push('}');
    let actual = node_state_checksum(&covered);
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

impl StateMachine {
    fn write_state_snapshot(&self, out: &mut String, s: &StateRecord, now: u64) {
        let json = self.json_of(s);
        out.push_str("{\"timestamp\":");
        write_u64(out, now);
        out.push_str(",\"state\":");
        out.push_str(&json);
        out.push_str(",\"checksum\":");
        write_u64(out, u64::from(node_state_checksum(&json)));
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
    /// references, format, a checksum of 0, or no machine checksum under `require_checksum`),
    /// `StateNameTooLong`, `MaxStatesReached`, `MaxTransitionsReached`.
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

        self.states = states;
        self.index = index;
        self.transition_count = count;
        self.current = current;
        self.history = history;
        for id in 0..u32::try_from(self.states.len()).unwrap_or(u32::MAX) {
            self.refresh(id);
        }
        Ok(format)
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
        assert_eq!(
            m.restore(&text, RestoreOptions::default()).unwrap(),
            SnapshotFormat::NodePolycall
        );
        let names: Vec<_> = m
            .transitions()
            .map(|(f, t)| (m.name(f).unwrap(), m.name(t).unwrap()))
            .collect();
        assert_eq!(names, [("A", "B"), ("B", "C")]);
        assert_eq!(m.current(), m.id("B"));
        assert_eq!(m.history().len(), 1);
        let e = m
            .restore(
                &text,
                RestoreOptions {
                    require_checksum: true,
                },
            )
            .unwrap_err();
        assert_eq!(e.code(), "INVALID_SNAPSHOT");
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
