//! Batched sync: once per `--resync` pass, the `sync-all` hook runs once with every known object in one file.
//!
//! A per-object `sync` hook costs one process per object per period; a hook that
//! reconciles a thousand objects wants them all at once, so that it lists their
//! dependents once and writes in bulk (shell-operator's "snapshot" idea). The
//! watch hands each pass to a [`Feed`]; one task runs the hook, one pass at a
//! time. Passes that come while it runs are skipped: a slow hook never builds a
//! backlog, and the next run gets state taken after this one's writes came back.
//! Contract: docs/HOOKS.md, "sync-all: every object in one run".

use crate::event::ObjectEvent;
use crate::hooks::HookDir;
use crate::hooks::env::Environment;
use crate::hooks::spawn::{self, Limits, Outcome};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The hook's file name in the hooks directory.
pub const HOOK: &str = "sync-all";

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("cannot write the {HOOK} event file {path}")]
    EventFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The objects of one pass (their JSON), in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub objects: Vec<Arc<str>>,
}

impl Pass {
    pub fn from_events(events: &[ObjectEvent]) -> Pass {
        Pass { objects: events.iter().map(|e| e.object.clone()).collect() }
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

/// Where the watch hands over passes; the hook's task takes the newest one when it is idle.
#[derive(Debug, Clone)]
pub struct Feed(watch::Sender<Option<Arc<Pass>>>);

impl Feed {
    pub fn offer(&self, pass: Pass) {
        self.0.send_replace(Some(Arc::new(pass)));
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

/// What a run of the hook needs; the same settings as every other hook.
#[derive(Debug, Clone)]
pub struct Batcher {
    pub hooks: HookDir,
    pub env: Environment,
    pub limits: Limits,
    pub event_dir: PathBuf,
    /// Variable prefix (`EVENT`): the hook gets `<prefix>_TYPE=SYNC`.
    pub prefix: String,
    pub stop: CancellationToken,
}

impl Batcher {
    pub fn from_deliverer(d: &crate::deliver::Deliverer, prefix: &str) -> Batcher {
        Batcher {
            hooks: d.hooks.clone(),
            env: d.env.clone(),
            limits: d.limits,
            event_dir: d.event_dir.clone(),
            prefix: prefix.to_string(),
            stop: d.stop.clone(),
        }
    }

    /// Starts the task that runs the hook for each pass; it ends on `stop`, after a
    /// running hook had its grace period (await the handle before removing event_dir).
    pub fn start(self) -> (Feed, JoinHandle<()>) {
        let (tx, rx) = watch::channel(None);
        (Feed(tx), tokio::spawn(self.serve(rx)))
    }

    async fn serve(self, mut rx: watch::Receiver<Option<Arc<Pass>>>) {
        let mut runs: u64 = 0;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
            let Some(pass) = rx.borrow_and_update().clone() else { continue };
            runs += 1;
            self.run_pass(&pass, runs).await;
            // Passes taken while the hook ran predate its writes: skip them.
            if rx.has_changed().unwrap_or(false) {
                rx.borrow_and_update();
                tracing::debug!("hook {HOOK} ran longer than the resync period; a pass was skipped");
            }
        }
    }

    /// Runs the hook once for `pass`. Failures are logged, not retried: the next pass
    /// is the retry, with newer state.
    pub async fn run_pass(&self, pass: &Pass, n: u64) -> Option<Outcome> {
        let program = match self.hooks.find(HOOK) {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!("{e} (pass of {} objects skipped)", pass.objects.len());
                return None;
            }
        };
        let path = self.event_dir.join(format!("{HOOK}-{n}.json"));
        if let Err(e) = write_private(&path, &pass.event_text()) {
            tracing::error!("{e}");
            return None;
        }
        let vars = vec![(format!("{}_TYPE", self.prefix).into(), "SYNC".into())];
        let cmd = self.env.command(program, vars.into(), vec![("EVENT_FILE".into(), path.clone().into())]);
        let started = Instant::now();
        let outcome = spawn::run(&cmd, HOOK, self.limits, &self.stop).await;
        let _ = std::fs::remove_file(&path);
        report(&outcome, pass.objects.len(), started);
        Some(outcome)
    }
}

fn report(outcome: &Outcome, objects: usize, started: Instant) {
    match outcome {
        Outcome::Succeeded => tracing::debug!("hook {HOOK} for {objects} objects took {:?}", started.elapsed()),
        Outcome::Interrupted => {}
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
    use crate::event::EventType;
    use crate::hooks::env::Settings;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    fn sync_event(key: &str, object: &str) -> ObjectEvent {
        ObjectEvent::new(EventType::Sync, key.into(), object.into())
    }

    fn batcher(dir: &Path) -> Batcher {
        let event_dir = dir.join("events");
        std::fs::create_dir(&event_dir).unwrap();
        Batcher {
            hooks: HookDir::new(&dir.join("hooks")),
            env: Environment::new(&Settings { arg_max: 2 * 1024 * 1024, log_level: 1, ..Settings::default() }),
            limits: Limits { timeout: Duration::from_secs(10), grace: Duration::from_secs(1) },
            event_dir,
            prefix: "EVENT".into(),
            stop: CancellationToken::new(),
        }
    }

    /// A hooks directory whose sync-all copies its event file and environment to `out`.
    fn hooks_dir(dir: &Path, body: &str) {
        std::fs::create_dir(dir.join("hooks")).unwrap();
        let path = dir.join("hooks").join(HOOK);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_event_file_is_one_json_document_with_every_object_in_order() {
        let pass = Pass::from_events(&[sync_event("ns/a", r#"{"n":"a"}"#), sync_event("ns/b", r#"{"n":"b"}"#)]);
        let value: serde_json::Value = serde_json::from_str(&pass.event_text()).unwrap();
        assert_eq!(value, serde_json::json!({"type": "SYNC", "objects": [{"n": "a"}, {"n": "b"}]}));
    }

    #[test]
    fn an_empty_pass_is_an_empty_list() {
        let value: serde_json::Value = serde_json::from_str(&Pass { objects: vec![] }.event_text()).unwrap();
        assert_eq!(value["objects"], serde_json::json!([]));
    }

    #[test]
    fn tap_passes_the_events_through_and_feeds_the_newest_pass_only() {
        let (tx, rx) = watch::channel(None);
        let feed = Some(Feed(tx));
        let first = tap(&feed, vec![sync_event("ns/a", "1")]);
        assert_eq!(first.len(), 1);
        tap(&feed, vec![sync_event("ns/a", "2"), sync_event("ns/b", "3")]);
        let waiting = rx.borrow().clone().unwrap();
        assert_eq!(waiting.objects, vec![Arc::<str>::from("2"), Arc::from("3")]);
        assert_eq!(tap(&None, first.clone()), first, "no feed: the events are untouched");
    }

    #[tokio::test]
    async fn the_hook_gets_the_objects_in_event_file_and_event_type_sync() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        hooks_dir(
            dir.path(),
            &format!("#!/bin/sh\ncp \"$EVENT_FILE\" '{0}.json'\necho \"$EVENT_TYPE\" > '{0}.type'\n", out.display()),
        );
        let b = batcher(dir.path());
        let pass = Pass::from_events(&[sync_event("ns/a", r#"{"n":"a"}"#)]);
        assert!(matches!(b.run_pass(&pass, 1).await, Some(Outcome::Succeeded)));
        assert_eq!(std::fs::read_to_string(out.with_extension("json")).unwrap(), pass.event_text());
        assert_eq!(std::fs::read_to_string(out.with_extension("type")).unwrap(), "SYNC\n");
        assert_eq!(std::fs::read_dir(&b.event_dir).unwrap().count(), 0, "the event file is removed after the run");
    }

    #[tokio::test]
    async fn without_the_hook_nothing_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("hooks")).unwrap();
        let b = batcher(dir.path());
        assert!(b.run_pass(&Pass { objects: vec![] }, 1).await.is_none());
    }

    #[tokio::test]
    async fn a_failing_hook_is_reported_with_its_status() {
        let dir = tempfile::tempdir().unwrap();
        hooks_dir(dir.path(), "#!/bin/sh\nexit 3\n");
        let b = batcher(dir.path());
        assert!(matches!(b.run_pass(&Pass { objects: vec![] }, 1).await, Some(Outcome::Failed(3))));
    }

    #[tokio::test]
    async fn passes_offered_while_the_hook_runs_are_skipped_and_the_next_one_runs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("runs");
        // Each run appends how many objects it got, slowly enough for passes to pile up.
        hooks_dir(
            dir.path(),
            &format!("#!/bin/sh\ntr -cd , < \"$EVENT_FILE\" | wc -c >> '{}'\nsleep 0.4\n", out.display()),
        );
        let b = batcher(dir.path());
        let stop = b.stop.clone();
        let (feed, task) = b.start();
        let pass = |n: usize| Pass { objects: (0..n).map(|i| Arc::from(i.to_string())).collect() };
        feed.offer(pass(1));
        tokio::time::sleep(Duration::from_millis(150)).await;
        for n in 2..=5 {
            feed.offer(pass(n));
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        feed.offer(pass(7));
        tokio::time::sleep(Duration::from_millis(800)).await;
        stop.cancel();
        task.await.unwrap();
        let runs: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(|l| l.trim().to_string()).collect();
        // Commas: one after "type", one between objects: 1 for one object, 7 for seven.
        assert_eq!(runs, vec!["1", "7"], "the four passes offered during the first run were skipped");
    }
}
