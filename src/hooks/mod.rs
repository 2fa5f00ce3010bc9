//! Hooks: finding the script for an event, describing its command as data, and running it.

pub mod env;
pub mod spawn;

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

    /// The hook for `name` (added, modified, deleted, sync); looked up for every event
    /// so hooks can be added or fixed while the runner runs.
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

    #[test]
    fn a_directory_named_like_a_hook_is_not_a_hook() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("added")).unwrap();
        assert!(HookDir::new(dir.path()).find("added").unwrap().is_none());
    }
}
