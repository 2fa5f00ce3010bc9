//! Batched hooks: `sync-all` once per `--resync` tick and `snapshot` after changes, each with every known object in one file.
//!
//! A per-object `sync` hook costs one process per object per period; a hook that
//! reconciles a thousand objects wants them all at once, so that it lists their
//! dependents once and writes in bulk (shell-operator's "snapshot" idea). The
//! watch hands each pass to a [`Feed`]; one task runs the hooks, one pass at a
//! time. Passes that come while it runs are merged into one: a slow hook never
//! builds a backlog, and the next run gets state taken after this one's writes
//! came back. Contract: docs/HOOKS.md, "sync-all and snapshot: every object in one run".

use crate::model::event::ObjectEvent;
use crate::model::outcome::Outcome;
use crate::model::outcome::PERMANENT_FAILURE;
use crate::model::retry::{RetryPolicy, backoff};
use crate::runtime::hooks::HookDir;
use crate::runtime::hooks::env::Environment;
use crate::runtime::hooks::spawn::{self, Limits};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The periodic hook's file name in the hooks directory.
pub const HOOK: &str = "sync-all";
/// The hook that runs after changes (and on every tick).
pub const SNAPSHOT: &str = "snapshot";
/// How long the watch gathers changes before it offers a snapshot: a burst of
/// creations becomes one run, and a lone change waits no longer than this.
pub const CHANGE_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("cannot write the {HOOK} event file {path}")]
    EventFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The objects of one pass (their JSON), in key order, and what asked for it: a
/// resync tick runs both hooks, a change only `snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pass {
    pub objects: Vec<Arc<str>>,
    pub tick: bool,
    pub change: bool,
}

impl Pass {
    pub fn from_events(events: &[ObjectEvent]) -> Pass {
        Pass { objects: events.iter().map(|e| e.object.clone()).collect(), tick: true, change: false }
    }

    pub fn changed(objects: Vec<Arc<str>>) -> Pass {
        Pass { objects, tick: false, change: true }
    }

    /// `{"type":"SYNC","objects":[…]}`: the objects are already JSON, so they are joined, not re-encoded.
    pub fn event_text(&self) -> String {
        let len: usize = self.objects.iter().map(|o| o.len() + 1).sum();
        let mut text = String::with_capacity(len + 32);
        text.push_str("{\"type\":\"SYNC\",\"objects\":[");
        for (i, object) in self.objects.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(object);
        }
        text.push_str("]}");
        text
    }
}

/// Where the watch hands over passes; the hooks' task takes the newest one when it is idle.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    waiting: Arc<std::sync::Mutex<Option<Pass>>>,
    wake: Arc<Notify>,
    hooks: Option<HookDir>,
}

impl Feed {
    /// Whether changes are wanted now: only a `snapshot` hook takes them, and a pass of
    /// every object costs a sort of all keys, which a burst of thousands of events would
    /// pay ten times a second for nothing.
    pub fn wants_changes(&self) -> bool {
        self.hooks.as_ref().is_none_or(|h| matches!(h.find(SNAPSHOT), Ok(Some(_))))
    }

    /// The newest objects win; a waiting tick is not lost to a change that came after it.
    pub fn offer(&self, mut pass: Pass) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = waiting.take() {
            pass.tick |= w.tick;
            pass.change |= w.change;
        }
        *waiting = Some(pass);
        drop(waiting);
        self.wake.notify_one();
    }

    /// A tick taken while a hook ran predates the run's writes and would start the
    /// next run at once, back to back with a slow hook: it is dropped, and the next
    /// tick runs. Changes gathered meanwhile stay.
    fn skip_ticks(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.as_ref().is_some_and(|w| w.tick) {
            tracing::debug!("the batched hooks ran longer than the resync period; a pass was skipped");
            match waiting.as_mut() {
                Some(w) if w.change => w.tick = false,
                _ => *waiting = None,
            }
        }
    }

    fn take(&self) -> Option<Pass> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Gives `feed` (if any) the pass made of `events` and returns them unchanged: the
