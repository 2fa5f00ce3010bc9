//! Leader election on a coordination.k8s.io/v1 Lease, with a priority takeover: only the holder runs hooks.
//!
//! The protocol is client-go's (optimistic updates of one Lease, expiry judged by the
//! local clock from when a change of the record was seen, never by comparing clocks),
//! plus kopf's dev-mode priority: a candidate of higher priority than the holder writes
//! a claim annotation; the holder sees it on its next renewal, stops as on SIGTERM and
//! releases; nobody of lower priority acquires while a fresh claim exists.

use crate::model::lease::Timing;
use crate::runtime::metrics;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use kube::core::ObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The holder's priority, so that candidates can compare theirs.
pub const PRIORITY_ANNOTATION: &str = "operator-sh/priority";
/// A higher-priority candidate's request that the holder hand over: JSON {identity, priority, time}.
pub const CLAIM_ANNOTATION: &str = "operator-sh/claim";

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "lost the Lease {lease}: it could not be renewed within the renew deadline ({deadline:?}); running hooks were ended"
    )]
    RenewDeadline { lease: String, deadline: Duration },
    #[error("lost the Lease {lease}: {holder} holds it now; running hooks were ended")]
    Taken { lease: String, holder: String },
    #[error("the API server refused the Lease {lease}: {message}")]
    Refused { lease: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Claim {
    identity: String,
    priority: i32,
    time: String,
}

/// What one look at the Lease showed.
#[derive(Debug, Default)]
struct View {
    /// The holder, unless there is none or its lease expired.
    holder: Option<String>,
    holder_priority: i32,
    until_expiry: Duration,
    /// A fresh claim, if any.
    claim: Option<Claim>,
}

enum Attempt {
    Acquired,
    /// Someone else leads (or is taking over); look again after `wait`.
    Standby {
        leader: Option<(String, i32)>,
        wait: Duration,
    },
}

enum Renewal {
    Renewed { yield_to: Option<Claim> },
    Taken(String),
    Conflicted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Stopped,
    Yielded,
}

pub struct Election {
    api: Api<Lease>,
    name: String,
    lease: String,
    identity: String,
    priority: i32,
    timing: Timing,
    seen_record: Option<(String, Instant)>,
    seen_claim: Option<(String, Instant)>,
    claimed: bool,
}

impl Election {
    pub fn new(client: kube::Client, namespace: &str, name: &str, priority: i32, timing: Timing) -> Election {
        Election {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            lease: format!("{namespace}/{name}"),
            identity: identity(),
            priority,
            timing,
            seen_record: None,
            seen_claim: None,
            claimed: false,
        }
    }

    /// Stands by until this instance holds the Lease, then runs `runner` with a token
    /// that ends its term; again after a priority hand-over; returns after a signal.
    pub async fn lead<F, Fut, E>(mut self, stop: CancellationToken, mut runner: F) -> Result<(), E>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: From<LeaderError>,
    {
        metrics::standing_by();
        tracing::info!("leader election on the Lease {} as {} (priority {})", self.lease, self.identity, self.priority);
        loop {
            if stop.is_cancelled() || !self.stand_by(&stop).await? {
                return Ok(());
            }
            let work = CancellationToken::new();
            if self.term(&stop, &work, runner(work.clone())).await? == End::Stopped {
                return Ok(());
            }
        }
    }

    /// Waits for the Lease; false when stopped first.
    async fn stand_by(&mut self, stop: &CancellationToken) -> Result<bool, LeaderError> {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let mut changes = std::pin::pin!(watcher(self.api.clone(), config).default_backoff());
        let (mut known, mut failing) = (None, false);
        loop {
            let wait = match tokio::time::timeout(self.timing.retry_period, self.try_acquire()).await {
                Ok(Ok(Attempt::Acquired)) => {
                    metrics::lease_ok();
                    return Ok(true);
                }
                Ok(Ok(Attempt::Standby { leader, wait })) => {
                    metrics::lease_ok();
                    failing = false;
                    self.log_leader(&mut known, leader);
                    wait
                }
                Ok(Err(e)) if refused(&e) => return Err(self.refused(e)),
                Ok(Err(e)) => self.failed(&mut failing, &api_message(&e)),
                Err(_) => self.failed(&mut failing, "no answer within the retry period"),
            };
            tokio::select! {
                _ = stop.cancelled() => {
                    self.withdraw_claim().await;
                    return Ok(false);
                }
                _ = tokio::time::sleep(wait) => {}
                _ = changes.next() => {}
            }
        }
    }

    fn log_leader(&self, known: &mut Option<(String, i32)>, leader: Option<(String, i32)>) {
        if leader.is_some() && *known != leader {
            let (who, priority) = leader.clone().unwrap_or_default();
            tracing::info!("standing by: {who} (priority {priority}) leads the Lease {}", self.lease);
            metrics::set_ready(true);
            *known = leader;
        }
    }

    fn failed(&self, failing: &mut bool, why: &str) -> Duration {
        metrics::lease_failed();
        if !std::mem::replace(failing, true) {
            tracing::warn!(
                "cannot read the Lease {}: {why}; retrying every {:?}",
                self.lease,
                self.timing.retry_period
            );
        }
        self.timing.retry_period
    }

    fn refused(&self, e: kube::Error) -> LeaderError {
        LeaderError::Refused { lease: self.lease.clone(), message: api_message(&e) }
    }

    /// One round of client-go's tryAcquireOrRenew, with the priority rules.
    async fn try_acquire(&mut self) -> Result<Attempt, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return self.create().await;
        };
        let v = self.view(&lease);
        match decide(&v, &self.identity, self.priority) {
            Decision::Take => {}
            Decision::Wait { leader, claim } => {
                if claim {
                    self.claim(lease, &leader.0, leader.1).await?;
                }
                // Look again when the holder's lease would expire, if sooner than a retry.
                let expiry = if v.holder.is_some() { v.until_expiry } else { self.timing.retry_period };
                let wait = expiry.clamp(Duration::from_millis(50), self.timing.retry_period);
                return Ok(Attempt::Standby { leader: Some(leader), wait });
            }
        }
        match self.api.replace(&self.name, &PostParams::default(), &self.held(lease)).await {
            Ok(_) => Ok(Attempt::Acquired),
            Err(e) if conflict(&e) => Ok(Attempt::Standby { leader: None, wait: Duration::from_millis(100) }),
            Err(e) => Err(e),
        }
    }

    async fn create(&mut self) -> Result<Attempt, kube::Error> {
        let lease =
            Lease { metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() }, spec: None };
        match self.api.create(&PostParams::default(), &self.held(lease)).await {
            Ok(_) => Ok(Attempt::Acquired),
            Err(e) if conflict(&e) => Ok(Attempt::Standby { leader: None, wait: Duration::from_millis(100) }),
            Err(e) => Err(e),
        }
    }

    /// Reads the Lease as of now, noting when its record or claim changed.
    fn view(&mut self, lease: &Lease) -> View {
        let spec = lease.spec.clone().unwrap_or_default();
        let annotations = lease.metadata.annotations.clone().unwrap_or_default();
        let holder = spec.holder_identity.filter(|h| !h.is_empty());
        let record = format!("{holder:?} {:?}", spec.renew_time.as_ref().map(|t| t.0));
        let seen = observed(&mut self.seen_record, record);
        let duration = spec.lease_duration_seconds.map_or(self.timing.lease_duration, |s| secs(s.max(0)));
        let until_expiry = (seen + duration).saturating_duration_since(Instant::now());
        let claim_text = annotations.get(CLAIM_ANNOTATION).cloned().unwrap_or_default();
        let claim_seen = observed(&mut self.seen_claim, claim_text.clone());
        View {
            holder: holder.filter(|_| !until_expiry.is_zero()),
            holder_priority: annotations.get(PRIORITY_ANNOTATION).and_then(|p| p.parse().ok()).unwrap_or(0),
            until_expiry,
            claim: serde_json::from_str::<Claim>(&claim_text)
                .ok()
                .filter(|c| fresh(c, claim_seen, self.timing.lease_duration)),
        }
    }

    /// Asks the holder to hand over; a conflict only means the Lease changed meanwhile.
    async fn claim(&mut self, mut lease: Lease, holder: &str, holder_priority: i32) -> Result<(), kube::Error> {
        let claim =
            Claim { identity: self.identity.clone(), priority: self.priority, time: Timestamp::now().to_string() };
        let text = serde_json::to_string(&claim).unwrap_or_default();
        lease.metadata.annotations.get_or_insert_with(Default::default).insert(CLAIM_ANNOTATION.into(), text);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) if !self.claimed => {
                tracing::info!(
                    "asking {holder} (priority {holder_priority}) to hand the Lease {} over to this instance (priority {})",
                    self.lease,
                    self.priority
                );
                self.claimed = true;
                Ok(())
            }
            Err(e) if !conflict(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// The Lease as this instance holds it from now on; its own claim is done with.
    fn held(&self, mut lease: Lease) -> Lease {
        let now = MicroTime(Timestamp::now());
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.map_or(0, |n| n + 1));
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.timing.lease_duration.as_secs_f64().ceil() as i32);
        spec.renew_time = Some(now);
        let annotations = lease.metadata.annotations.get_or_insert_with(Default::default);
        annotations.insert(PRIORITY_ANNOTATION.into(), self.priority.to_string());
        drop_own_claim(annotations, &self.identity);
        lease
    }

    /// One term as leader: renews every retry period until the runner ends.
    async fn term<E: From<LeaderError>>(
        &mut self,
        stop: &CancellationToken,
        work: &CancellationToken,
        run: impl Future<Output = Result<(), E>>,
    ) -> Result<End, E> {
        tracing::info!("leading: this instance ({}) holds the Lease {}", self.identity, self.lease);
        metrics::leader(true);
        metrics::set_ready(false);
        self.claimed = false;
        let mut run = std::pin::pin!(run);
        let (mut last_renew, mut end) = (Instant::now(), None);
        let mut next = last_renew + self.timing.retry_period;
        loop {
            tokio::select! {
                result = &mut run => {
                    self.release().await;
                    metrics::standing_by();
                    result?;
                    return Ok(end.unwrap_or(End::Stopped));
                }
                _ = stop.cancelled(), if end.is_none() => {
                    tracing::info!("taking no more events; running hooks may finish within the grace period, then the Lease is released");
                    end = Some(End::Stopped);
                    work.cancel();
                }
                _ = tokio::time::sleep_until(next.into()) => {
                    let started = Instant::now();
                    match self.renew_round(&mut last_renew).await {
                        Ok(Some(c)) if end.is_none() => {
                            tracing::info!("{} (priority {}) asks for the Lease {}: handing over once running hooks finished", c.identity, c.priority, self.lease);
                            end = Some(End::Yielded);
                            work.cancel();
                        }
                        Ok(_) => {}
                        Err(lost) => return Err(abort(work, run, lost).await.into()),
                    }
                    next = (started + self.timing.retry_period).min(last_renew + self.timing.renew_deadline);
                }
            }
        }
    }

    /// One renewal, bounded by the renew deadline: the claim to yield to, if any, or
    /// the reason the Lease is lost.
    async fn renew_round(&mut self, last_renew: &mut Instant) -> Result<Option<Claim>, LeaderError> {
        let started = Instant::now();
        let left = (*last_renew + self.timing.renew_deadline).saturating_duration_since(started);
        match tokio::time::timeout(left, self.renew()).await {
            Ok(Ok(Renewal::Renewed { yield_to })) => {
                *last_renew = started;
                metrics::lease_ok();
                return Ok(yield_to);
            }
            Ok(Ok(Renewal::Taken(holder))) => return Err(LeaderError::Taken { lease: self.lease.clone(), holder }),
            Ok(Ok(Renewal::Conflicted)) => {}
            Ok(Err(e)) => {
                metrics::lease_failed();
                tracing::warn!("cannot renew the Lease {}: {}", self.lease, api_message(&e));
            }
            Err(_) => metrics::lease_failed(),
        }
        if last_renew.elapsed() >= self.timing.renew_deadline {
            return Err(LeaderError::RenewDeadline { lease: self.lease.clone(), deadline: self.timing.renew_deadline });
        }
        Ok(None)
    }

    async fn renew(&mut self) -> Result<Renewal, kube::Error> {
        for _ in 0..3 {
            let Some(lease) = self.api.get_opt(&self.name).await? else {
                return match self.create().await? {
                    Attempt::Acquired => Ok(Renewal::Renewed { yield_to: None }),
                    Attempt::Standby { .. } => Ok(Renewal::Conflicted),
                };
            };
            let v = self.view(&lease);
            if v.holder.as_deref() != Some(self.identity.as_str()) {
                return Ok(Renewal::Taken(v.holder.unwrap_or_else(|| "nobody".into())));
            }
            let yield_to = v.claim.filter(|c| outranks(c, &self.identity, self.priority));
            match self.api.replace(&self.name, &PostParams::default(), &self.held(lease)).await {
                Ok(_) => return Ok(Renewal::Renewed { yield_to }),
                Err(e) if conflict(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Renewal::Conflicted)
    }

    /// Clears the holder so that a standby takes over at once (client-go's ReleaseOnCancel).
    async fn release(&mut self) {
        let attempt = async {
            for _ in 0..3 {
                let mut lease = match self.api.get_opt(&self.name).await {
                    Ok(Some(l)) => l,
                    Ok(None) => return Ok(false),
                    Err(e) => return Err(e),
                };
                let spec = lease.spec.get_or_insert_with(Default::default);
                if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                    return Ok(false);
                }
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
                spec.renew_time = Some(MicroTime(Timestamp::now()));
                lease.metadata.annotations.get_or_insert_with(Default::default).remove(PRIORITY_ANNOTATION);
                match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                    Ok(_) => return Ok(true),
                    Err(e) if conflict(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(false)
        };
        match tokio::time::timeout(self.timing.renew_deadline, attempt).await {
            Ok(Ok(true)) => tracing::info!("released the Lease {}", self.lease),
            Ok(Ok(false)) => tracing::debug!("the Lease {} was no longer held by this instance", self.lease),
            Ok(Err(e)) => tracing::warn!("cannot release the Lease {}: {}", self.lease, api_message(&e)),
            Err(_) => tracing::warn!("cannot release the Lease {}: no answer", self.lease),
        }
    }

    /// A candidate that stops before it acquired takes back its claim, so that the
    /// holder does not yield to nobody and lower priorities need not wait for it to age.
    async fn withdraw_claim(&mut self) {
        if !self.claimed {
            return;
        }
        let attempt = async {
            let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
            let annotations = lease.metadata.annotations.get_or_insert_with(Default::default);
            if drop_own_claim(annotations, &self.identity) {
                let _ = self.api.replace(&self.name, &PostParams::default(), &lease).await;
            }
        };
        let _ = tokio::time::timeout(self.timing.retry_period, attempt).await;
    }
}

/// Removes the takeover claim if `identity` made it; whether it did.
fn drop_own_claim(annotations: &mut std::collections::BTreeMap<String, String>, identity: &str) -> bool {
    let mine = annotations
        .get(CLAIM_ANNOTATION)
        .and_then(|t| serde_json::from_str::<Claim>(t).ok())
        .is_some_and(|c| c.identity == identity);
    if mine {
        annotations.remove(CLAIM_ANNOTATION);
    }
    mine
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// The Lease is free (or ours) and nobody of higher priority claims it.
    Take,
    /// `leader` (identity, priority) holds it or is taking it over; with `claim`, ask it to hand over.
    Wait { leader: (String, i32), claim: bool },
}

/// The election and priority rules, on one look at the Lease.
fn decide(v: &View, me: &str, priority: i32) -> Decision {
    if let Some(holder) = v.holder.as_ref().filter(|h| *h != me) {
        let claim_taken = v.claim.as_ref().is_some_and(|c| c.identity != me && c.priority >= priority);
        let claim = priority > v.holder_priority && !claim_taken;
        return Decision::Wait { leader: (holder.clone(), v.holder_priority), claim };
    }
    match v.claim.as_ref().filter(|c| outranks(c, me, priority)) {
        Some(c) => Decision::Wait { leader: (c.identity.clone(), c.priority), claim: false },
        None => Decision::Take,
    }
}

/// A claim by another instance of higher priority.
fn outranks(c: &Claim, me: &str, priority: i32) -> bool {
    c.identity != me && c.priority > priority
}

/// Ends every running hook at once and gives the runner a moment to wind down: another
/// instance may already run hooks.
async fn abort<E>(work: &CancellationToken, run: impl Future<Output = Result<(), E>>, err: LeaderError) -> LeaderError {
    crate::runtime::hooks::spawn::abort_all();
    work.cancel();
    metrics::standing_by();
    let _ = tokio::time::timeout(Duration::from_secs(1), run).await;
    err
}

/// When `value` was first seen (now, if it differs from the last one).
fn observed(slot: &mut Option<(String, Instant)>, value: String) -> Instant {
    match slot {
        Some((v, at)) if *v == value => *at,
        _ => {
            let now = Instant::now();
            *slot = Some((value, now));
            now
        }
    }
}

/// A claim counts while it is younger than a lease duration, both by its own time and
/// by when it was seen here (a claimant whose clock runs ahead cannot block forever).
fn fresh(c: &Claim, seen: Instant, lease_duration: Duration) -> bool {
    let age = c.time.parse::<Timestamp>().ok().map(|t| Timestamp::now().duration_since(t));
    let young_by_its_time = age.is_some_and(|a| a.as_secs_f64() < lease_duration.as_secs_f64());
    young_by_its_time && seen.elapsed() < lease_duration
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(s as u64)
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Errors that retrying cannot fix: permissions, a missing namespace, an invalid name.
fn refused(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 409 && s.code != 429)
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Host name and PID, as unique as the pod and readable in `kubectl get lease -o yaml`.
/// `<host name>_<PID>_<random>`: two containers sharing a host name (host networking)
/// both run as PID 1, so the host name and PID alone could name two instances alike.
pub fn identity() -> String {
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "unknown".into());
    format!("{host}_{}_{:08x}", std::process::id(), rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(identity: &str, priority: i32, time: Timestamp) -> Claim {
        Claim { identity: identity.into(), priority, time: time.to_string() }
    }

    #[test]
    fn a_claim_is_fresh_for_one_lease_duration() {
        let d = Duration::from_secs(15);
        assert!(fresh(&claim("x", 1, Timestamp::now()), Instant::now(), d));
        let old = Timestamp::now() - jiff::SignedDuration::from_secs(20);
        assert!(!fresh(&claim("x", 1, old), Instant::now(), d), "old by its own time");
        let seen_long_ago = Instant::now().checked_sub(Duration::from_secs(20)).unwrap();
        assert!(!fresh(&claim("x", 1, Timestamp::now()), seen_long_ago, d), "a clock running ahead");
        assert!(!fresh(&Claim { time: "garbage".into(), ..claim("x", 1, Timestamp::now()) }, Instant::now(), d));
    }

    #[test]
    fn an_observation_keeps_its_time_until_the_value_changes() {
        let mut slot = None;
        let first = observed(&mut slot, "a".into());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(observed(&mut slot, "a".into()), first);
        assert!(observed(&mut slot, "b".into()) > first);
    }

    fn held_by(holder: &str, priority: i32) -> View {
        View { holder: Some(holder.into()), holder_priority: priority, ..View::default() }
    }

    fn wait(leader: &str, priority: i32, claim: bool) -> Decision {
        Decision::Wait { leader: (leader.into(), priority), claim }
    }

    #[test]
    fn equal_priorities_wait_for_the_holder_without_a_claim() {
        assert_eq!(decide(&held_by("a", 0), "b", 0), wait("a", 0, false));
    }

    #[test]
    fn a_higher_priority_claims_and_a_lower_one_does_not() {
        assert_eq!(decide(&held_by("a", 0), "dev", 100), wait("a", 0, true));
        assert_eq!(decide(&held_by("dev", 100), "a", 0), wait("dev", 100, false));
    }

    #[test]
    fn a_free_lease_is_taken_unless_a_higher_priority_claims_it() {
        assert_eq!(decide(&View::default(), "a", 0), Decision::Take);
        let claimed = View { claim: Some(claim("dev", 100, Timestamp::now())), ..View::default() };
        assert_eq!(decide(&claimed, "a", 0), wait("dev", 100, false));
        assert_eq!(decide(&claimed, "dev", 100), Decision::Take, "its own claim");
        assert_eq!(decide(&claimed, "other", 100), Decision::Take, "an equal priority is an ordinary election");
        assert_eq!(decide(&claimed, "top", 200), Decision::Take);
    }

    #[test]
    fn a_claim_is_not_overwritten_by_an_equal_or_lower_priority() {
        let v = View { claim: Some(claim("dev", 100, Timestamp::now())), ..held_by("a", 0) };
        assert_eq!(decide(&v, "dev2", 100), wait("a", 0, false));
        assert_eq!(decide(&v, "dev2", 50), wait("a", 0, false));
        assert_eq!(decide(&v, "dev", 100), wait("a", 0, true), "its own claim is refreshed");
        assert_eq!(decide(&v, "top", 200), wait("a", 0, true));
    }

    #[test]
    fn the_holder_yields_only_to_a_higher_priority() {
        assert!(outranks(&claim("dev", 100, Timestamp::now()), "a", 0));
        assert!(!outranks(&claim("dev", 0, Timestamp::now()), "a", 0));
        assert!(!outranks(&claim("a", 100, Timestamp::now()), "a", 0));
    }

    #[test]
    fn identity_is_host_pid_and_a_random_part_so_two_pid_1_containers_differ() {
        let (a, b) = (identity(), identity());
        assert!(a.contains(&format!("_{}_", std::process::id())), "{a}");
        assert_ne!(a, b);
    }
}
