//! The durable queue (-q): every event is appended and fsynced before its hook runs and
//! marked done after, so events a crash interrupted are delivered again on start.

use crate::model::event::{EventType, FinalizerAction, ObjectEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open queue file '{path}'")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write queue file '{path}'")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One line of the queue file: an event added (`op: add`, with the event) or done.
#[derive(Debug, Serialize, Deserialize)]
struct Record<'a> {
    op: Op,
    id: u64,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    kind: Option<EventType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finalizer: Option<FinalizerAction>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    object: Option<&'a serde_json::value::RawValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Add,
    Done,
}

impl Record<'_> {
    fn done(id: u64) -> Record<'static> {
        Record { op: Op::Done, id, kind: None, key: None, finalizer: None, object: None }
    }
}

/// After this many finished entries the file is rewritten with only the unfinished ones.
const COMPACT_AFTER: u64 = 10_000;

pub struct Journal {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    file: File,
    next_id: u64,
    /// Unfinished entries: id → their line, kept to rewrite the file.
    pending: BTreeMap<u64, String>,
    done_since_compaction: u64,
}

impl Journal {
    /// Opens (or creates) the queue; returns it with the events left unfinished, oldest first.
    pub fn open(path: &Path, reset: bool) -> Result<(Journal, Vec<ObjectEvent>), JournalError> {
        let open_err = |source| JournalError::Open { path: path.to_path_buf(), source };
        let (pending, next_id) = if reset { (BTreeMap::new(), 1) } else { read(path).map_err(open_err)? };
        let events = pending.values().filter_map(|line| to_event(line)).collect();
        let file =
            rewrite(path, &pending).map_err(|source| JournalError::Write { path: path.to_path_buf(), source })?;
        let state = State { file, next_id, pending, done_since_compaction: 0 };
        Ok((Journal { path: path.to_path_buf(), state: Mutex::new(state) }, events))
    }

    /// Appends the event and waits until it is on disk; sets its id.
    pub fn add(&self, ev: &mut ObjectEvent) -> Result<(), JournalError> {
        let mut st = self.state.lock().expect("journal lock");
        let id = st.next_id;
        let line = add_line(id, ev);
        self.append(&mut st, &line)?;
        st.next_id += 1;
        st.pending.insert(id, line);
        ev.id = id;
        Ok(())
    }

    /// Marks the event handled.
    pub fn done(&self, id: u64) -> Result<(), JournalError> {
        let mut st = self.state.lock().expect("journal lock");
        if st.pending.remove(&id).is_none() {
            return Ok(());
        }
        let line = serde_json::to_string(&Record::done(id)).expect("serializable");
        self.append(&mut st, &line)?;
        st.done_since_compaction += 1;
        if st.done_since_compaction >= COMPACT_AFTER || st.pending.is_empty() && st.done_since_compaction > 100 {
            st.file = rewrite(&self.path, &st.pending).map_err(|source| self.write_err(source))?;
            st.done_since_compaction = 0;
        }
        Ok(())
    }

    fn append(&self, st: &mut State, line: &str) -> Result<(), JournalError> {
        st.file.write_all(format!("{line}\n").as_bytes()).map_err(|s| self.write_err(s))?;
        st.file.sync_data().map_err(|s| self.write_err(s))
    }

    fn write_err(&self, source: std::io::Error) -> JournalError {
        JournalError::Write { path: self.path.clone(), source }
    }
}

fn add_line(id: u64, ev: &ObjectEvent) -> String {
    let rec = Record {
        op: Op::Add,
        id,
        kind: Some(ev.kind),
        key: Some(ev.key.to_string()),
        finalizer: Some(ev.finalizer),
        object: None,
    };
    // The object is already compact JSON: spliced in as it is rather than parsed again.
    let head = serde_json::to_string(&rec).expect("serializable");
    let head = head.strip_suffix('}').expect("a JSON object");
    format!("{head},\"object\":{}}}", ev.object)
}

