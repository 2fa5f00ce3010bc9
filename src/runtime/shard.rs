//! `--shards`: members of a group share the objects, each running the hooks of the ones it owns.
//!
//! Every member holds its own coordination.k8s.io/v1 Lease, labelled with the group and
//! renewed like the leader's. The live Leases of the group are the members; the owner of
//! an object is [`crate::model::shard::owner`] over them. Expiry is judged as client-go
//! does: by this process's monotonic clock from when a Lease's record was seen to change.
//!
//! Hand-over without overlap rests on one promise: each member publishes in its Lease the
//! member list (its *view*) under which it runs hooks, and publishes a new view only once
//! no hook runs for an object that view gives to another member. A member starts a hook
//! for an object only when its current and its published view both give the object to
//! it, and no other live member's published view gives it to that member. Each member
//! writes its Lease before it reads the group's Leases (a quorum read), so of two members
//! both claiming an object at least one sees the other's claim. A member that cannot
//! renew within the renew deadline starts no hook from then on (checked before every
//! start, [`spawn::fence`]), ends the running ones and owns nothing until it renews;
//! others take its objects once its Lease expires by their clocks (lease duration after
//! they saw its last renewal, longer than its renew deadline). docs/OPERATIONS.md,
//! "Scaling out".

use crate::model::event::{EventType, ObjectEvent};
use crate::model::lease::Timing;
use crate::model::shard::{self, GROUP_LABEL, Parsed, RECORD_ANNOTATION, Record};
use crate::runtime::hooks::spawn;
use crate::runtime::metrics;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("the API server refused the Lease {lease}: {message}")]
    Refused { lease: String, message: String },
    #[error(
        "the Lease {lease} of the shard group {group} was written with shard hashing version {theirs}; this operator uses version {ours}, and members of different versions cannot share a group: stop the other members first, or use another --lease-name"
    )]
    Incompatible { lease: String, group: String, theirs: u32, ours: u32 },
}