/// watch loop calls this on every resync, so per-object `sync` hooks still run.
pub fn tap(feed: &Option<Feed>, events: Vec<ObjectEvent>) -> Vec<ObjectEvent> {
    if let Some(feed) = feed {
        feed.offer(Pass::from_events(&events));
    }
    events
}

/// What a run of the hooks needs; the same settings as every other hook.
#[derive(Debug, Clone)]
pub struct Batcher {
    pub hooks: HookDir,
    pub env: Environment,
    pub limits: Limits,
    pub retry: RetryPolicy,
    pub event_dir: PathBuf,
    /// Variable prefix (`EVENT`): the hook gets `<prefix>_TYPE=SYNC`.
    pub prefix: String,
    pub stop: CancellationToken,
}

/// A failed `snapshot` run waiting for its next attempt.
struct Retry {
    pass: Pass,
    attempt: u32,
    at: tokio::time::Instant,
}

impl Batcher {
    pub fn from_deliverer(d: &crate::runtime::deliver::Deliverer, prefix: &str) -> Batcher {
        Batcher {
            hooks: d.hooks.clone(),
            env: d.env.clone(),
            limits: d.attempts.limits,
            retry: d.attempts.retry,
            event_dir: d.files.dir().to_path_buf(),
            prefix: prefix.to_string(),
            stop: d.attempts.stop.clone(),
        }
    }

    /// Starts the task that runs the hooks for each pass; it ends on `stop`, after a
    /// running hook had its grace period (await the handle before removing event_dir).
    pub fn start(self) -> (Feed, JoinHandle<()>) {
        let feed = Feed { hooks: Some(self.hooks.clone()), ..Feed::default() };
        (feed.clone(), tokio::spawn(self.serve(feed)))
    }

