//! The event files a hook reads: EVENT_FILE (`{"type":T,"object":O}`) and, when there
//! is an old object, EVENT_OLD_FILE. Private (0600) files in the runner's own
//! directory, written once per event and shared by all of its handlers.

use crate::model::event::ObjectEvent;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct EventFiles {
    dir: PathBuf,
    seq: AtomicU64,
}

/// The variables naming the files written for one event; the files go when it is dropped.
pub struct Written(pub Vec<(OsString, OsString)>);

impl Drop for Written {
    fn drop(&mut self) {
        for (_, path) in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl EventFiles {
    pub fn new(dir: PathBuf) -> EventFiles {
        EventFiles { dir, seq: AtomicU64::new(0) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// EVENT_FILE, and EVENT_OLD_FILE when there is an old object.
    pub fn write(&self, ev: &ObjectEvent, old: Option<&str>) -> std::io::Result<Written> {
        let mut files = Written(vec![("EVENT_FILE".into(), self.write_event_file(ev)?.into())]);
        if let Some(old) = old {
            files.0.push(("EVENT_OLD_FILE".into(), self.write_private("old", old.as_bytes())?.into()));
        }
        Ok(files)
    }

    /// `{"type":T,"object":O}` from the object's text as it is: no serializer, no parser.
    fn write_event_file(&self, ev: &ObjectEvent) -> std::io::Result<PathBuf> {
        let kind = ev.kind.as_str();
        let mut text = Vec::with_capacity(ev.object.len() + kind.len() + 24);
        text.extend_from_slice(b"{\"type\":\"");
        text.extend_from_slice(kind.as_bytes());
        text.extend_from_slice(b"\",\"object\":");
        text.extend_from_slice(ev.object.as_bytes());
        text.push(b'}');
        self.write_private("event", &text)
    }

    fn write_private(&self, what: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{what}-{n}.json"));
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        f.write_all(bytes)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::EventType;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_event_file_holds_type_and_object_and_only_its_owner_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = EventFiles::new(dir.path().into());
        let ev = ObjectEvent::new(EventType::Modified, "ns/o".into(), r#"{"a":1}"#.into());
        let written = files.write(&ev, Some(r#"{"a":0}"#)).unwrap();
        let (event, old) = (&written.0[0].1, &written.0[1].1);
        assert_eq!(std::fs::read_to_string(event).unwrap(), r#"{"type":"MODIFIED","object":{"a":1}}"#);
        assert_eq!(std::fs::read_to_string(old).unwrap(), r#"{"a":0}"#);
        assert_eq!(std::fs::metadata(event).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn the_files_are_removed_when_the_delivery_is_done_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let files = EventFiles::new(dir.path().into());
        let ev = ObjectEvent::new(EventType::Added, "ns/o".into(), "{}".into());
        drop(files.write(&ev, None).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