/// Members seen: the new member list, and who left it and why.
#[derive(Debug, Clone)]
pub struct ViewChange {
    pub members: Arc<[String]>,
    /// (identity, "left" | "expired")
    pub departed: Vec<(String, &'static str)>,
}

#[derive(Default)]
struct State {
    /// The live members as this member sees them (itself included while its Lease is valid).
    view: Arc<[String]>,
    /// What its Lease says: it runs hooks under this view.
    published: Arc<[String]>,
    /// The other live members and the views they published.
    others: Vec<(String, Vec<String>)>,
    /// Why no hook may start now: a live Lease in the group that cannot be read.
    blocked: Option<String>,
    valid_until: Option<Instant>,
    /// Objects whose hooks run now, and how many.
    running: HashMap<Arc<str>, usize>,
}

/// What the workers ask before running an object's hooks; shared with the membership task.
pub struct Shard {
    me: String,
    /// Every object's newest state as the watch gave it: a hook gets the state as of its
    /// start, so that a hand-over (which waits) never delivers an older state than the
    /// one the old owner delivered before it released the object.
    latest: Mutex<HashMap<Arc<str>, Arc<str>>>,
    state: Mutex<State>,
    wake: watch::Sender<u64>,
    drained: Notify,
}

impl Shard {
    fn new(me: String) -> Arc<Shard> {
        Arc::new(Shard {
            me,
            latest: Mutex::default(),
            state: Mutex::default(),
            wake: watch::channel(0).0,
            drained: Notify::new(),
        })
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn view(&self) -> Arc<[String]> {
        self.lock().view.clone()
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.wake.send_modify(|n| *n += 1);
    }

    fn may_start(&self, s: &State, key: &str) -> bool {
        s.blocked.is_none()
            && s.valid_until.is_some_and(|v| Instant::now() < v)
            && shard::owns(&s.view, &self.me, key)
            && shard::owns(&s.published, &self.me, key)
            && s.others.iter().all(|(id, view)| !shard::owns(view, id, key))
    }

    /// Waits until this member may run `key`'s hooks and marks them running; None when
    /// the object is not (or no longer) this member's, or on `stop`.
    pub async fn acquire(self: &Arc<Self>, key: &Arc<str>, stop: &CancellationToken) -> Option<Running> {
        let mut changes = self.wake.subscribe();
        loop {
            {
                let mut s = self.lock();
                if !shard::owns(&s.view, &self.me, key) {
                    return None;
                }
                if self.may_start(&s, key) {
                    *s.running.entry(key.clone()).or_default() += 1;
                    return Some(Running { shard: self.clone(), key: key.clone() });
                }
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = stop.cancelled() => return None,
                // Validity ends with time, not with a change.
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// The event with the object's newest state (a deletion keeps its own).
    pub fn freshen(&self, ev: ObjectEvent) -> ObjectEvent {
        if ev.kind == EventType::Deleted {
            return ev;
        }
        match self.latest.lock().unwrap_or_else(|e| e.into_inner()).get(&ev.key) {
            Some(object) if *object != ev.object => ObjectEvent { object: object.clone(), ..ev },
            _ => ev,
        }
    }

    fn saw(&self, ev: &ObjectEvent) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        match ev.kind {
            EventType::Deleted => latest.remove(&ev.key),
            _ => latest.insert(ev.key.clone(), ev.object.clone()),
        };
    }

    /// No hook runs for an object the current view gives to another member.
    fn is_drained(&self, s: &State) -> bool {
        s.running.keys().all(|k| shard::owns(&s.view, &self.me, k))
    }
}

/// An object's hooks are running; dropped when they ended.
pub struct Running {
    shard: Arc<Shard>,
    key: Arc<str>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut s = self.shard.lock();
        if let Some(n) = s.running.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                s.running.remove(&self.key);
            }
        }
        let released = !shard::owns(&s.view, &self.shard.me, &self.key);
        drop(s);
        if released {
            self.shard.drained.notify_one();
        }
    }
}

/// One look at a Lease of the group.
struct Seen {
    version: String,
    since: Instant,
}

/// This member's Lease and its view of the group's.
pub struct Membership {
    api: Api<Lease>,
    group: String,
    label: String,
    name: String,
    timing: Timing,
    shard: Arc<Shard>,
    seen: HashMap<String, Seen>,
    reported: HashSet<String>,
    changes: mpsc::UnboundedSender<ViewChange>,
    lost: bool,
    failing: bool,
}

impl Membership {
    /// Joins the group: refuses one of another hashing version, writes this member's
    /// Lease and reads the group until it has published its first view.
    pub async fn join(
        client: kube::Client,
        namespace: &str,
        group: &str,
        timing: Timing,
    ) -> Result<(Membership, mpsc::UnboundedReceiver<ViewChange>), ShardError> {
        let identity = crate::runtime::leader::identity();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut m = Membership {
            api: Api::namespaced(client, namespace),
            group: group.to_string(),
            label: shard::group_label_value(group),
            name: shard::member_lease_name(group, &identity),
            timing,
            shard: Shard::new(identity),
            seen: HashMap::new(),
            reported: HashSet::new(),
            changes: tx,
            lost: false,
            failing: false,
        };
        m.refuse_other_versions().await?;
        tracing::info!("joining the shard group {group} in {namespace} as {} (Lease {})", m.shard.me, m.name);
        while m.shard.lock().published.is_empty() {
            let started = m.round().await?;
            tokio::time::sleep_until((started + m.timing.retry_period.min(Duration::from_millis(200))).into()).await;
        }
        Ok((m, rx))
    }

    pub fn shard(&self) -> Arc<Shard> {
        self.shard.clone()
    }

    /// A member of another version whose Lease looks renewed (by its own time stamp, the
    /// only hint before any change was seen) stops this one before it writes anything.
    async fn refuse_other_versions(&self) -> Result<(), ShardError> {
        let leases = self.list().await.map_err(|e| self.refused(e))?;
        for lease in leases {
            let Parsed::Incompatible(theirs) = record_of(&lease) else { continue };
            let spec = lease.spec.clone().unwrap_or_default();
            let renewed = spec.renew_time.map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
            let duration = spec.lease_duration_seconds.unwrap_or(15).max(0);
            if Timestamp::now().duration_since(renewed).as_secs() < i64::from(duration) + 5 {
                return Err(ShardError::Incompatible {
                    lease: lease.metadata.name.unwrap_or_default(),
                    group: self.group.clone(),
                    theirs,
                    ours: shard::HASH_VERSION,
                });
            }
        }
        Ok(())
    }

    fn refused(&self, e: kube::Error) -> ShardError {
        ShardError::Refused { lease: self.name.clone(), message: api_message(&e) }
    }