fn to_event(line: &str) -> Option<ObjectEvent> {
    let rec: Record = serde_json::from_str(line).ok()?;
    Some(ObjectEvent {
        kind: rec.kind?,
        key: rec.key?.into(),
        object: rec.object?.get().into(),
        old: None,
        finalizer: rec.finalizer.unwrap_or_default(),
        id: rec.id,
        hook: true,
    })
}

/// Reads what is readable; a torn or corrupt line is reported by number and skipped.
fn read(path: &Path) -> std::io::Result<(BTreeMap<u64, String>, u64)> {
    let mut pending = BTreeMap::new();
    let mut max_id = 0;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((pending, 1)),
        Err(e) => return Err(e),
    };
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line?;
        let text = String::from_utf8_lossy(&line);
        match serde_json::from_str::<Record>(&text) {
            Ok(Record { op: Op::Add, id, .. }) if to_event(&text).is_some() => {
                max_id = max_id.max(id);
                pending.insert(id, text.into_owned());
            }
            Ok(Record { op: Op::Done, id, .. }) => {
                pending.remove(&id);
            }
            Ok(rec) => {
                tracing::warn!("queue file {} line {}: incomplete entry {} skipped", path.display(), n + 1, rec.id)
            }
            Err(e) if !text.trim().is_empty() => {
                tracing::warn!("queue file {} line {}: unreadable entry skipped ({e})", path.display(), n + 1);
            }
            Err(_) => {}
        }
    }
    Ok((pending, max_id + 1))
}

/// Replaces the file atomically with only `pending`, and opens it for appending.
fn rewrite(path: &Path, pending: &BTreeMap<u64, String>) -> std::io::Result<File> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        for line in pending.values() {
            f.write_all(line.as_bytes())?;
            f.write_all(b"\n")?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str) -> ObjectEvent {
        ObjectEvent {
            kind: EventType::Modified,
            key: key.into(),
            object: format!("{{\"metadata\":{{\"name\":\"{key}\"}}}}").into(),
            old: None,
            finalizer: FinalizerAction::None,
            id: 0,
            hook: true,
        }
    }

    #[test]
    fn unfinished_events_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let (j, old) = Journal::open(&path, false).unwrap();
        assert!(old.is_empty());
        let (mut a, mut b, mut c) = (ev("a"), ev("b"), ev("c"));
        j.add(&mut a).unwrap();
        j.add(&mut b).unwrap();
        j.add(&mut c).unwrap();
        j.done(b.id).unwrap();
        drop(j);
        let (_, back) = Journal::open(&path, false).unwrap();
        let keys: Vec<_> = back.iter().map(|e| e.key.to_string()).collect();
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(back[0].object, a.object);
        assert_eq!(back[0].kind, EventType::Modified);
    }

    #[test]
    fn reset_discards_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let (j, _) = Journal::open(&path, false).unwrap();
        j.add(&mut ev("a")).unwrap();
        drop(j);
        assert!(Journal::open(&path, true).unwrap().1.is_empty());
        assert!(Journal::open(&path, false).unwrap().1.is_empty());
    }

    #[test]
    fn a_torn_last_line_and_garbage_are_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let (j, _) = Journal::open(&path, false).unwrap();
        j.add(&mut ev("a")).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"\x00\xffgarbage\n{\"op\":\"add\",\"id\":7,\"type\":\"ADDED\",\"key\":\"b\",\"obj").unwrap();
        drop(f);
        let (j, back) = Journal::open(&path, false).unwrap();
        assert_eq!(back.iter().map(|e| e.key.to_string()).collect::<Vec<_>>(), ["a"]);
        let mut next = ev("c");
        j.add(&mut next).unwrap();
        assert!(next.id > back[0].id, "ids keep growing");
    }

    #[test]
    fn ids_continue_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let (j, _) = Journal::open(&path, false).unwrap();
        let mut a = ev("a");
        j.add(&mut a).unwrap();
        drop(j);
        let (j, back) = Journal::open(&path, false).unwrap();
        let mut b = ev("b");
        j.add(&mut b).unwrap();
        assert!(b.id > back[0].id);
    }
}