    /// One pass at a time; a new pass replaces a pending retry, which starts the attempts over.
    async fn serve(self, feed: Feed) {
        let mut runs: u64 = 0;
        let mut retry: Option<Retry> = None;
        loop {
            let at = retry.as_ref().map(|r| r.at);
            let (pass, attempt) = tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = feed.wake.notified() => match feed.take() { Some(p) => (p, 0), None => continue },
                _ = sleep_until(at), if at.is_some() => {
                    let r = retry.take().expect("a retry is due");
                    (r.pass, r.attempt)
                }
            };
            runs += 1;
            retry = self.run_pass(pass, attempt, runs).await;
            feed.skip_ticks();
        }
    }

    /// Runs `snapshot` (for a change or a tick) and `sync-all` (for a tick) on one
    /// event file; a failed `snapshot` comes back as the retry to schedule.
    async fn run_pass(&self, pass: Pass, attempt: u32, n: u64) -> Option<Retry> {
        let snapshot = self.program(SNAPSHOT, &pass);
        let sync_all = if pass.tick { self.program(HOOK, &pass) } else { None };
        if snapshot.is_none() && sync_all.is_none() {
            return None;
        }
        let path = self.event_dir.join(format!("pass-{n}.json"));
        if let Err(e) = write_private(&path, &pass.event_text()) {
            tracing::error!("{e}");
            return None;
        }
        let mut outcome = None;
        if let Some(program) = snapshot {
            outcome = Some(self.run_hook(SNAPSHOT, &program, &path, pass.objects.len()).await);
        }
        if let Some(program) = sync_all {
            let o = self.run_hook(HOOK, &program, &path, pass.objects.len()).await;
            report_sync_all(&o, pass.objects.len());
        }
        let _ = std::fs::remove_file(&path);
        self.retry_after(outcome?, pass, attempt)
    }

    /// The hook's path, if the directory has it now (hooks may come and go).
    fn program(&self, hook: &str, pass: &Pass) -> Option<PathBuf> {
        match self.hooks.find(hook) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!("{e} (pass of {} objects skipped)", pass.objects.len());
                None
            }
        }
    }

    /// Runs one batched hook on the pass's event file.
    pub async fn run_hook(&self, hook: &str, program: &Path, path: &Path, objects: usize) -> Outcome {
        let vars = vec![(format!("{}_TYPE", self.prefix).into(), "SYNC".into())];
        let cmd = self.env.command(program.to_path_buf(), vars.into(), vec![("EVENT_FILE".into(), path.into())]);
        let started = Instant::now();
        let outcome = spawn::run(&cmd, hook, self.limits, &self.stop).await;
        if matches!(outcome, Outcome::Succeeded) {
            tracing::debug!("hook {hook} for {objects} objects took {:?}", started.elapsed());
        }
        outcome
    }

    /// What follows a `snapshot` run: nothing, or another attempt after the backoff.
    fn retry_after(&self, outcome: Outcome, pass: Pass, attempt: u32) -> Option<Retry> {
        let objects = pass.objects.len();
        let what = outcome.describe();
        match outcome {
            Outcome::Succeeded | Outcome::Interrupted => None,
            Outcome::NotStarted(_) | Outcome::Failed(PERMANENT_FAILURE) => {
                tracing::error!(
                    "hook {SNAPSHOT} for {objects} objects {what}; not retried, the next change runs it again"
                );
                None
            }
            _ if attempt + 1 >= self.retry.retries.max(1) => {
                tracing::error!(
                    "hook {SNAPSHOT} for {objects} objects {what}; gave up after {} attempts, the next change runs it again",
                    attempt + 1
                );
                None
            }
            _ => {
                let delay = backoff(&self.retry, attempt, rand::random::<f64>());
                tracing::warn!(
                    "hook {SNAPSHOT} for {objects} objects {what}; attempt {} of {}, retrying in {delay:?}",
                    attempt + 1,
                    self.retry.retries.max(1)
                );
                let pass = Pass { tick: false, change: true, ..pass };
                Some(Retry { pass, attempt: attempt + 1, at: tokio::time::Instant::now() + delay })
            }
        }
    }
}

pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn report_sync_all(outcome: &Outcome, objects: usize) {
    match outcome {
        Outcome::Succeeded | Outcome::Interrupted => {}
        other => tracing::error!(
            "hook {HOOK} for {objects} objects {}; not retried, the next pass runs it again",
            other.describe()
        ),
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), BatchError> {
    let err = |source| BatchError::EventFile { path: path.to_path_buf(), source };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::EventType;
    use crate::runtime::hooks::env::Settings;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    fn sync_event(key: &str, object: &str) -> ObjectEvent {
        ObjectEvent::new(EventType::Sync, key.into(), object.into())
    }

    fn batcher(dir: &Path, retries: u32) -> Batcher {
        let event_dir = dir.join("events");
        std::fs::create_dir(&event_dir).unwrap();
        std::fs::create_dir_all(dir.join("hooks")).unwrap();
        Batcher {
            hooks: HookDir::new(&dir.join("hooks")),
            env: Environment::new(&Settings { arg_max: 2 * 1024 * 1024, log_level: 1, ..Settings::default() }),
            limits: Limits { timeout: Duration::from_secs(10), grace: Duration::from_secs(1) },
            retry: RetryPolicy {
                retries,
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_millis(200),
            },
            event_dir,
            prefix: "EVENT".into(),
            stop: CancellationToken::new(),
        }
    }

    /// Writes the hook `name` into the hooks directory.
    fn hook(dir: &Path, name: &str, body: &str) {
        let path = dir.join("hooks").join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A hook that appends its name and the number of commas in its event file to `log`, then exits `status`.
    fn counting(log: &Path, name: &str, status: i32) -> String {
        format!(
            "#!/bin/sh\nprintf '%s %s\\n' {name} \"$(tr -cd , < \"$EVENT_FILE\" | wc -c)\" >> '{}'\nexit {status}\n",
            log.display()
        )
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
    }

    fn pass(n: usize, tick: bool) -> Pass {
        Pass { objects: (0..n).map(|i| Arc::from(i.to_string())).collect(), tick, change: !tick }
    }

    /// Runs the batcher while `drive` offers passes, then stops it.
    async fn serve(b: Batcher, drive: impl AsyncFnOnce(&Feed)) {
        let stop = b.stop.clone();
        let (feed, task) = b.start();
        drive(&feed).await;
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn the_event_file_is_one_json_document_with_every_object_in_order() {
        let pass = Pass::from_events(&[sync_event("ns/a", r#"{"n":"a"}"#), sync_event("ns/b", r#"{"n":"b"}"#)]);
        let value: serde_json::Value = serde_json::from_str(&pass.event_text()).unwrap();
        assert_eq!(value, serde_json::json!({"type": "SYNC", "objects": [{"n": "a"}, {"n": "b"}]}));
    }

    #[test]
    fn an_empty_pass_is_an_empty_list() {
        let value: serde_json::Value = serde_json::from_str(&Pass::default().event_text()).unwrap();
        assert_eq!(value["objects"], serde_json::json!([]));
    }

    #[test]
    fn tap_passes_the_events_through_and_feeds_the_newest_pass_only() {
        let feed = Some(Feed::default());
        let first = tap(&feed, vec![sync_event("ns/a", "1")]);
        assert_eq!(first.len(), 1);
        tap(&feed, vec![sync_event("ns/a", "2"), sync_event("ns/b", "3")]);
        let waiting = feed.as_ref().unwrap().take().unwrap();
        assert_eq!(waiting.objects, vec![Arc::<str>::from("2"), Arc::from("3")]);
        assert!(waiting.tick && !waiting.change);
        assert_eq!(tap(&None, first.clone()), first, "no feed: the events are untouched");
    }

    #[test]
    fn a_change_offered_after_a_tick_keeps_the_tick_and_the_newest_objects() {
        let feed = Feed::default();
        feed.offer(pass(1, true));
        feed.offer(Pass::changed(vec![Arc::from("x")]));
        let waiting = feed.take().unwrap();
        assert_eq!((waiting.tick, waiting.change, waiting.objects.len()), (true, true, 1));
        assert!(feed.take().is_none(), "taken passes are gone");
    }

    #[tokio::test]
    async fn a_hook_gets_the_objects_in_event_file_and_event_type_sync() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let b = batcher(dir.path(), 1);
        hook(
            dir.path(),
            SNAPSHOT,
            &format!("#!/bin/sh\ncp \"$EVENT_FILE\" '{0}.json'\necho \"$EVENT_TYPE\" > '{0}.type'\n", out.display()),
        );
        let p = Pass::from_events(&[sync_event("ns/a", r#"{"n":"a"}"#)]);
        let text = p.event_text();
        assert!(b.run_pass(p, 0, 1).await.is_none());
        assert_eq!(std::fs::read_to_string(out.with_extension("json")).unwrap(), text);
        assert_eq!(std::fs::read_to_string(out.with_extension("type")).unwrap(), "SYNC\n");
        assert_eq!(std::fs::read_dir(&b.event_dir).unwrap().count(), 0, "the event file is removed after the run");
    }

    #[tokio::test]
    async fn a_tick_runs_snapshot_and_sync_all_and_a_change_runs_snapshot_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runs");
        let b = batcher(dir.path(), 1);
        hook(dir.path(), SNAPSHOT, &counting(&log, SNAPSHOT, 0));
        hook(dir.path(), HOOK, &counting(&log, HOOK, 0));
        b.run_pass(pass(2, true), 0, 1).await;
        b.run_pass(pass(3, false), 0, 2).await;
        assert_eq!(lines(&log), ["snapshot 2", "sync-all 2", "snapshot 3"]);
    }

    #[tokio::test]
    async fn without_the_hooks_nothing_runs_and_no_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let b = batcher(dir.path(), 1);
        assert!(b.run_pass(pass(1, true), 0, 1).await.is_none());
        assert_eq!(std::fs::read_dir(&b.event_dir).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn passes_offered_while_a_hook_runs_become_one_run_with_the_newest_objects() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runs");
        let b = batcher(dir.path(), 1);
        hook(dir.path(), SNAPSHOT, &format!("{}sleep 0.4\n", counting(&log, SNAPSHOT, 0).replace("exit 0\n", "")));
        serve(b, async |feed: &Feed| {
            feed.offer(pass(1, false));
            tokio::time::sleep(Duration::from_millis(150)).await;
            for n in 2..=5 {
                feed.offer(pass(n, false));
            }
            tokio::time::sleep(Duration::from_millis(1200)).await;
        })
        .await;
        // Commas: one after "type", one between objects: 1 for one object, 5 for five.
        assert_eq!(lines(&log), ["snapshot 1", "snapshot 5"], "the four passes offered during the first run were one");
    }

    #[tokio::test]
    async fn ticks_that_come_while_sync_all_runs_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runs");
        let b = batcher(dir.path(), 1);
        hook(dir.path(), HOOK, &format!("{}sleep 0.4\n", counting(&log, HOOK, 0).replace("exit 0\n", "")));
        serve(b, async |feed: &Feed| {
            feed.offer(pass(1, true));
            tokio::time::sleep(Duration::from_millis(150)).await;
            feed.offer(pass(2, true));
            tokio::time::sleep(Duration::from_millis(800)).await;
            feed.offer(pass(3, true));
            tokio::time::sleep(Duration::from_millis(800)).await;
        })
        .await;
        assert_eq!(lines(&log), ["sync-all 1", "sync-all 3"], "the tick during the first run was skipped");
    }

    #[tokio::test]
    async fn a_failing_snapshot_is_retried_with_backoff_up_to_the_retries() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runs");
        let b = batcher(dir.path(), 3);
        hook(dir.path(), SNAPSHOT, &counting(&log, SNAPSHOT, 1));
        serve(b, async |feed: &Feed| {
            feed.offer(pass(2, false));
            tokio::time::sleep(Duration::from_millis(1500)).await;
        })
        .await;
        assert_eq!(lines(&log), ["snapshot 2"; 3], "three attempts, then it waits for the next change");
    }

    #[tokio::test]
    async fn a_permanent_failure_and_a_failing_sync_all_are_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runs");
        let b = batcher(dir.path(), 3);
        hook(dir.path(), SNAPSHOT, &counting(&log, SNAPSHOT, PERMANENT_FAILURE));
        hook(dir.path(), HOOK, &counting(&log, HOOK, 1));
        serve(b, async |feed: &Feed| {
            feed.offer(pass(1, true));
            tokio::time::sleep(Duration::from_millis(800)).await;
        })
        .await;
        assert_eq!(lines(&log), ["snapshot 1", "sync-all 1"]);
    }

    #[tokio::test]
    async fn a_change_during_the_backoff_runs_at_once_with_its_objects() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runs");
        let mut b = batcher(dir.path(), 5);
        b.retry.backoff_min = Duration::from_secs(30);
        b.retry.backoff_max = Duration::from_secs(30);
        hook(dir.path(), SNAPSHOT, &counting(&log, SNAPSHOT, 1));
        serve(b, async |feed: &Feed| {
            feed.offer(pass(1, false));
            tokio::time::sleep(Duration::from_millis(400)).await;
            feed.offer(pass(3, false));
            tokio::time::sleep(Duration::from_millis(400)).await;
        })
        .await;
        assert_eq!(lines(&log), ["snapshot 1", "snapshot 3"]);
    }
}