    /// Renews every retry period (at once when a released object's hooks ended, so
    /// that the new owner waits no longer than needed) until `until`; then deletes the
    /// Lease, so that the others take over at once. A refused Lease cancels `fatal`.
    pub async fn run(mut self, fatal: CancellationToken, until: CancellationToken) -> Result<(), ShardError> {
        loop {
            let started = match self.round().await {
                Ok(started) => started,
                Err(e) => {
                    fatal.cancel();
                    return Err(e);
                }
            };
            let next = started + self.timing.retry_period;
            let deadline = self.shard.lock().valid_until.unwrap_or(next);
            let (pending, drained) = {
                let s = self.shard.lock();
                (s.view != s.published, self.shard.is_drained(&s))
            };
            self.check_deadline();
            if pending && drained && !self.failing && !until.is_cancelled() {
                // Publish the new view now: the new owners wait for it.
                continue;
            }
            tokio::select! {
                _ = until.cancelled() => break,
                _ = tokio::time::sleep_until(next.min(deadline.max(started)).into()) => {}
                _ = self.shard.drained.notified(), if pending => {}
            }
            self.check_deadline();
        }
        self.leave().await;
        Ok(())
    }

    /// Past the renew deadline: no hook starts (spawn's fence already refuses them),
    /// the running ones end, and this member owns nothing until it renews.
    fn check_deadline(&mut self) {
        let expired = self.shard.lock().valid_until.is_some_and(|v| Instant::now() >= v);
        if !expired || self.lost {
            return;
        }
        self.lost = true;
        tracing::warn!(
            "cannot renew the Lease {} within the renew deadline ({:?}): running hooks were ended and none start until it is renewed; the other members take this member's objects",
            self.name,
            self.timing.renew_deadline
        );
        spawn::end_running();
        self.set_view(Vec::new(), Vec::new());
    }

    /// Writes this member's Lease (publishing its view if drained), then reads the group.
    async fn round(&mut self) -> Result<Instant, ShardError> {
        let started = Instant::now();
        let target = {
            let s = self.shard.lock();
            if self.shard.is_drained(&s) { s.view.clone() } else { s.published.clone() }
        };
        let left = self.timing.retry_period.max(Duration::from_millis(500));
        let wrote = match tokio::time::timeout(left, self.write(&target)).await {
            Ok(Ok(())) => {
                self.renewed(started);
                true
            }
            Ok(Err(e)) if refused(&e) => return Err(self.refused(e)),
            Ok(Err(e)) => self.failed(&api_message(&e)),
            Err(_) => self.failed("no answer within the retry period"),
        };
        match tokio::time::timeout(left, self.list()).await {
            Ok(Ok(leases)) => {
                self.observe(leases);
                // A claim counts for starting hooks only with a read of the others' claims
                // made after it was written: of two members claiming one object, the later
                // reader sees the earlier claim.
                if wrote {
                    self.shard.update(|s| s.published = target);
                }
            }
            Ok(Err(e)) if refused(&e) => return Err(self.refused(e)),
            Ok(Err(e)) => drop(self.failed(&api_message(&e))),
            Err(_) => drop(self.failed("no answer within the retry period")),
        }
        Ok(started)
    }

    fn renewed(&mut self, started: Instant) {
        let valid_until = started + self.timing.renew_deadline;
        spawn::fence(Some(valid_until));
        metrics::lease_ok();
        let (failing, lost) = (std::mem::take(&mut self.failing), std::mem::take(&mut self.lost));
        if failing || lost {
            tracing::info!("renewed the Lease {} again", self.name);
        }
        self.shard.update(|s| s.valid_until = Some(valid_until));
    }

    fn failed(&mut self, why: &str) -> bool {
        metrics::lease_failed();
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!("cannot renew or read the shard Leases of {}: {why}; retrying", self.group);
        }
        false
    }

