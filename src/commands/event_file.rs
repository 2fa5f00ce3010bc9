//! The object of $EVENT_FILE, for subcommands that hooks run (`operator event`, `operator owner-ref`).

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The variable the runner sets for every hook.
pub const VAR: &str = "EVENT_FILE";

#[derive(Debug, thiserror::Error)]
pub enum EventFileError {
    #[error("EVENT_FILE is not set: run this from a hook")]
    NotInHook,
    #[error("cannot read EVENT_FILE '{path}'")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("EVENT_FILE '{path}' is not an event (JSON with an object): {reason}")]
    NotAnEvent { path: PathBuf, reason: String },
}

/// The path in $EVENT_FILE, if a hook runs us.
pub fn path() -> Option<PathBuf> {
    std::env::var_os(VAR).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The object of the hook's event: `.object` of $EVENT_FILE.
pub fn object() -> Result<Value, EventFileError> {
    read(&path().ok_or(EventFileError::NotInHook)?)
}

pub fn read(path: &Path) -> Result<Value, EventFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| EventFileError::Read { path: path.into(), source })?;
    let not_event = |reason: String| EventFileError::NotAnEvent { path: path.into(), reason };
    let event: Value = serde_json::from_str(&text).map_err(|e| not_event(e.to_string()))?;
    match event.get("object") {
        Some(o) if o.is_object() => Ok(o.clone()),
        _ => Err(not_event("no \"object\" in it".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn the_object_of_an_event_is_read() {
        let f = file(r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"p"}}}"#);
        assert_eq!(read(f.path()).unwrap()["metadata"]["name"], "p");
    }

    #[test]
    fn a_file_that_is_no_event_is_named_in_the_error() {
        let f = file(r#"{"type":"ADDED"}"#);
        let err = read(f.path()).unwrap_err().to_string();
        assert!(err.contains(&f.path().display().to_string()) && err.contains("no \"object\""), "{err}");
        assert!(read(file("not json").path()).is_err());
    }

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let err = read(Path::new("/no/such/event.json")).unwrap_err().to_string();
        assert!(err.contains("/no/such/event.json"), "{err}");
    }
}
