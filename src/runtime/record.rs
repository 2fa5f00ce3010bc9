//! `--record FILE`: appends every event delivered to a hook to a file, one JSON line each, as `operator replay` reads them.

use crate::model::event::ObjectEvent;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot open the record file '{path}'")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The record file, shared by the workers; a line is written with one `write`, so
/// lines of parallel deliveries never interleave.
pub struct Record {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Record {
    /// Opens `path` for appending; created 0600, since objects may hold what others must not read.
    pub fn open(path: &Path) -> Result<Record, RecordError> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| RecordError::Open { path: path.to_path_buf(), source })?;
        Ok(Record { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    /// Appends the event if a hook runs for it; a failed write is logged and delivery goes on.
    pub fn append(&self, ev: &ObjectEvent) {
        if !ev.hook {
            return;
        }
        let mut text = line(ev);
        text.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(text.as_bytes()) {
            tracing::error!("cannot record event {} of {} in {}: {e}", ev.kind.as_str(), ev.key, self.path.display());
        }
    }
}

/// The event as its hook gets it in EVENT_FILE, byte for byte: the object's JSON is
/// compact, so the event is one line.
pub fn line(ev: &ObjectEvent) -> String {
    format!("{{\"type\":\"{}\",\"object\":{}}}", ev.kind.as_str(), ev.object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::{EventType, FinalizerAction};

    fn event(kind: EventType, object: &str, hook: bool) -> ObjectEvent {
        ObjectEvent {
            kind,
            key: "ns/a".into(),
            object: object.into(),
            old: None,
            finalizer: FinalizerAction::None,
            id: 0,
            hook,
        }
    }

    #[test]
    fn every_delivered_event_is_one_line_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.jsonl");
        let r = Record::open(&path).unwrap();
        r.append(&event(EventType::Added, r#"{"metadata":{"name":"a","annotations":{"x":"1\n2"}}}"#, true));
        r.append(&event(EventType::Modified, r#"{"metadata":{"name":"a"}}"#, true));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], r#"{"type":"ADDED","object":{"metadata":{"name":"a","annotations":{"x":"1\n2"}}}}"#);
        assert!(lines[1].starts_with(r#"{"type":"MODIFIED""#));
    }

    #[test]
    fn events_without_a_hook_are_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.jsonl");
        Record::open(&path).unwrap().append(&event(EventType::Added, "{}", false));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn an_unwritable_record_file_is_named() {
        let err = Record::open(Path::new("/no/such/dir/rec.jsonl")).err().unwrap().to_string();
        assert!(err.contains("/no/such/dir/rec.jsonl"), "{err}");
    }
}