    async fn write(&self, view: &[String]) -> Result<(), kube::Error> {
        let now = serde_json::to_value(MicroTime(Timestamp::now())).unwrap_or_default();
        let body = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "labels": { GROUP_LABEL: self.label },
                "annotations": { RECORD_ANNOTATION: Record::new(view.to_vec()).to_text() },
            },
            "spec": {
                "holderIdentity": self.shard.me,
                "leaseDurationSeconds": self.timing.lease_duration.as_secs_f64().ceil() as i32,
                "renewTime": now,
            },
        });
        match self.api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&body)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let lease: Lease = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
                self.api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// The group's Leases, read from etcd (no resourceVersion: a quorum read).
    async fn list(&self) -> Result<Vec<Lease>, kube::Error> {
        let lp = ListParams::default().labels(&format!("{GROUP_LABEL}={}", self.label));
        Ok(self.api.list(&lp).await?.items)
    }

    /// Who is live, what each published, and whether an unreadable Lease blocks starts.
    fn observe(&mut self, leases: Vec<Lease>) {
        let now = Instant::now();
        let (mut members, mut others, mut blocked) = (Vec::new(), Vec::new(), None);
        let mut holders = HashSet::new();
        let names: HashSet<String> = leases.iter().filter_map(|l| l.metadata.name.clone()).collect();
        self.seen.retain(|name, _| names.contains(name));
        for lease in leases {
            let name = lease.metadata.name.clone().unwrap_or_default();
            let spec = lease.spec.clone().unwrap_or_default();
            if let Some(h) = spec.holder_identity.clone() {
                holders.insert(h);
            }
            if name == self.name {
                continue;
            }
            let version = lease.metadata.resource_version.clone().unwrap_or_default();
            let seen = self.seen.entry(name.clone()).or_insert(Seen { version: version.clone(), since: now });
            if seen.version != version {
                *seen = Seen { version: version.clone(), since: now };
            }
            let duration = spec.lease_duration_seconds.map_or(self.timing.lease_duration, secs);
            let since = seen.since;
            if now >= since + duration {
                self.forget_if_long_dead(&lease, since, duration);
                continue;
            }
            match (record_of(&lease), spec.holder_identity.filter(|h| !h.is_empty())) {
                (Parsed::Member(r), Some(holder)) => {
                    members.push(holder.clone());
                    others.push((holder, r.view));
                }
                (Parsed::Member(_), None) => blocked = Some(self.unreadable(&name, &version, "no holderIdentity")),
                (Parsed::Incompatible(v), _) => {
                    blocked = Some(self.unreadable(&name, &version, &format!("shard hashing version {v}")))
                }
                (Parsed::Garbage(why), _) => blocked = Some(self.unreadable(&name, &version, &why)),
            }
        }
        let valid = self.shard.lock().valid_until.is_some_and(|v| now < v);
        if valid {
            members.push(self.shard.me.clone());
        }
        members.sort();
        members.dedup();
        self.shard.update(|s| {
            s.others = others;
            s.blocked = blocked;
        });
        let old = self.shard.view();
        if *old != *members {
            let departed = old
                .iter()
                .filter(|m| !members.contains(m))
                .map(|m| (m.clone(), if holders.contains(m) { "expired" } else { "left" }))
                .collect();
            self.set_view(members, departed);
        }
    }

    /// A live Lease of the group that is not a member's record: no hook starts while it
    /// is live (it may be a member's, edited by hand; the member writes it back at its
    /// next renewal), and it is ignored once it expired.
    fn unreadable(&mut self, name: &str, version: &str, why: &str) -> String {
        let text = format!("the Lease {name} of the shard group {} cannot be read as a member's: {why}", self.group);
        if self.reported.insert(format!("{name}@{version}")) {
            tracing::error!("{text}; no hook starts until it is rewritten by its member or expires");
        }
        text
    }

    /// A Lease that stopped changing three lease durations ago is a member that died
    /// without leaving: deleted (only if still unchanged), so that it clutters nothing.
    fn forget_if_long_dead(&self, lease: &Lease, since: Instant, duration: Duration) {
        if since.elapsed() < 3 * duration {
            return;
        }
        let (api, name) = (self.api.clone(), lease.metadata.name.clone().unwrap_or_default());
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lease.metadata.resource_version.clone(),
                uid: lease.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        tokio::spawn(async move {
            if api.delete(&name, &dp).await.is_ok() {
                tracing::info!("deleted the Lease {name} of a member that stopped renewing long ago");
            }
        });
    }

    fn set_view(&mut self, members: Vec<String>, departed: Vec<(String, &'static str)>) {
        let members: Arc<[String]> = members.into();
        metrics::shard_members(members.len());
        let old = self.shard.view();
        let joined: Vec<&str> = members.iter().filter(|m| !old.contains(m)).map(String::as_str).collect();
        let left: Vec<String> = departed.iter().map(|(m, why)| format!("{m} ({why})")).collect();
        tracing::info!(
            "shard group {}: {} member(s){}{}",
            self.group,
            members.len(),
            if joined.is_empty() { String::new() } else { format!("; joined: {}", joined.join(", ")) },
            if left.is_empty() { String::new() } else { format!("; gone: {}", left.join(", ")) },
        );
        self.shard.update(|s| s.view = members.clone());
        let _ = self.changes.send(ViewChange { members, departed });
    }

    /// Deletes this member's Lease once its hooks ended: its objects go to the others now.
    async fn leave(&self) {
        spawn::fence(None);
        let dp = DeleteParams::default();
        let attempt = self.api.delete(&self.name, &dp);
        match tokio::time::timeout(self.timing.renew_deadline, attempt).await {
            Ok(Ok(_)) => tracing::info!("left the shard group {}: deleted the Lease {}", self.group, self.name),
            Ok(Err(e)) => tracing::warn!("cannot delete the Lease {}: {}", self.name, api_message(&e)),
            Err(_) => tracing::warn!("cannot delete the Lease {}: no answer", self.name),
        }
    }
}

