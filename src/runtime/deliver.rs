//! Delivers one event to its hook: variables, event file, retries with backoff, failure reporting.

use crate::cluster::finalizer::Finalizers;
use crate::cluster::report::Reporter;
use crate::model::event::{EventType, FinalizerAction, ObjectEvent};
use crate::model::fields::{self, FieldPath};
use crate::model::flatten::{self, Flattened};
use crate::model::outcome::{Outcome, PERMANENT_FAILURE};
use crate::model::retry::{RetryPolicy, backoff};
use crate::runtime::hooks::env::{Environment, HookCommand, Settings};
use crate::runtime::hooks::spawn::{self, Limits};
use crate::runtime::hooks::{Handler, HookDir};
use crate::runtime::journal::Journal;
use crate::runtime::queue::Job;
use serde_json::Value;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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

pub struct Deliverer {
    pub hooks: HookDir,
    pub env: Environment,
    pub flatten: flatten::Options,
    pub retry: RetryPolicy,
    pub limits: Limits,
    pub event_dir: PathBuf,
    pub stop: CancellationToken,
    pub reporter: Option<Reporter>,
    pub journal: Option<Arc<Journal>>,
    pub finalizers: Option<Finalizers>,
    /// The object last given to each key's ADDED or MODIFIED handlers (EVENT_OLD_FILE).
    /// It shares its text with the watch's tracker, so it costs no memory of its own
    /// unless the two differ.
    delivered: Mutex<HashMap<Arc<str>, Arc<str>>>,
    seq: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("the {0} hook failed: {1}")]
    Lifecycle(String, String),
}

