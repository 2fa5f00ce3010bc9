//! Hooks: finding the script for an event, describing its command as data, and running it.

pub mod env;
pub mod spawn;

use crate::model::fields::FieldPath;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook '{0}' is not executable: run chmod +x {0}")]
    NotExecutable(PathBuf),
    #[error("hook '{path}' cannot be read")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("field hook '{path}' has a bad name: {source}")]
    BadFieldPath {
        path: PathBuf,
        #[source]
        source: crate::model::fields::FieldPathError,
    },
}

/// One executable to run for an event, and its name relative to the hooks directory
/// (`added`, `added.d/20-label`, `field/spec.replicas`), which tags its log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub path: PathBuf,
    pub name: String,
}

/// The hooks directory.
#[derive(Debug, Clone)]
pub struct HookDir {
    dir: PathBuf,
}

impl HookDir {
    pub fn new(dir: &Path) -> Self {
        HookDir { dir: dir.to_path_buf() }
    }

    /// The hook for `name` (added, modified, deleted, sync, startup, shutdown); looked up
    /// for every event so hooks can be added or fixed while the runner runs.
    pub fn find(&self, name: &str) -> Result<Option<PathBuf>, HookError> {
        let path = self.dir.join(name);
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(HookError::Unreadable { path, source }),
        };
        if !meta.is_file() {
            return Ok(None);
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(HookError::NotExecutable(path));
        }
        Ok(Some(path))
    }

    /// `<event>`, then the files of `<event>.d/` in byte order of their names. What
    /// cannot be run is returned beside them, each naming its file.
    pub fn handlers(&self, event: &str) -> (Vec<Handler>, Vec<HookError>) {
        let mut found = Vec::new();
        let mut errors = Vec::new();
        match self.find(event) {
            Ok(Some(path)) => found.push(Handler { path, name: event.to_string() }),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        self.scan(&format!("{event}.d"), &mut found, &mut errors);
        (found, errors)
    }

    /// The field hooks (`field/<path>`) in byte order with their parsed paths.
    pub fn field_hooks(&self) -> (Vec<(Handler, FieldPath)>, Vec<HookError>) {
        let mut found = Vec::new();
        let mut errors = Vec::new();
        self.scan("field", &mut found, &mut errors);
        let mut hooks = Vec::with_capacity(found.len());
        for h in found {
            let file = h.name.strip_prefix("field/").unwrap_or(&h.name);
            match file.parse::<FieldPath>() {
                Ok(p) => hooks.push((h, p)),
                Err(source) => errors.push(HookError::BadFieldPath { path: h.path, source }),
            }
        }
        (hooks, errors)
    }

    /// The executables of a subdirectory in byte order; names starting with `.` (editor
    /// and swap files) and subdirectories are not hooks.
    fn scan(&self, sub: &str, found: &mut Vec<Handler>, errors: &mut Vec<HookError>) {
        let dir = self.dir.join(sub);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => return,
            Err(source) => return errors.push(HookError::Unreadable { path: dir, source }),
        };
        let mut names: Vec<std::ffi::OsString> =
            entries.filter_map(|e| e.ok().map(|e| e.file_name())).filter(|n| !n.as_bytes().starts_with(b".")).collect();
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            let name = format!("{sub}/{}", n.to_string_lossy());
            match self.find(&name) {
                Ok(Some(path)) => found.push(Handler { path, name }),
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(name: &str, mode: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    #[test]
    fn missing_hook_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(HookDir::new(dir.path()).find("added").unwrap().is_none());
    }

    #[test]
    fn executable_hook_is_found() {
        let dir = dir_with("added", 0o755);
        assert_eq!(HookDir::new(dir.path()).find("added").unwrap(), Some(dir.path().join("added")));
    }

    #[test]
    fn non_executable_hook_asks_for_chmod() {
        let dir = dir_with("added", 0o644);
        let err = HookDir::new(dir.path()).find("added").unwrap_err().to_string();
        assert!(err.contains("chmod +x"), "{err}");
    }

    fn write(dir: &Path, name: &str, mode: u32) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn names(handlers: &[Handler]) -> Vec<&str> {
        handlers.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn the_event_hook_comes_first_then_its_directory_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["added", "added.d/20-label", "added.d/10-a", "added.d/Z", "added.d/.swp", "modified.d/x"] {
            write(dir.path(), name, 0o755);
        }
        std::fs::create_dir(dir.path().join("added.d/sub")).unwrap();
        let (found, errors) = HookDir::new(dir.path()).handlers("added");
        assert_eq!(names(&found), ["added", "added.d/10-a", "added.d/20-label", "added.d/Z"]);
        assert!(errors.is_empty());
    }

    #[test]
    fn a_non_executable_handler_is_an_error_and_the_others_still_run() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "added.d/10-broken", 0o644);
        write(dir.path(), "added.d/20-ok", 0o755);
        let (found, errors) = HookDir::new(dir.path()).handlers("added");
        assert_eq!(names(&found), ["added.d/20-ok"]);
        assert!(errors[0].to_string().contains("added.d/10-broken"), "{}", errors[0]);
    }

    #[test]
    fn a_field_hook_with_a_bad_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "field/spec.replicas", 0o755);
        write(dir.path(), "field/spec..x", 0o755);
        let (found, errors) = HookDir::new(dir.path()).field_hooks();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.name, "field/spec.replicas");
        assert!(errors[0].to_string().contains("spec..x"), "{}", errors[0]);
    }

    #[test]
    fn a_directory_named_like_a_hook_is_not_a_hook() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("added")).unwrap();
        assert!(HookDir::new(dir.path()).find("added").unwrap().is_none());
    }
}
