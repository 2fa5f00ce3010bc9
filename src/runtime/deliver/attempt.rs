//! How one hook runs: spawned within its limits, retried with backoff until it
//! succeeds, says stop (exit 100), cannot start, or runs out of retries. Every run is
//! logged with its duration and counted in the metrics.

use crate::model::outcome::Outcome;
use crate::model::retry::{RetryPolicy, backoff};
use crate::runtime::hooks::env::HookCommand;
use crate::runtime::hooks::spawn::{self, Limits};
use crate::runtime::metrics;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How one handler's runs ended.
pub enum Ran {
    Succeeded,
    /// Failed for good: the status as a shell reports it, and the sentence for the log and the Event.
    Failed {
        status: Option<i32>,
        why: String,
    },
    /// Exited with 100: the event's remaining handlers are not run.
    Stopped {
        why: String,
    },
    Interrupted,
}

/// The retry policy and limits every hook of the runner runs under.
#[derive(Clone)]
pub struct Attempts {
    pub retry: RetryPolicy,
    pub limits: Limits,
    pub stop: CancellationToken,
}

impl Attempts {
    /// One handler, retried on its own; `label` names it in the log ("hook NAME for KEY").
    pub async fn run(&self, cmd: &HookCommand, name: &str, key: &str) -> Ran {
        let label = format!("{name} {key}");
        let mut attempt: u32 = 0;
        loop {
            let outcome = self.once(cmd, name, &label, &format!("hook {name} for {key}")).await;
            match outcome {
                Outcome::Succeeded => return Ran::Succeeded,
                Outcome::Interrupted => return Ran::Interrupted,
                _ => {}
            }
            let what = format!("hook {name} for {key} {}", outcome.describe());
            if outcome.is_permanent() || attempt >= self.retry.retries {
                return given_up(outcome, what);
            }
            metrics::hook_retry(name);
            if !self.wait(&what, attempt, &self.stop).await {
                return Ran::Interrupted;
            }
            attempt += 1;
        }
    }

    /// `startup` or `shutdown`: the runner's variables only, no event. Startup is
    /// retried like an event hook; shutdown runs once. Err holds why it failed for good.
    pub async fn run_lifecycle(
        &self,
        cmd: &HookCommand,
        name: &str,
        retry: bool,
        limits: Limits,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let program = cmd.program.display().to_string();
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let outcome = spawn::run(cmd, name, limits, stop).await;
            tracing::info!("hook {name} {} in {}", outcome.describe(), millis(started.elapsed()));
            let what = format!("{program} {}", outcome.describe());
            match outcome {
                Outcome::Succeeded | Outcome::Interrupted => return Ok(()),
                _ if outcome.is_permanent() => return Err(format!("{what}; not retried")),
                _ if !retry => return Err(what),
                _ if attempt >= self.retry.retries => return Err(format!("{what}; no retries left")),
                _ => {}
            }
            if !self.wait(&format!("hook {what}"), attempt, stop).await {
                return Ok(());
            }
            attempt += 1;
        }
    }

    async fn once(&self, cmd: &HookCommand, name: &str, label: &str, what: &str) -> Outcome {
        let started = Instant::now();
        let outcome = spawn::run(cmd, label, self.limits, &self.stop).await;
        let took = started.elapsed();
        tracing::info!("{what} {} in {}", outcome.describe(), millis(took));
        metrics::hook_run(name, &outcome, took);
        outcome
    }

    /// The backoff before retry `attempt + 1`; false when `stop` came first.
    async fn wait(&self, what: &str, attempt: u32, stop: &CancellationToken) -> bool {
        let delay = backoff(&self.retry, attempt, rand::random::<f64>());
        tracing::error!("{what}; retry {} of {} in {}", attempt + 1, self.retry.retries, millis(delay));
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = stop.cancelled() => false,
        }
    }
}

/// The end of a handler's runs that were not a success: logged here, reported by the caller.
fn given_up(outcome: Outcome, what: String) -> Ran {
    let why = format!("{what}; {}", if outcome.is_permanent() { "not retried" } else { "no retries left" });
    tracing::error!("{why}");
    match outcome {
        Outcome::Failed(crate::model::outcome::PERMANENT_FAILURE) => Ran::Stopped { why },
        _ => Ran::Failed { status: outcome.shell_status(), why },
    }
}

pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
