//! Watches the resource with kube-runtime's watcher and turns its stream into ADDED/MODIFIED/DELETED/SYNC events.

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, TypeMeta};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::event::{EventType, FinalizerAction, ObjectEvent};
use crate::model::filter::ObjectFilter;
use crate::runtime::journal::Journal;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the API server refused to list {resource}: {message}")]
    ListRefused { resource: String, message: String },
    #[error("the event queue closed")]
    QueueClosed,
    #[error(transparent)]
    Journal(#[from] crate::runtime::journal::JournalError),
}

/// The identity and last JSON of an object, as the tracker needs them.
#[derive(Debug, Clone)]
pub struct Seen {
    pub key: Arc<str>,
    pub uid: Box<str>,
    pub version: Box<str>,
    pub object: Arc<str>,
    pub finalizer: FinalizerAction,
    /// Whether it carries our finalizer.
    pub held: bool,
    /// fields::digest of the object, with --ignore-status-changes.
    pub digest: Option<u64>,
}

struct Known {
    uid: Box<str>,
    version: Box<str>,
    object: Arc<str>,
    digest: Option<u64>,
    /// The deleted hook was already given this object (finalizer mode).
    finalized: bool,
}

/// Remembers each object's last version so that re-lists give exactly the changes
/// of the gap: MODIFIED for changed objects, DELETED for vanished ones, nothing else.
#[derive(Default)]
pub struct Tracker {
    known: HashMap<Arc<str>, Known>,
    relisted: Option<HashSet<Arc<str>>>,
    listed_once: bool,
    changes_only: bool,
}

impl Tracker {
    pub fn new(changes_only: bool) -> Self {
        Tracker { changes_only, ..Tracker::default() }
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// A (re-)list starts.
    pub fn init(&mut self) {
        self.relisted = Some(HashSet::new());
    }

    /// An object from a list or a watch.
    pub fn apply(&mut self, seen: Seen) -> Vec<ObjectEvent> {
        if let Some(listed) = self.relisted.as_mut() {
            listed.insert(seen.key.clone());
        }
        let silent = self.changes_only && !self.listed_once && self.relisted.is_some();
        let mut out = Vec::new();
        let mut finalized = false;
        let kind = match self.known.get(&seen.key) {
            Some(k) if k.uid != seen.uid => {
                if !k.finalized {
                    out.push(event(EventType::Deleted, &seen.key, &k.object));
                }
                EventType::Added
            }
            Some(k) if k.version == seen.version => {
                tracing::debug!("{}: resourceVersion {} seen before; no event", seen.key, seen.version);
                return out;
            }
            Some(k) if seen.digest.is_some() && k.digest == seen.digest && seen.finalizer == FinalizerAction::None => {
                tracing::debug!(
                    "{}: resourceVersion {} changes only status or bookkeeping; skipped (--ignore-status-changes)",
                    seen.key,
                    seen.version
                );
                let known = self.known.get_mut(&seen.key).expect("known");
                (known.version, known.object) = (seen.version, seen.object);
                return out;
            }
            Some(k) => {
                finalized = k.finalized;
                EventType::Modified
            }
            None => EventType::Added,
        };
        let finalizing = seen.finalizer == FinalizerAction::Remove;
        if finalizing && !finalized {
            // Being deleted and held by our finalizer: the deleted hook's turn, even with -c.
            let ev = event(EventType::Deleted, &seen.key, &seen.object);
            out.push(ObjectEvent { finalizer: FinalizerAction::Remove, ..ev });
        } else if !finalizing && (!silent || seen.finalizer == FinalizerAction::Add) {
            // With -c an existing object still gets the finalizer, but no hook.
            let ev = event(kind, &seen.key, &seen.object);
            out.push(ObjectEvent { finalizer: seen.finalizer, hook: !silent, ..ev });
        }
        let known = Known {
            uid: seen.uid,
            version: seen.version,
            object: seen.object,
            digest: seen.digest,
            finalized: finalizing || finalized,
        };
        self.known.insert(seen.key, known);
        out
    }

    /// The list is complete: whatever it did not contain is gone.
    pub fn init_done(&mut self) -> Vec<ObjectEvent> {
        self.listed_once = true;
        let Some(listed) = self.relisted.take() else {
            return Vec::new();
        };
        let mut gone: Vec<Arc<str>> = self.known.keys().filter(|k| !listed.contains(*k)).cloned().collect();
        gone.sort();
        gone.into_iter()
            .filter_map(|key| {
                self.known.remove(&key).filter(|k| !k.finalized).map(|k| event(EventType::Deleted, &key, &k.object))
            })
            .collect()
    }

    /// An object was deleted; its final state is what the hook gets.
    pub fn delete(&mut self, seen: Seen) -> Vec<ObjectEvent> {
        match self.known.remove(&seen.key) {
            Some(k) if !k.finalized => vec![event(EventType::Deleted, &seen.key, &seen.object)],
            _ => Vec::new(),
        }
    }

    /// The object no longer passes the filters: to hooks it is gone, as for an object
    /// leaving a --label-selector. Our finalizer goes once the deleted hook succeeded.
    pub fn leave(&mut self, seen: Seen) -> Vec<ObjectEvent> {
        match self.known.remove(&seen.key) {
            Some(k) if !k.finalized => {
                let finalizer = if seen.held { FinalizerAction::Remove } else { FinalizerAction::None };
                vec![ObjectEvent { finalizer, ..event(EventType::Deleted, &seen.key, &seen.object) }]
            }
            _ => Vec::new(),
        }
    }

    /// Every known object's JSON, in key order, for the snapshot hook.
    pub fn objects(&self) -> Vec<Arc<str>> {
        self.objects_where(|_| true)
    }

    /// The JSON of the known objects whose key passes `keep`, in key order.
    pub fn objects_where(&self, keep: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        let mut keyed: Vec<_> = self.known.iter().filter(|(k, _)| keep(k)).collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(b.0));
        keyed.into_iter().map(|(_, k)| k.object.clone()).collect()
    }

