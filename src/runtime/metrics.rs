//! Prometheus metrics and the health state behind /healthz and /readyz, updated by cheap free functions.
//!
//! Every counting point in the delivery path is one call here; the state is process-wide
//! (one runner per process), so nothing has to be threaded through the delivery code.

use crate::model::outcome::{Outcome, PERMANENT_FAILURE};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabel {
    hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookOutcomeLabels {
    hook: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type Durations = Family<HookLabel, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    events: Family<TypeLabel, Counter>,
    hook_runs: Family<HookOutcomeLabels, Counter>,
    hook_duration: Durations,
    hook_retries: Family<HookLabel, Counter>,
    queue_depth: Gauge,
    objects: Gauge,
    watch_restarts: Counter,
    last_event: Gauge<f64, AtomicU64>,
    leader: Gauge,
    shard_members: Gauge,
    shard_owned: Gauge,
    shard_handovers: Family<ReasonLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// Hooks take from milliseconds to minutes.
fn duration_histogram() -> Histogram {
    Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0])
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut r = Registry::default();
    let m = Metrics {
        events: Family::default(),
        hook_runs: Family::default(),
        hook_duration: Family::new_with_constructor(duration_histogram),
        hook_retries: Family::default(),
        queue_depth: Gauge::default(),
        objects: Gauge::default(),
        watch_restarts: Counter::default(),
        last_event: Gauge::default(),
        leader: Gauge::default(),
        shard_members: Gauge::default(),
        shard_owned: Gauge::default(),
        shard_handovers: Family::default(),
        registry: Registry::default(),
    };
    r.register("operator_events", "Events received from the watch, by type", m.events.clone());
    r.register("operator_hook_runs", "Hook runs by hook and outcome", m.hook_runs.clone());
    r.register("operator_hook_duration_seconds", "How long hook runs took", m.hook_duration.clone());
    r.register("operator_hook_retries", "Hook runs scheduled again after a failure", m.hook_retries.clone());
    r.register("operator_queue_depth", "Events waiting for their hook", m.queue_depth.clone());
    r.register("operator_objects", "Objects the watch tracks", m.objects.clone());
    r.register("operator_watch_restarts", "Times the watch failed and reconnected", m.watch_restarts.clone());
    r.register("operator_last_event_timestamp_seconds", "Unix time of the last event", m.last_event.clone());
    r.register("operator_leader", "1 while this instance runs hooks, 0 while it stands by", m.leader.clone());
    r.register(
        "operator_shard_members",
        "Live members of the --shards group, this one included",
        m.shard_members.clone(),
    );
    r.register("operator_shard_objects_owned", "Objects this --shards member owns", m.shard_owned.clone());
    r.register(
        "operator_shard_handovers",
        "Objects this --shards member took over, by why their owner changed (rebalanced, left, expired, rejoined)",
        m.shard_handovers.clone(),
    );
    let info = Family::<VersionLabel, Gauge>::default();
    info.get_or_create(&VersionLabel { version: env!("CARGO_PKG_VERSION") }).set(1);
    r.register("operator_build_info", "The running version", info);
    zero_series(&m);
    Metrics { registry: r, ..m }
});

