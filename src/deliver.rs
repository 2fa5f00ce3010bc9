//! Delivers one event to its hook: variables, event file, retries with backoff, failure reporting.

use crate::config::RetryPolicy;
use crate::finalizer::Finalizers;
use crate::flatten::{self, Flattened};
use crate::hooks::HookDir;
use crate::hooks::env::{self, Settings};
use crate::hooks::spawn::{self, Limits, Outcome};
use crate::journal::Journal;
use crate::queue::Job;
use crate::report::Reporter;
use crate::watch::{EventType, FinalizerAction, ObjectEvent};
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A hook exiting with this status has failed for good: it is not retried.
pub const PERMANENT_FAILURE: i32 = 100;

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
    Failed,
    /// Shutdown came first: the event was not handled.
    Interrupted,
}

pub struct Deliverer {
    pub hooks: HookDir,
    pub settings: Settings,
    pub flatten: flatten::Options,
    pub retry: RetryPolicy,
    pub limits: Limits,
    pub event_dir: PathBuf,
    pub stop: CancellationToken,
    pub reporter: Option<Reporter>,
    pub journal: Option<Arc<Journal>>,
    pub finalizers: Option<Finalizers>,
    seq: AtomicU64,
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
            settings,
            flatten,
            retry,
            limits,
            event_dir,
            stop,
            reporter,
            journal: None,
            finalizers: None,
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

    async fn edit_finalizer(&self, ev: &ObjectEvent, add: bool) {
        let (Some(f), Ok(object)) = (&self.finalizers, serde_json::from_str::<Value>(&ev.object)) else {
            return;
        };
        let (verb, done) = if add { ("add", "added") } else { ("remove", "removed") };
        let result = if add { f.add(&object).await } else { f.remove(&object).await };
        match result {
            Ok(()) => tracing::debug!("{}: finalizer {} {done}", ev.key, f.name),
            Err(e) => tracing::error!("{}: cannot {verb} finalizer {}: {e}", ev.key, f.name),
        }
    }

    pub async fn deliver(&self, ev: &ObjectEvent) -> Delivered {
        let hook_name = ev.kind.hook_name();
        let program = match self.hooks.find(hook_name) {
            Ok(Some(p)) => p,
            Ok(None) => {
                tracing::debug!("No event handler exists for event {}. Ignoring.", ev.kind.as_str());
                return Delivered::Done;
            }
            Err(e) => {
                tracing::error!("{e} (event {} of {} skipped)", ev.kind.as_str(), ev.key);
                return Delivered::Failed;
            }
        };
        let text = format!("{{\"type\":\"{}\",\"object\":{}}}", ev.kind.as_str(), ev.object);
        let Some(event) = self.decode(ev, &text) else {
            return Delivered::Failed;
        };
        let file = match self.write_event_file(&text) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("cannot write the event file for {}: {e}", ev.key);
                return Delivered::Failed;
            }
        };
        let cmd = env::command(program, event.vars, file.clone(), &self.settings);
        if !cmd.dropped.is_empty() {
            tracing::warn!(
                "{}: left out {} (the environment would be too large; see EVENT_FILE)",
                ev.key,
                cmd.dropped.join(", ")
            );
        }
        let result = self.run_with_retries(&cmd, ev, &text).await;
        let _ = std::fs::remove_file(&file);
        result
    }

    fn decode(&self, ev: &ObjectEvent, text: &str) -> Option<Flattened> {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("event {} of {} cannot be decoded: {e}", ev.kind.as_str(), ev.key);
                return None;
            }
        };
        match flatten::flatten(&value, &self.flatten) {
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

    fn write_event_file(&self, text: &str) -> std::io::Result<PathBuf> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.event_dir.join(format!("event-{n}.json"));
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        f.write_all(text.as_bytes())?;
        Ok(path)
    }

    async fn run_with_retries(&self, cmd: &env::HookCommand, ev: &ObjectEvent, text: &str) -> Delivered {
        let label = format!("{} {}", ev.kind.hook_name(), ev.key);
        let mut attempt: u32 = 0;
        loop {
            let started = std::time::Instant::now();
            let outcome = spawn::run(cmd, &label, self.limits, &self.stop).await;
            crate::metrics::hook_run(ev.kind.hook_name(), &outcome, started.elapsed());
            match outcome {
                Outcome::Succeeded => return Delivered::Done,
                Outcome::Interrupted => return Delivered::Interrupted,
                _ => {}
            }
            let what = format!("hook {} for {} {}", ev.kind.hook_name(), ev.key, outcome.describe());
            let permanent = matches!(outcome, Outcome::Failed(PERMANENT_FAILURE) | Outcome::NotStarted(_));
            if permanent || attempt >= self.retry.retries {
                let why = if permanent { "not retried" } else { "no retries left" };
                tracing::error!("{what}; {why}");
                self.report(text, &format!("{what}; {why}")).await;
                return Delivered::Failed;
            }
            let delay = backoff(&self.retry, attempt, rand::random::<f64>());
            crate::metrics::hook_retry(ev.kind.hook_name());
            tracing::error!("{what}; retry {} of {} in {delay:?}", attempt + 1, self.retry.retries);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => return Delivered::Interrupted,
            }
            attempt += 1;
        }
    }

    async fn report(&self, text: &str, message: &str) {
        let Some(reporter) = &self.reporter else {
            return;
        };
        if let Ok(event) = serde_json::from_str::<Value>(text) {
            reporter.warn(&event["object"], "HookFailed", message).await;
        }
    }
}

/// Exponential backoff with jitter: between half and all of min·2^attempt, capped at max.
pub fn backoff(policy: &RetryPolicy, attempt: u32, random: f64) -> Duration {
    let full = policy.backoff_min.saturating_mul(2u32.saturating_pow(attempt)).min(policy.backoff_max);
    full.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { retries: 5, backoff_min: Duration::from_secs(1), backoff_max: Duration::from_secs(10) }
    }

    #[test]
    fn backoff_doubles_each_attempt() {
        assert_eq!(backoff(&policy(), 0, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&policy(), 2, 1.0), Duration::from_secs(4));
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(&policy(), 20, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(&policy(), 200, 1.0), Duration::from_secs(10));
    }

    #[test]
    fn jitter_never_goes_below_half() {
        assert_eq!(backoff(&policy(), 1, 0.0), Duration::from_secs(1));
    }
}