fn record_of(lease: &Lease) -> Parsed {
    Record::parse(lease.metadata.annotations.as_ref().and_then(|a| a.get(RECORD_ANNOTATION)).map(String::as_str))
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

fn refused(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if (400..500).contains(&s.code) && ![404, 409, 429].contains(&s.code))
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// The watch's side: which events are this member's, and the objects it gains when the
/// members change (their current state as ADDED, or DELETED for one deleted meanwhile).
pub struct Ownership {
    shard: Arc<Shard>,
    changes: mpsc::UnboundedReceiver<ViewChange>,
    view: Arc<[String]>,
    /// Objects deleted while another member owned them, in case they come to this one
    /// before that member delivered the deletion.
    tombstones: HashMap<Arc<str>, (Arc<str>, Instant)>,
}

/// How long a deletion is kept for a possible hand-over.
const TOMBSTONE_AGE: Duration = Duration::from_secs(600);

impl Ownership {
    pub fn new(shard: Arc<Shard>, changes: mpsc::UnboundedReceiver<ViewChange>) -> Ownership {
        let view = shard.view();
        Ownership { shard, changes, view, tombstones: HashMap::new() }
    }

    pub fn shard(&self) -> Arc<Shard> {
        self.shard.clone()
    }

    pub fn mine(&self, key: &str) -> bool {
        shard::owns(&self.view, &self.shard.me, key)
    }

    /// Whether the event goes to this member's queue; a deletion of another's object is kept aside.
    pub fn keep(&mut self, ev: &ObjectEvent) -> bool {
        self.shard.saw(ev);
        if self.mine(&ev.key) {
            return true;
        }
        if ev.kind == EventType::Deleted {
            self.tombstones.insert(ev.key.clone(), (ev.object.clone(), Instant::now()));
        } else {
            self.tombstones.remove(&ev.key);
        }
        false
    }

    pub async fn next(&mut self) -> Option<ViewChange> {
        self.changes.recv().await
    }

    /// The members changed: the objects gained come again, as the watch knows them now.
    pub fn rebalance<'a>(
        &mut self,
        change: ViewChange,
        known: impl Iterator<Item = (&'a Arc<str>, &'a Arc<str>)>,
    ) -> Vec<ObjectEvent> {
        let (old, me) = (std::mem::replace(&mut self.view, change.members.clone()), self.shard.me.clone());
        let gained = |key: &str| shard::owns(&change.members, &me, key) && !shard::owns(&old, &me, key);
        let (mut out, mut owned, mut released) = (Vec::new(), 0usize, 0usize);
        let mut reasons: HashMap<&'static str, u64> = HashMap::new();
        for (key, object) in known {
            if shard::owns(&change.members, &me, key) {
                owned += 1;
            } else if shard::owns(&old, &me, key) {
                released += 1;
            }
            if gained(key) {
                *reasons.entry(reason(&old, &change, key)).or_default() += 1;
                out.push(ObjectEvent::new(EventType::Added, key.clone(), object.clone()));
            }
        }
        self.tombstones.retain(|_, (_, at)| at.elapsed() < TOMBSTONE_AGE);
        let gone: Vec<Arc<str>> = self.tombstones.keys().filter(|k| gained(k)).cloned().collect();
        for key in gone {
            let (object, _) = self.tombstones.remove(&key).expect("a tombstone");
            *reasons.entry(reason(&old, &change, &key)).or_default() += 1;
            out.push(ObjectEvent::new(EventType::Deleted, key, object));
        }
        for (why, n) in &reasons {
            metrics::shard_handovers(why, *n);
        }
        metrics::shard_owned(owned);
        tracing::info!("this member owns {owned} object(s) now: {} gained, {released} released", out.len());
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// Why an object came to this member: its owner joined the rebalance, left, expired,
/// or this member itself (re)joined.
fn reason(old: &[String], change: &ViewChange, key: &str) -> &'static str {
    match shard::owner(old, key) {
        None => "rejoined",
        Some(prev) => match change.departed.iter().find(|(m, _)| m == prev) {
            Some((_, why)) => why,
            None => "rebalanced",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(view: &[&str], published: &[&str], others: &[(&str, &[&str])]) -> State {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        State {
            view: v(view).into(),
            published: v(published).into(),
            others: others.iter().map(|(id, pv)| (id.to_string(), v(pv))).collect(),
            valid_until: Some(Instant::now() + Duration::from_secs(60)),
            ..State::default()
        }
    }

    fn key_of(members: &[&str], who: &str) -> String {
        (0..).map(|i| format!("ns/o{i}")).find(|k| shard::owner(members, k) == Some(who)).unwrap()
    }

    #[test]
    fn a_member_waits_for_the_old_owner_to_publish_the_release() {
        let s = Shard::new("b".into());
        let k = key_of(&["a", "b"], "b");
        assert_eq!(shard::owner(&["a"], &k), Some("a"));
        let waiting = state(&["a", "b"], &["a", "b"], &[("a", &["a"])]);
        assert!(!s.may_start(&waiting, &k), "a still claims it under its published view");
        let released = state(&["a", "b"], &["a", "b"], &[("a", &["a", "b"])]);
        assert!(s.may_start(&released, &k));
    }

    #[test]
    fn nothing_starts_unpublished_blocked_or_past_the_renew_deadline() {
        let s = Shard::new("b".into());
        let k = key_of(&["a", "b"], "b");
        assert!(!s.may_start(&state(&["a", "b"], &[], &[]), &k), "not yet published");
        let blocked = State { blocked: Some("x".into()), ..state(&["a", "b"], &["a", "b"], &[]) };
        assert!(!s.may_start(&blocked, &k));
        let late = State { valid_until: Some(Instant::now()), ..state(&["a", "b"], &["a", "b"], &[]) };
        assert!(!s.may_start(&late, &k));
    }

    #[test]
    fn drained_means_no_hook_runs_for_an_object_given_away() {
        let s = Shard::new("a".into());
        let given = key_of(&["a", "b"], "b");
        let mut st = state(&["a", "b"], &["a"], &[]);
        assert!(s.is_drained(&st));
        st.running.insert(given.as_str().into(), 1);
        assert!(!s.is_drained(&st));
    }

    #[test]
    fn gained_objects_come_as_added_and_deleted_ones_as_deleted() {
        let s = Shard::new("b".into());
        s.update(|st| st.view = vec!["a".to_string()].into());
        let (tx, rx) = mpsc::unbounded_channel();
        let mut own = Ownership::new(s, rx);
        let (k1, k2) = (key_of(&["a", "b"], "b"), key_of(&["a", "b"], "a"));
        let gone: Arc<str> = format!("{}x", key_of(&["a", "b"], "b")).into();
        let gone = (0..)
            .map(|i| Arc::<str>::from(format!("{gone}{i}")))
            .find(|k| shard::owner(&["a", "b"], k) == Some("b"))
            .unwrap();
        let deleted = ObjectEvent::new(EventType::Deleted, gone.clone(), "{}".into());
        assert!(!own.keep(&deleted));
        let known: Vec<(Arc<str>, Arc<str>)> = vec![(k1.as_str().into(), "1".into()), (k2.as_str().into(), "2".into())];
        drop(tx);
        let change = ViewChange { members: vec!["a".to_string(), "b".to_string()].into(), departed: vec![] };
        let out = own.rebalance(change, known.iter().map(|(k, o)| (k, o)));
        let got: Vec<(EventType, &str)> = out.iter().map(|e| (e.kind, &*e.key)).collect();
        let mut want = vec![(EventType::Added, k1.as_str()), (EventType::Deleted, &*gone)];
        want.sort_by(|a, b| a.1.cmp(b.1));
        assert_eq!(got, want);
        assert!(own.mine(&k1) && !own.mine(&k2));
    }
}
