//! Delivers one event to its hooks, in three jobs kept apart:
//! [`plan`] decides what runs (the event's handlers, `<event>.d/`, field hooks, the old
//! object), [`attempt`] runs one hook (spawn, timeout, retries, its outcome), and
//! [`aftermath`] does what follows (finalizer edits, the durable queue, HookFailed
//! Events). [`files`] writes the event files they share. This module strings them
//! together: the object is parsed once, flattened once, and its files written once
//! for all of an event's handlers.

pub mod aftermath;
pub mod attempt;
pub mod files;
pub mod plan;

use crate::model::event::{EventType, FinalizerAction, ObjectEvent};
use crate::model::flatten::{self, Flattened};
use crate::runtime::hooks::HookDir;
use crate::runtime::hooks::env::{Environment, Settings};
use crate::runtime::queue::Job;
use aftermath::Aftermath;
use attempt::{Attempts, Ran};
use files::EventFiles;
use plan::{Candidates, Memory, Run};
use serde_json::Value;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

impl Job for ObjectEvent {
    fn key(&self) -> &Arc<str> {
        &self.key
    }
    fn coalesces_with(&self, waiting: &Self) -> bool {
        self.kind == EventType::Sync && waiting.kind == EventType::Sync
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// The hook succeeded, or there is no hook for this event.
    Done,
    /// The hook failed for good (permanent status or retries exhausted), or could not be run.
    /// The status is the last failed run's as a shell reports it (128 + signal when
    /// killed); None when it timed out, could not start, or the event could not be used.
    Failed(Option<i32>),
    /// Shutdown came first: the event was not handled.
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("the {0} hook failed: {1}")]
    Lifecycle(String, String),
}

pub struct Deliverer {
    pub hooks: HookDir,
    pub env: Environment,
    pub flatten: flatten::Options,
    pub attempts: Attempts,
    pub files: EventFiles,
    pub after: Aftermath,
    memory: Memory,
}

impl Deliverer {
    pub fn new(
        hooks: HookDir,
        settings: Settings,
        flatten: flatten::Options,
        attempts: Attempts,
        event_dir: PathBuf,
        after: Aftermath,
    ) -> Self {
        Deliverer {
            hooks,
            env: Environment::new(&settings),
            flatten,
            attempts,
            files: EventFiles::new(event_dir),
            after,
            memory: Memory::default(),
        }
    }

    /// Delivers, then does what the outcome asks of the finalizer and the durable queue.
    pub async fn handle(&self, ev: &ObjectEvent) -> Delivered {
        if ev.finalizer == FinalizerAction::Add {
            self.after.edit_finalizer(ev, true).await;
        }
        if !ev.hook {
            return Delivered::Done;
        }
        let delivered = self.deliver(ev).await;
        if ev.finalizer == FinalizerAction::Remove {
            match delivered {
                Delivered::Done => self.after.edit_finalizer(ev, false).await,
                _ => tracing::error!(
                    "{}: finalizer kept because the deleted hook did not succeed; see docs/HOOKS.md to remove it by hand",
                    ev.key
                ),
            }
        }
        if delivered != Delivered::Interrupted {
            self.after.journal_done(ev);
        }
        delivered
    }

    /// Runs the event's handlers and field hooks with retries, exactly as the runner does
    /// for a watch event; `operator replay` calls this too. The object is parsed once,
    /// here, and only when something is to run. The old object is `ev.old` if given,
    /// else the object this deliverer last delivered for the key.
    pub async fn deliver(&self, ev: &ObjectEvent) -> Delivered {
        let old = self.memory.old_object(ev);
        let candidates = Candidates::of(&self.hooks, ev.kind);
        for e in &candidates.problems {
            tracing::error!("{e} (for {} of {}: skipped, the other handlers run)", ev.kind.as_str(), ev.key);
        }
        let result = if candidates.problems.is_empty() { Delivered::Done } else { Delivered::Failed(None) };
        if candidates.is_empty() {
            if candidates.problems.is_empty() {
                tracing::debug!("No event handler exists for event {}. Ignoring.", ev.kind.as_str());
            }
            self.memory.remember(ev);
            return result;
        }
        let Some(object) = plan::parse(ev, &ev.object, "") else { return Delivered::Failed(None) };
        let runs = candidates.runs(ev, &object, old.as_deref());
        if runs.is_empty() {
            tracing::debug!("{} {}: no field hook's field changed", ev.kind.as_str(), ev.key);
            self.memory.remember(ev);
            return result;
        }
        let outcome = self.run_all(ev, &object, old.as_deref(), runs).await;
        if outcome != Delivered::Interrupted {
            self.memory.remember(ev);
        }
        if outcome == Delivered::Done { result } else { outcome }
    }