    /// Every known object's key and JSON, in no order.
    pub fn entries(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.known.iter().map(|(key, k)| (key, &k.object))
    }

    /// Every known object again, for --resync.
    pub fn sync(&self) -> Vec<ObjectEvent> {
        let mut out: Vec<_> = self.known.iter().map(|(key, k)| event(EventType::Sync, key, &k.object)).collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

fn event(kind: EventType, key: &Arc<str>, object: &Arc<str>) -> ObjectEvent {
    ObjectEvent::new(kind, key.clone(), object.clone())
}

/// What the finalizer `name` (if any) asks for this object.
pub fn finalizer_action(obj: &DynamicObject, name: Option<&str>) -> FinalizerAction {
    let Some(name) = name else {
        return FinalizerAction::None;
    };
    let has = obj.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|x| x == name));
    match (obj.metadata.deletion_timestamp.is_some(), has) {
        (true, true) => FinalizerAction::Remove,
        (false, false) => FinalizerAction::Add,
        _ => FinalizerAction::None,
    }
}

/// Lists return items without apiVersion and kind; hooks expect them. The object is
/// serialized once, to the compact text every later step shares.
pub fn seen(mut obj: DynamicObject, resource: &ApiResource, finalizer: Option<&str>, digest: bool) -> Seen {
    let action = finalizer_action(&obj, finalizer);
    let held =
        finalizer.is_some_and(|name| obj.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|x| x == name)));
    // As kubectl shows objects: managedFields is bookkeeping of the API server, large,
    // and of no use to a hook.
    obj.metadata.managed_fields = None;
    if obj.types.as_ref().is_none_or(|t| t.kind.is_empty()) {
        obj.types = Some(TypeMeta { api_version: resource.api_version.clone(), kind: resource.kind.clone() });
    }
    let name = obj.metadata.name.clone().unwrap_or_default();
    let key: Arc<str> = match &obj.metadata.namespace {
        Some(ns) => format!("{ns}/{name}").into(),
        None => name.into(),
    };
    let (object, digest) = if digest {
        let value = serde_json::to_value(&obj).unwrap_or_default();
        (value.to_string(), Some(crate::model::fields::digest(&value)))
    } else {
        (serde_json::to_string(&obj).unwrap_or_else(|_| "{}".into()), None)
    };
    Seen {
        key,
        uid: obj.metadata.uid.unwrap_or_default().into(),
        version: obj.metadata.resource_version.unwrap_or_default().into(),
        object: object.into(),
        finalizer: action,
        held,
        digest,
    }
}

/// Everything the watch loop needs.
pub struct Watch {
    pub api: Api<DynamicObject>,
    pub resource: ApiResource,
    pub config: watcher::Config,
    pub resync: Option<Duration>,
    pub log_events: bool,
    pub finalizer: Option<String>,
    /// --annotation-selector and --filter.
    pub filter: Arc<ObjectFilter>,
    pub ignore_status_changes: bool,
    /// Batched hooks (src/batch.rs): resync passes and gathered changes go here.
    pub batch: Option<crate::runtime::batch::Feed>,
    /// --shards: only this member's objects go on, and the ones it gains come again.
    pub shard: Option<crate::runtime::shard::Ownership>,
}