impl Deliverer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hooks: HookDir,
        settings: Settings,
        flatten: flatten::Options,
        retry: RetryPolicy,
        limits: Limits,
        event_dir: PathBuf,
        stop: CancellationToken,
        reporter: Option<Reporter>,
    ) -> Self {
        Deliverer {
            hooks,
            env: Environment::new(&settings),
            flatten,
            retry,
            limits,
            event_dir,
            stop,
            reporter,
            journal: None,
            finalizers: None,
            delivered: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
        }
    }

    /// Delivers, then does what the outcome asks of the finalizer and the durable queue.
    pub async fn handle(&self, ev: &ObjectEvent) -> Delivered {
        if ev.finalizer == FinalizerAction::Add {
            self.edit_finalizer(ev, true).await;
        }
        if !ev.hook {
            return Delivered::Done;
        }
        let delivered = self.deliver(ev).await;
        if ev.finalizer == FinalizerAction::Remove {
            match delivered {
                Delivered::Done => self.edit_finalizer(ev, false).await,
                _ => tracing::error!(
                    "{}: finalizer kept because the deleted hook did not succeed; see docs/HOOKS.md to remove it by hand",
                    ev.key
                ),
            }
        }
        if let (Some(j), true, false) = (&self.journal, ev.id != 0, delivered == Delivered::Interrupted)
            && let Err(e) = j.done(ev.id)
        {
            tracing::error!("{e}");
        }
        delivered
    }

    /// The finalizer is edited by name: the key is `namespace/name` (or `name`), so the
    /// object need not be parsed for it.
    async fn edit_finalizer(&self, ev: &ObjectEvent, add: bool) {
        let Some(f) = &self.finalizers else { return };
        let (verb, done) = if add { ("add", "added") } else { ("remove", "removed") };
        let (ns, name) = match ev.key.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, &*ev.key),
        };
        match f.edit(ns, name, add).await {
            Ok(()) => tracing::debug!("{}: finalizer {} {done}", ev.key, f.name),
            Err(e) => tracing::error!("{}: cannot {verb} finalizer {}: {e}", ev.key, f.name),
        }
    }

    /// Runs the event's handlers and field hooks with retries, exactly as the runner does
    /// for a watch event; `operator replay` calls this too. The object is parsed once,
    /// here, and only when something is to run. The old object is `ev.old` if given,
    /// else the object this deliverer last delivered for the key.
    pub async fn deliver(&self, ev: &ObjectEvent) -> Delivered {
        let old = self.old_object(ev);
        let (handlers, mut problems) = self.hooks.handlers(ev.kind.hook_name());
        let (fields, field_problems) = match ev.kind {
            EventType::Added | EventType::Modified => self.hooks.field_hooks(),
            _ => (Vec::new(), Vec::new()),
        };
        problems.extend(field_problems);
        for e in &problems {
            tracing::error!("{e} (for {} of {}: skipped, the other handlers run)", ev.kind.as_str(), ev.key);
        }
        let mut result = if problems.is_empty() { Delivered::Done } else { Delivered::Failed(None) };
        if handlers.is_empty() && fields.is_empty() {
            if problems.is_empty() {
                tracing::debug!("No event handler exists for event {}. Ignoring.", ev.kind.as_str());
            }
            self.remember(ev);
            return result;
        }
        let Some(object) = parse(ev, &ev.object, "") else { return Delivered::Failed(None) };
        let why = format!("a handler of {}", ev.kind.as_str());
        let mut runs: Vec<Run> = handlers.into_iter().map(|h| Run::of(h, why.clone())).collect();
        runs.extend(self.field_runs(ev, fields, old.as_deref(), &object));
        if runs.is_empty() {
            tracing::debug!("{} {}: no field hook's field changed", ev.kind.as_str(), ev.key);
            self.remember(ev);
            return result;
        }
        let outcome = self.run_all(ev, &object, old.as_deref(), runs).await;
        if outcome != Delivered::Interrupted {
            self.remember(ev);
        }
        if outcome != Delivered::Done {
            result = outcome;
        }
        result
    }

    /// EVENT_OLD_FILE's object: none for ADDED (a new object) and SYNC.
    fn old_object(&self, ev: &ObjectEvent) -> Option<Arc<str>> {
        match ev.kind {
            EventType::Modified | EventType::Deleted => {
                ev.old.clone().or_else(|| self.delivered.lock().expect("delivered lock").get(&ev.key).cloned())
            }
            EventType::Added | EventType::Sync => None,
        }
    }

    /// What the hooks of this key were given last: an ADDED or MODIFIED object.
    fn remember(&self, ev: &ObjectEvent) {
        let mut delivered = self.delivered.lock().expect("delivered lock");
        match ev.kind {
            EventType::Added | EventType::Modified => {
                delivered.insert(ev.key.clone(), ev.object.clone());
            }
            EventType::Deleted => {
                delivered.remove(&ev.key);
            }
            EventType::Sync => {}
        }
    }

    /// The field hooks whose field differs between the old object and this one.
    fn field_runs(
        &self,
        ev: &ObjectEvent,
        hooks: Vec<(Handler, FieldPath)>,
        old: Option<&str>,
        object: &Value,
    ) -> Vec<Run> {
        if hooks.is_empty() {
            return Vec::new();
        }
        let old = old.and_then(|text| parse(ev, text, "previous "));
        let mut runs = Vec::new();
        for (handler, path) in hooks {
            let Some(change) = fields::change(&path, old.as_ref(), object) else {
                tracing::debug!("{}: {} unchanged, {} not run", ev.key, path.text, handler.name);
                continue;
            };
            let why = format!("{} changed: {} -> {}", path.text, short(&change.old), short(&change.new));
            let mut run = Run::of(handler, why);
            run.extra.push(("EVENT_FIELD".into(), path.text.into()));
            for (name, value) in [("EVENT_FIELD_OLD", change.old), ("EVENT_FIELD_NEW", change.new)] {
                if value.len() > MAX_FIELD_VALUE {
                    tracing::warn!("{}: {name} for {} left out: longer than 64 KiB", ev.key, run.handler.name);
                } else {
                    run.extra.push((name.into(), value.into()));
                }
            }
            runs.push(run);
        }
        runs
    }

    /// Flattens once, writes the event files once, then runs each handler in order.
    async fn run_all(&self, ev: &ObjectEvent, object: &Value, old: Option<&str>, runs: Vec<Run>) -> Delivered {
        let Some(flat) = self.flatten(ev, object) else { return Delivered::Failed(None) };
        let files = match self.write_files(ev, old) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!("cannot write the event file for {}: {e}", ev.key);
                return Delivered::Failed(None);
            }
        };
        let reserve: usize = files.iter().map(|(k, v)| env_bytes_of(k, v)).sum::<usize>()
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
        let result = self.run_in_order(ev, object, &vars, &files, runs).await;
        for (_, path) in &files {
            let _ = std::fs::remove_file(path);
        }
        result
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
            match self.run_with_retries(&cmd, &run.handler.name, ev, object).await {
                Ran::Succeeded => {}
                Ran::Failed(status) => result = Delivered::Failed(status),
                Ran::Interrupted => return Delivered::Interrupted,
                Ran::Stopped => {
                    if i + 1 < total {
                        tracing::warn!(
                            "{}: {} exited with {PERMANENT_FAILURE}: the {} remaining handler(s) of {} are not run",
                            ev.key,
                            run.handler.name,
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

    /// EVENT_FILE, and EVENT_OLD_FILE when there is an old object.
    fn write_files(&self, ev: &ObjectEvent, old: Option<&str>) -> std::io::Result<Vec<(OsString, OsString)>> {
        let mut files = vec![("EVENT_FILE".into(), self.write_event_file(ev)?.into())];
        if let Some(old) = old {
            match self.write_private_file("old", old.as_bytes()) {
                Ok(path) => files.push(("EVENT_OLD_FILE".into(), path.into())),
                Err(e) => {
                    let _ = std::fs::remove_file(&files[0].1);
                    return Err(e);
                }
            }
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
        self.write_private_file("event", &text)
    }

    fn write_private_file(&self, what: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.event_dir.join(format!("{what}-{n}.json"));
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        f.write_all(bytes)?;
        Ok(path)
    }

    /// One handler, retried on its own; an INFO line with the duration for every run.
    async fn run_with_retries(&self, cmd: &HookCommand, name: &str, ev: &ObjectEvent, object: &Value) -> Ran {
        let label = format!("{name} {}", ev.key);
        let mut attempt: u32 = 0;
        loop {
            let started = Instant::now();
            let outcome = spawn::run(cmd, &label, self.limits, &self.stop).await;
            let took = started.elapsed();
            tracing::info!("hook {name} for {} {} in {}", ev.key, outcome.describe(), millis(took));
            crate::runtime::metrics::hook_run(name, &outcome, took);
            match outcome {
                Outcome::Succeeded => return Ran::Succeeded,
                Outcome::Interrupted => return Ran::Interrupted,
                _ => {}
            }
            let what = format!("hook {name} for {} {}", ev.key, outcome.describe());
            let stop = matches!(outcome, Outcome::Failed(PERMANENT_FAILURE));
            let permanent = stop || matches!(outcome, Outcome::NotStarted(_));
            if permanent || attempt >= self.retry.retries {
                let why = if permanent { "not retried" } else { "no retries left" };
                tracing::error!("{what}; {why}");
                self.report(object, &format!("{what}; {why}")).await;
                return if stop { Ran::Stopped } else { Ran::Failed(shell_status(&outcome)) };
            }
            let delay = backoff(&self.retry, attempt, rand::random::<f64>());
            crate::runtime::metrics::hook_retry(name);
            tracing::error!("{what}; retry {} of {} in {}", attempt + 1, self.retry.retries, millis(delay));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => return Ran::Interrupted,
            }
            attempt += 1;
        }
    }

    async fn report(&self, object: &Value, message: &str) {
        if let Some(reporter) = &self.reporter {
            reporter.warn(object, "HookFailed", message).await;
        }
    }

    /// `<hooks>/startup` or `<hooks>/shutdown`: the runner's variables only, no event.
    /// Startup is retried like an event hook; shutdown runs once, within `limits`.
    pub async fn run_lifecycle(
        &self,
        name: &str,
        limits: Limits,
        retry: bool,
        stop: &CancellationToken,
    ) -> Result<(), DeliverError> {
        let program = match self.hooks.find(name) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(e) => return Err(DeliverError::Lifecycle(name.to_string(), e.to_string())),
        };
        let cmd = self.env.command(program.clone(), Vec::new().into(), Vec::new());
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let outcome = spawn::run(&cmd, name, limits, stop).await;
            tracing::info!("hook {name} {} in {}", outcome.describe(), millis(started.elapsed()));
            let what = match outcome {
                Outcome::Succeeded | Outcome::Interrupted => return Ok(()),
                Outcome::NotStarted(_) | Outcome::Failed(PERMANENT_FAILURE) => {
                    format!("{} {}; not retried", program.display(), outcome.describe())
                }
                _ if !retry => format!("{} {}", program.display(), outcome.describe()),
                _ if attempt >= self.retry.retries => {
                    format!("{} {}; no retries left", program.display(), outcome.describe())
                }
                _ => {
                    let delay = backoff(&self.retry, attempt, rand::random::<f64>());
                    tracing::error!(
                        "hook {} {}; retry {} of {} in {}",
                        program.display(),
                        outcome.describe(),
                        attempt + 1,
                        self.retry.retries,
                        millis(delay)
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => return Ok(()),
                    }
                    attempt += 1;
                    continue;
                }
            };
            return Err(DeliverError::Lifecycle(name.to_string(), what));
        }
    }
}

/// How one handler's runs ended.
enum Ran {
    Succeeded,
    /// Failed for good, with its status as a shell reports it; the event's other handlers still run.
    Failed(Option<i32>),
    /// Exited with 100: the event's remaining handlers are not run.
    Stopped,
    Interrupted,
}

/// One handler to run for an event, why, and the variables only it gets.
struct Run {
    handler: Handler,
    why: String,
    extra: Vec<(OsString, OsString)>,
}

impl Run {
    fn of(handler: Handler, why: String) -> Run {
        Run { handler, why, extra: Vec::new() }
    }
}

/// EVENT_FIELD_OLD and EVENT_FIELD_NEW longer than this are left out (see EVENT_FILE).
const MAX_FIELD_VALUE: usize = 64 * 1024;

fn parse(ev: &ObjectEvent, text: &str, which: &str) -> Option<Value> {
    match serde_json::from_str(text) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!("the {which}object of {} {} cannot be decoded: {e}", ev.kind.as_str(), ev.key);
            None
        }
    }
}