    /// Flattens once, writes the event files once, then runs each handler in order.
    async fn run_all(&self, ev: &ObjectEvent, object: &Value, old: Option<&str>, runs: Vec<Run>) -> Delivered {
        let Some(flat) = self.flatten(ev, object) else { return Delivered::Failed(None) };
        let files = match self.files.write(ev, old) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!("cannot write the event file for {}: {e}", ev.key);
                return Delivered::Failed(None);
            }
        };
        let reserve: usize = files.0.iter().map(|(k, v)| env_bytes_of(k, v)).sum::<usize>()
            + runs.iter().map(|r| r.extra.iter().map(|(k, v)| env_bytes_of(k, v)).sum::<usize>()).max().unwrap_or(0);
        let (vars, dropped) = self.env.event_vars(flat.vars, reserve);
        if !dropped.is_empty() {
            tracing::warn!(
                "{}: left out {} (the environment would be too large; see EVENT_FILE)",
                ev.key,
                dropped.join(", ")
            );
        }
        let names: Vec<&str> = runs.iter().map(|r| r.handler.name.as_str()).collect();
        tracing::debug!("{} {}: running {}", ev.kind.as_str(), ev.key, names.join(", "));
        self.run_in_order(ev, object, &vars, &files.0, runs).await
    }

    async fn run_in_order(
        &self,
        ev: &ObjectEvent,
        object: &Value,
        vars: &Arc<[(OsString, OsString)]>,
        files: &[(OsString, OsString)],
        runs: Vec<Run>,
    ) -> Delivered {
        let mut result = Delivered::Done;
        let total = runs.len();
        for (i, run) in runs.into_iter().enumerate() {
            tracing::debug!("{} {}: {} runs ({})", ev.kind.as_str(), ev.key, run.handler.name, run.why);
            let mut extra = files.to_vec();
            extra.extend(run.extra);
            let cmd = self.env.command(run.handler.path, vars.clone(), extra);
            match self.attempts.run(&cmd, &run.handler.name, &ev.key).await {
                Ran::Succeeded => {}
                Ran::Failed { status, why } => {
                    self.after.hook_failed(object, &why).await;
                    result = Delivered::Failed(status);
                }
                Ran::Interrupted => return Delivered::Interrupted,
                Ran::Stopped { why } => {
                    self.after.hook_failed(object, &why).await;
                    if i + 1 < total {
                        tracing::warn!(
                            "{}: {} exited with {}: the {} remaining handler(s) of {} are not run",
                            ev.key,
                            run.handler.name,
                            crate::model::outcome::PERMANENT_FAILURE,
                            total - i - 1,
                            ev.kind.as_str()
                        );
                    }
                    return Delivered::Failed(None);
                }
            }
        }
        result
    }

    fn flatten(&self, ev: &ObjectEvent, object: &Value) -> Option<Flattened> {
        match flatten::flatten_object(ev.kind.as_str(), object, &self.flatten) {
            Ok(f) => {
                for c in &f.collisions {
                    tracing::debug!("{}: {} comes from {}; {} is left out", ev.key, c.name, c.kept, c.dropped);
                }
                for r in &f.rejected {
                    tracing::warn!("{}: left out {} because {} (see EVENT_FILE)", ev.key, r.name, r.reason);
                }
                Some(f)
            }
            Err(e) => {
                tracing::error!("event {} of {} cannot be flattened: {e}", ev.kind.as_str(), ev.key);
                None
            }
        }
    }

    /// `<hooks>/startup` or `<hooks>/shutdown`: the runner's variables only, no event.
    /// Startup is retried like an event hook; shutdown runs once, within `limits`.
    pub async fn run_lifecycle(
        &self,
        name: &str,
        limits: crate::runtime::hooks::spawn::Limits,
        retry: bool,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<(), DeliverError> {
        let lifecycle = |why: String| DeliverError::Lifecycle(name.to_string(), why);
        let program = match self.hooks.find(name) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(e) => return Err(lifecycle(e.to_string())),
        };
        let cmd = self.env.command(program, Vec::new().into(), Vec::new());
        self.attempts.run_lifecycle(&cmd, name, retry, limits, stop).await.map_err(lifecycle)
    }
}