impl Watch {
    /// Fails fast on what retrying cannot fix: a bad selector, missing permissions.
    pub async fn check(&self) -> Result<(), WatchError> {
        let mut lp = ListParams::default().limit(1);
        lp.label_selector = self.config.label_selector.clone();
        lp.field_selector = self.config.field_selector.clone();
        let mut delay = Duration::from_millis(500);
        loop {
            match self.api.list_metadata(&lp).await {
                Ok(_) => return Ok(()),
                Err(e) if crate::cluster::resolve::is_connection_error(&e) => {
                    tracing::warn!("cannot list {}: {e}; retrying in {delay:?}", self.resource.plural);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    return Err(WatchError::ListRefused {
                        resource: self.resource.plural.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }

    /// Runs until cancelled, sending every event to `tx` in order.
    pub async fn run(
        mut self,
        mut tracker: Tracker,
        tx: mpsc::Sender<ObjectEvent>,
        journal: Option<Arc<Journal>>,
        cancel: CancellationToken,
    ) -> Result<(), WatchError> {
        let stream = watcher(self.api.clone(), self.config.clone()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let period = self.resync.unwrap_or(Duration::from_secs(3600 * 24 * 365));
        let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut outage = false;
        // When the changes gathered so far go to the snapshot hook (src/batch.rs).
        let mut snapshot_at: Option<tokio::time::Instant> = None;
        loop {
            let events = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = resync.tick(), if self.resync.is_some() => {
                    let mine = self.mine(tracker.sync());
                    crate::runtime::batch::tap(&self.batch, mine)
                }
                _ = crate::runtime::batch::sleep_until(snapshot_at), if snapshot_at.is_some() => {
                    snapshot_at = None;
                    if let Some(feed) = self.batch.as_ref().filter(|f| f.wants_changes()) {
                        let objects = match &self.shard {
                            Some(own) => tracker.objects_where(|k| own.mine(k)),
                            None => tracker.objects(),
                        };
                        feed.offer(crate::runtime::batch::Pass::changed(objects));
                    }
                    continue;
                }
                Some(change) = next_change(&mut self.shard) => {
                    let own = self.shard.as_mut().expect("a change comes only with --shards");
                    own.rebalance(change, tracker.entries())
                }
                item = stream.next() => match item {
                    None => return Ok(()),
                    Some(Err(e)) => { report_outage(&mut outage, &e); continue }
                    Some(Ok(ev)) => { report_recovery(&mut outage); self.on_event(&mut tracker, ev) }
                },
            };
            if snapshot_at.is_none() && self.batch.is_some() && events.iter().any(|e| e.kind != EventType::Sync) {
                snapshot_at = Some(tokio::time::Instant::now() + crate::runtime::batch::CHANGE_DELAY);
            }
            crate::runtime::metrics::objects(tracker.len());
            for mut ev in events {
                if self.shard.as_mut().is_some_and(|own| !own.keep(&ev)) {
                    tracing::debug!("{} {}: another member's object", ev.kind.as_str(), ev.key);
                    continue;
                }
                crate::runtime::metrics::event(ev.kind.as_str());
                if let (Some(j), false, true) = (&journal, ev.kind == EventType::Sync, ev.hook) {
                    j.add(&mut ev)?;
                }
                tracing::debug!("{} {}: queued", ev.kind.as_str(), ev.key);
                tx.send(ev).await.map_err(|_| WatchError::QueueClosed)?;
            }
        }
    }

    /// The events of this member's objects (all of them without --shards).
    fn mine(&self, events: Vec<ObjectEvent>) -> Vec<ObjectEvent> {
        match &self.shard {
            Some(own) => events.into_iter().filter(|e| own.mine(&e.key)).collect(),
            None => events,
        }
    }

    fn on_event(&self, tracker: &mut Tracker, ev: watcher::Event<DynamicObject>) -> Vec<ObjectEvent> {
        match ev {
            watcher::Event::Init => {
                tracing::debug!("listing {}", self.resource.plural);
                tracker.init();
                Vec::new()
            }
            watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                self.log_raw("APPLY", &obj);
                let annotations = self.filter.check_annotations(obj.metadata.annotations.as_ref());
                let seen = seen(obj, &self.resource, self.finalizer.as_deref(), self.ignore_status_changes);
                match annotations.and_then(|()| self.filter.check_json(&seen.object)) {
                    Ok(()) => tracker.apply(seen),
                    Err(why) => {
                        tracing::debug!("{}: not for hooks because {why}", seen.key);
                        tracker.leave(seen)
                    }
                }
            }
            watcher::Event::Delete(obj) => {
                self.log_raw("DELETE", &obj);
                tracker.delete(seen(obj, &self.resource, self.finalizer.as_deref(), false))
            }
            watcher::Event::InitDone => {
                let out = tracker.init_done();
                crate::runtime::metrics::set_ready(true);
                tracing::info!("listed {} {}; watching for changes", tracker.len(), self.resource.plural);
                out
            }
        }
    }

    fn log_raw(&self, what: &str, obj: &DynamicObject) {
        tracing::debug!(
            "received {what} {}{}{} resourceVersion {}",
            obj.metadata.namespace.as_deref().unwrap_or(""),
            if obj.metadata.namespace.is_some() { "/" } else { "" },
            obj.metadata.name.as_deref().unwrap_or(""),
            obj.metadata.resource_version.as_deref().unwrap_or("")
        );
        if self.log_events {
            let json = serde_json::to_string(obj).unwrap_or_default();
            tracing::info!("event {what} {}: {json}", obj.metadata.name.as_deref().unwrap_or(""));
        }
    }
}

/// The next change of members; never, without --shards.
async fn next_change(
    shard: &mut Option<crate::runtime::shard::Ownership>,
) -> Option<crate::runtime::shard::ViewChange> {
    match shard {
        Some(own) => own.next().await,
        None => std::future::pending().await,
    }
}

fn report_outage(outage: &mut bool, e: &watcher::Error) {
    crate::runtime::metrics::watch_failed();
    if !*outage {
        tracing::warn!("watch interrupted: {e}; reconnecting with backoff");
        *outage = true;
    } else {
        tracing::debug!("watch still failing: {e}");
    }
}

fn report_recovery(outage: &mut bool) {
    crate::runtime::metrics::watch_ok();
    if std::mem::take(outage) {
        tracing::info!("watch recovered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, uid: &str, version: &str) -> Seen {
        Seen {
            key: format!("ns/{name}").into(),
            uid: uid.into(),
            version: version.into(),
            object: format!("{{\"name\":\"{name}\",\"v\":\"{version}\"}}").into(),
            finalizer: FinalizerAction::None,
            held: false,
            digest: None,
        }
    }

    fn deleting(name: &str, uid: &str, version: &str) -> Seen {
        Seen { finalizer: FinalizerAction::Remove, ..obj(name, uid, version) }
    }

    #[test]
    fn a_deleting_object_held_by_our_finalizer_goes_to_the_deleted_hook_once() {
        let mut t = Tracker::new(false);
        t.apply(obj("a", "1", "10"));
        let out = t.apply(deleting("a", "1", "11"));
        assert_eq!(kinds(&out), vec![(EventType::Deleted, "ns/a")]);
        assert_eq!(out[0].finalizer, FinalizerAction::Remove);
        assert!(t.apply(deleting("a", "1", "12")).is_empty(), "no second DELETED while it lingers");
        assert!(t.delete(obj("a", "1", "13")).is_empty(), "no second DELETED when it goes");
    }

    #[test]
    fn changes_only_still_adds_the_finalizer_to_existing_objects_without_a_hook() {
        let mut t = Tracker::new(true);
        let out = listed(&mut t, vec![Seen { finalizer: FinalizerAction::Add, ..obj("a", "1", "10") }]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].finalizer, FinalizerAction::Add);
        assert!(!out[0].hook);
    }

    #[test]
    fn an_object_deleted_while_the_runner_was_down_is_finalized_at_start() {
        let mut t = Tracker::new(true);
        let out = listed(&mut t, vec![deleting("a", "1", "10")]);
        assert_eq!(kinds(&out), vec![(EventType::Deleted, "ns/a")]);
    }

    fn kinds(events: &[ObjectEvent]) -> Vec<(EventType, &str)> {
        events.iter().map(|e| (e.kind, &*e.key)).collect()
    }

    fn listed(t: &mut Tracker, objs: Vec<Seen>) -> Vec<ObjectEvent> {
        t.init();
        let mut out: Vec<_> = objs.into_iter().flat_map(|o| t.apply(o)).collect();
        out.extend(t.init_done());
        out
    }

    #[test]
    fn existing_objects_are_added_at_start() {
        let mut t = Tracker::new(false);
        let out = listed(&mut t, vec![obj("a", "1", "10"), obj("b", "2", "11")]);
        assert_eq!(kinds(&out), vec![(EventType::Added, "ns/a"), (EventType::Added, "ns/b")]);
    }

    #[test]
    fn changes_only_skips_existing_objects_but_not_new_ones() {
        let mut t = Tracker::new(true);
        assert!(listed(&mut t, vec![obj("a", "1", "10")]).is_empty());
        assert_eq!(kinds(&t.apply(obj("a", "1", "12"))), vec![(EventType::Modified, "ns/a")]);
        assert_eq!(kinds(&t.apply(obj("b", "2", "13"))), vec![(EventType::Added, "ns/b")]);
    }

    #[test]
    fn relist_gives_only_the_changes_of_the_gap() {
        let mut t = Tracker::new(false);
        listed(&mut t, vec![obj("same", "1", "10"), obj("changed", "2", "11"), obj("gone", "3", "12")]);
        let out = listed(&mut t, vec![obj("same", "1", "10"), obj("changed", "2", "20"), obj("new", "4", "21")]);
        assert_eq!(
            kinds(&out),
            vec![(EventType::Modified, "ns/changed"), (EventType::Added, "ns/new"), (EventType::Deleted, "ns/gone")]
        );
    }

    #[test]
    fn a_vanished_object_is_deleted_with_its_last_state() {
        let mut t = Tracker::new(false);
        listed(&mut t, vec![obj("gone", "3", "12")]);
        let out = listed(&mut t, vec![]);
        assert_eq!(&*out[0].object, "{\"name\":\"gone\",\"v\":\"12\"}");
    }

    #[test]
    fn recreated_object_is_deleted_then_added() {
        let mut t = Tracker::new(false);
        listed(&mut t, vec![obj("a", "1", "10")]);
        let out = listed(&mut t, vec![obj("a", "9", "30")]);
        assert_eq!(kinds(&out), vec![(EventType::Deleted, "ns/a"), (EventType::Added, "ns/a")]);
    }

    #[test]
    fn repeated_version_gives_nothing() {
        let mut t = Tracker::new(false);
        t.apply(obj("a", "1", "10"));
        assert!(t.apply(obj("a", "1", "10")).is_empty());
    }

    #[test]
    fn delete_of_an_unknown_object_gives_nothing_and_a_known_one_deleted_once() {
        let mut t = Tracker::new(false);
        assert!(t.delete(obj("x", "1", "1")).is_empty());
        t.apply(obj("a", "1", "10"));
        assert_eq!(kinds(&t.delete(obj("a", "1", "11"))), vec![(EventType::Deleted, "ns/a")]);
        assert!(t.delete(obj("a", "1", "11")).is_empty());
    }

    fn digested(name: &str, version: &str, digest: u64) -> Seen {
        Seen { digest: Some(digest), ..obj(name, "1", version) }
    }

    #[test]
    fn ignore_status_changes_skips_a_version_with_the_same_digest_and_keeps_its_state() {
        let mut t = Tracker::new(false);
        t.apply(digested("a", "10", 7));
        assert!(t.apply(digested("a", "11", 7)).is_empty());
        assert_eq!(kinds(&t.apply(digested("a", "12", 8))), vec![(EventType::Modified, "ns/a")]);
        assert!(t.sync()[0].object.contains("\"12\""), "sync carries the newest state");
    }

    #[test]
    fn an_object_leaving_the_filter_is_deleted_once_and_added_when_it_returns() {
        let mut t = Tracker::new(false);
        t.apply(obj("a", "1", "10"));
        assert_eq!(kinds(&t.leave(obj("a", "1", "11"))), vec![(EventType::Deleted, "ns/a")]);
        assert!(t.leave(obj("a", "1", "12")).is_empty());
        assert_eq!(kinds(&t.apply(obj("a", "1", "13"))), vec![(EventType::Added, "ns/a")]);
    }

    #[test]
    fn leaving_the_filter_with_our_finalizer_removes_it_after_the_deleted_hook() {
        let mut t = Tracker::new(false);
        t.apply(obj("a", "1", "10"));
        let out = t.leave(Seen { held: true, ..obj("a", "1", "11") });
        assert_eq!(out[0].finalizer, FinalizerAction::Remove);
    }

    #[test]
    fn sync_lists_every_known_object() {
        let mut t = Tracker::new(false);
        listed(&mut t, vec![obj("b", "2", "1"), obj("a", "1", "1")]);
        assert_eq!(kinds(&t.sync()), vec![(EventType::Sync, "ns/a"), (EventType::Sync, "ns/b")]);
    }
}