/// The series of the four standard hooks exist from the start at 0, so that rates and
/// alerts work before the first failure.
fn zero_series(m: &Metrics) {
    for (kind, hook) in [("ADDED", "added"), ("MODIFIED", "modified"), ("DELETED", "deleted"), ("SYNC", "sync")] {
        let _ = m.events.get_or_create(&TypeLabel { r#type: kind.into() });
        let _ = m.hook_retries.get_or_create(&HookLabel { hook: hook.into() });
        for outcome in ["succeeded", "failed", "timeout", "permanent"] {
            let _ = m.hook_runs.get_or_create(&HookOutcomeLabels { hook: hook.into(), outcome });
        }
    }
}

/// One event from the watch (ADDED, MODIFIED, DELETED, SYNC).
pub fn event(kind: &str) {
    let m = &*METRICS;
    m.events.get_or_create(&TypeLabel { r#type: kind.to_string() }).inc();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    m.last_event.set(now.as_secs_f64());
}

/// The label a hook run's outcome is counted under; None for runs that shutdown ended.
pub fn outcome_label(outcome: &Outcome) -> Option<&'static str> {
    match outcome {
        Outcome::Succeeded => Some("succeeded"),
        Outcome::Failed(PERMANENT_FAILURE) | Outcome::NotStarted(_) => Some("permanent"),
        Outcome::Failed(_) | Outcome::Killed(_) => Some("failed"),
        Outcome::TimedOut => Some("timeout"),
        Outcome::Interrupted => None,
    }
}

/// One run of a hook ended.
pub fn hook_run(hook: &str, outcome: &Outcome, took: Duration) {
    let Some(outcome) = outcome_label(outcome) else { return };
    let m = &*METRICS;
    m.hook_runs.get_or_create(&HookOutcomeLabels { hook: hook.to_string(), outcome }).inc();
    m.hook_duration.get_or_create(&HookLabel { hook: hook.to_string() }).observe(took.as_secs_f64());
}

/// A failed hook is run again.
pub fn hook_retry(hook: &str) {
    METRICS.hook_retries.get_or_create(&HookLabel { hook: hook.to_string() }).inc();
}

/// Events waiting for their hook.
pub fn queue_depth(n: usize) {
    METRICS.queue_depth.set(n as i64);
}

/// Objects the watch tracks.
pub fn objects(n: usize) {
    METRICS.objects.set(n as i64);
}

/// Whether this instance runs hooks (always, without --leader-elect).
pub fn leader(active: bool) {
    METRICS.leader.set(i64::from(active));
}

/// Live members of the --shards group.
pub fn shard_members(n: usize) {
    METRICS.shard_members.set(n as i64);
}

/// Objects this --shards member owns.
pub fn shard_owned(n: usize) {
    METRICS.shard_owned.set(n as i64);
}

/// `n` objects came to this --shards member for `reason`.
pub fn shard_handovers(reason: &str, n: u64) {
    METRICS.shard_handovers.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc_by(n);
}

/// This instance stopped running hooks: it tracks and queues nothing.
pub fn standing_by() {
    leader(false);
    objects(0);
    queue_depth(0);
}

/// The metrics in the text format Prometheus scrapes (OpenMetrics).
pub fn encode() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry);
    out
}

/// What /healthz and /readyz answer from. Times are milliseconds since `START` plus
/// one, so that 0 can mean "not failing".
struct Health {
    watch_failing_since: AtomicU64,
    watch_last_error: AtomicU64,
    lease_failing_since: AtomicU64,
    ready: AtomicBool,
}

static START: LazyLock<Instant> = LazyLock::new(Instant::now);
static HEALTH: Health = Health {
    watch_failing_since: AtomicU64::new(0),
    watch_last_error: AtomicU64::new(0),
    lease_failing_since: AtomicU64::new(0),
    ready: AtomicBool::new(false),
};

/// A reconnected watch says nothing until the next change; one without an error for
/// longer than the watcher's longest backoff (30 s, plus up to as much jitter) works.
pub const WATCH_QUIET_RECOVERY: Duration = Duration::from_secs(65);

fn now_mark() -> u64 {
    START.elapsed().as_millis() as u64 + 1
}

/// The watch failed and is reconnecting.
pub fn watch_failed() {
    METRICS.watch_restarts.inc();
    let now = now_mark();
    HEALTH.watch_last_error.store(now, Ordering::Relaxed);
    let _ = HEALTH.watch_failing_since.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
}

/// The watch delivered something: it works.
pub fn watch_ok() {
    HEALTH.watch_failing_since.store(0, Ordering::Relaxed);
}

/// A Lease request failed.
pub fn lease_failed() {
    let _ = HEALTH.lease_failing_since.compare_exchange(0, now_mark(), Ordering::Relaxed, Ordering::Relaxed);
}

/// A Lease request succeeded.
pub fn lease_ok() {
    HEALTH.lease_failing_since.store(0, Ordering::Relaxed);
}

/// Ready: the initial list is done, or (standing by) the leader is known.
pub fn set_ready(ready: bool) {
    HEALTH.ready.store(ready, Ordering::Relaxed);
}

pub fn is_ready() -> bool {
    HEALTH.ready.load(Ordering::Relaxed)
}

/// Err with the reason when the watch or the Lease has been failing for `limit` or longer.
pub fn health(limit: Duration) -> Result<(), String> {
    let now = now_mark();
    let ago = |mark: &AtomicU64| Duration::from_millis(now.saturating_sub(mark.load(Ordering::Relaxed)));
    let watch_quiet = ago(&HEALTH.watch_last_error) >= WATCH_QUIET_RECOVERY;
    for (what, since, recovered) in
        [("watch", &HEALTH.watch_failing_since, watch_quiet), ("Lease", &HEALTH.lease_failing_since, false)]
    {
        let failing = ago(since);
        if since.load(Ordering::Relaxed) != 0 && failing >= limit && !recovered {
            return Err(format!("the {what} has been failing for {}s", failing.as_secs()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_the_documented_labels() {
        assert_eq!(outcome_label(&Outcome::Succeeded), Some("succeeded"));
        assert_eq!(outcome_label(&Outcome::Failed(1)), Some("failed"));
        assert_eq!(outcome_label(&Outcome::Killed(9)), Some("failed"));
        assert_eq!(outcome_label(&Outcome::Failed(PERMANENT_FAILURE)), Some("permanent"));
        assert_eq!(outcome_label(&Outcome::TimedOut), Some("timeout"));
        assert_eq!(outcome_label(&Outcome::Interrupted), None);
    }

    #[test]
    fn a_hook_run_shows_in_the_counter_and_the_histogram() {
        hook_run("unit-test-hook", &Outcome::TimedOut, Duration::from_millis(30));
        let text = encode();
        assert!(text.contains(r#"operator_hook_runs_total{hook="unit-test-hook",outcome="timeout"} 1"#), "{text}");
        assert!(text.contains(r#"operator_hook_duration_seconds_count{hook="unit-test-hook"} 1"#), "{text}");
        assert!(text.contains(r#"operator_hook_duration_seconds_bucket{le="0.05",hook="unit-test-hook"} 1"#), "{text}");
    }

    #[test]
    fn build_info_carries_the_version() {
        let text = encode();
        let line = format!(r#"operator_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION"));
        assert!(text.contains(&line), "{text}");
    }

    #[test]
    fn health_fails_only_after_the_limit() {
        watch_failed();
        assert!(health(Duration::from_secs(3600)).is_ok());
        let err = health(Duration::ZERO).unwrap_err();
        assert!(err.contains("watch"), "{err}");
        watch_ok();
        assert!(health(Duration::ZERO).is_ok());
    }
}