/// Bytes a `NAME=value` variable takes in the environment block.
fn env_bytes_of(name: &OsString, value: &OsString) -> usize {
    name.len() + value.len() + 2 + 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::retry::RetryPolicy;
    use crate::runtime::hooks::spawn::Limits;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    /// A deliverer over a temporary hooks directory whose hooks append to `log`.
    struct Fixture {
        dir: tempfile::TempDir,
        deliverer: Deliverer,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("events")).unwrap();
            let settings = Settings {
                inherited: vec![("PATH".into(), std::env::var_os("PATH").unwrap())],
                hook_env: vec![("LOG".into(), dir.path().join("log").display().to_string())],
                arg_max: 2 * 1024 * 1024,
                ..Settings::default()
            };
            let attempts = Attempts {
                retry: RetryPolicy {
                    retries: 3,
                    backoff_min: Duration::from_millis(1),
                    backoff_max: Duration::from_millis(2),
                },
                limits: Limits { timeout: Duration::from_secs(10), grace: Duration::from_secs(1) },
                stop: CancellationToken::new(),
            };
            let deliverer = Deliverer::new(
                HookDir::new(dir.path()),
                settings,
                flatten::Options::default(),
                attempts,
                dir.path().join("events"),
                Aftermath::default(),
            );
            Fixture { dir, deliverer }
        }

        fn hook(&self, name: &str, body: &str) {
            use std::os::unix::fs::PermissionsExt;
            let path = self.dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        fn log(&self) -> Vec<String> {
            let text = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            text.lines().map(str::to_string).collect()
        }

        async fn deliver(&self, kind: EventType, data: &str) -> Delivered {
            let object = format!(r#"{{"metadata":{{"name":"o","namespace":"ns"}},"data":{data}}}"#);
            self.deliverer.deliver(&ObjectEvent::new(kind, "ns/o".into(), object.into())).await
        }
    }

    #[tokio::test]
    async fn handlers_run_in_order_and_a_retried_one_does_not_rerun_those_before_it() {
        let f = Fixture::new();
        f.hook("added", "echo added >> \"$LOG\"");
        f.hook("added.d/20-b", "echo b >> \"$LOG\"");
        f.hook("added.d/10-flaky", "echo flaky >> \"$LOG\"; [ $(grep -c flaky \"$LOG\") -ge 2 ]");
        assert_eq!(f.deliver(EventType::Added, "{}").await, Delivered::Done);
        assert_eq!(f.log(), ["added", "flaky", "flaky", "b"]);
    }

    #[tokio::test]
    async fn exit_100_stops_the_remaining_handlers_and_fails_the_event() {
        let f = Fixture::new();
        f.hook("modified", "echo first >> \"$LOG\"; exit 100");
        f.hook("modified.d/x", "echo never >> \"$LOG\"");
        assert!(matches!(f.deliver(EventType::Modified, "{}").await, Delivered::Failed(_)));
        assert_eq!(f.log(), ["first"]);
    }

    #[tokio::test]
    async fn a_handler_out_of_retries_fails_the_event_but_the_next_still_runs() {
        let f = Fixture::new();
        f.hook("added.d/1", "echo one >> \"$LOG\"; exit 1");
        f.hook("added.d/2", "echo two >> \"$LOG\"");
        assert!(matches!(f.deliver(EventType::Added, "{}").await, Delivered::Failed(_)));
        assert_eq!(f.log(), ["one", "one", "one", "one", "two"]);
    }

    #[tokio::test]
    async fn old_file_holds_the_last_delivered_object_and_is_absent_for_added() {
        let f = Fixture::new();
        let body = "if [ -n \"${EVENT_OLD_FILE:-}\" ]; then cat \"$EVENT_OLD_FILE\" >> \"$LOG\"; echo >> \"$LOG\"; \
                    else echo none >> \"$LOG\"; fi";
        for h in ["added", "modified", "deleted"] {
            f.hook(h, body);
        }
        f.deliver(EventType::Added, r#"{"a":"1"}"#).await;
        f.deliver(EventType::Modified, r#"{"a":"2"}"#).await;
        f.deliver(EventType::Deleted, r#"{"a":"2"}"#).await;
        f.deliver(EventType::Modified, r#"{"a":"3"}"#).await;
        let log = f.log();
        assert_eq!(log[0], "none");
        assert!(log[1].contains(r#""a":"1""#), "{}", log[1]);
        assert!(log[2].contains(r#""a":"2""#), "{}", log[2]);
        assert_eq!(log[3], "none", "nothing is remembered after DELETED");
    }

    #[tokio::test]
    async fn an_old_object_given_with_the_event_is_used() {
        let f = Fixture::new();
        f.hook("modified", "cat \"$EVENT_OLD_FILE\" >> \"$LOG\"");
        let ev = ObjectEvent {
            old: Some(r#"{"given":1}"#.into()),
            ..ObjectEvent::new(EventType::Modified, "ns/o".into(), "{}".into())
        };
        assert_eq!(f.deliverer.deliver(&ev).await, Delivered::Done);
        assert_eq!(f.log(), [r#"{"given":1}"#]);
    }

    #[tokio::test]
    async fn field_hooks_run_after_the_handlers_and_only_for_a_changed_field() {
        let f = Fixture::new();
        f.hook("modified", "echo modified >> \"$LOG\"");
        f.hook("field/data.a", "echo \"$EVENT_FIELD $EVENT_FIELD_OLD $EVENT_FIELD_NEW\" >> \"$LOG\"");
        f.hook("field/data.b", "echo \"$EVENT_FIELD $EVENT_FIELD_OLD $EVENT_FIELD_NEW\" >> \"$LOG\"");
        f.deliver(EventType::Added, r#"{"a":"1"}"#).await;
        f.deliver(EventType::Modified, r#"{"a":"2"}"#).await;
        f.deliver(EventType::Sync, r#"{"a":"3"}"#).await;
        assert_eq!(f.log(), [r#"data.a null "1""#, "modified", r#"data.a "1" "2""#]);
    }
}