/// A value for a DEBUG line: at most 60 characters.
fn short(value: &str) -> String {
    match value.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &value[..i]),
        None => value.to_string(),
    }
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Bytes a `NAME=value` variable takes in the environment block.
fn env_bytes_of(name: &OsString, value: &OsString) -> usize {
    name.len() + value.len() + 2 + 8
}

/// A failed run's exit status as a shell reports it: the code, or 128 + the signal.
fn shell_status(outcome: &Outcome) -> Option<i32> {
    match outcome {
        Outcome::Failed(code) => Some(*code),
        Outcome::Killed(signal) => Some(128 + signal),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let retry = RetryPolicy {
                retries: 3,
                backoff_min: Duration::from_millis(1),
                backoff_max: Duration::from_millis(2),
            };
            let limits = Limits { timeout: Duration::from_secs(10), grace: Duration::from_secs(1) };
            let deliverer = Deliverer::new(
                HookDir::new(dir.path()),
                settings,
                flatten::Options::default(),
                retry,
                limits,
                dir.path().join("events"),
                CancellationToken::new(),
                None,
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

    #[test]
    fn a_failed_run_reports_its_status_as_a_shell_would() {
        assert_eq!(shell_status(&Outcome::Failed(7)), Some(7));
        assert_eq!(shell_status(&Outcome::Killed(9)), Some(137));
        assert_eq!(shell_status(&Outcome::TimedOut), None);
    }
}
