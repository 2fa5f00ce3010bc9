//! What is done after an event's hooks ran: the runner's finalizer added or removed,
//! the durable queue's entry marked done, and a Warning Event (HookFailed) on the
//! object when a hook failed for good.

use crate::cluster::finalizer::Finalizers;
use crate::cluster::report::Reporter;
use crate::model::event::ObjectEvent;
use crate::runtime::journal::Journal;
use serde_json::Value;
use std::sync::Arc;

/// The cluster-facing follow-ups of a delivery; each is optional (`operator replay`
/// has none of them).
#[derive(Default)]
pub struct Aftermath {
    pub reporter: Option<Reporter>,
    pub journal: Option<Arc<Journal>>,
    pub finalizers: Option<Finalizers>,
}

impl Aftermath {
    /// The finalizer is edited by name: the key is `namespace/name` (or `name`), so the
    /// object need not be parsed for it.
    pub async fn edit_finalizer(&self, ev: &ObjectEvent, add: bool) {
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

    /// The journaled event was handled (successfully or for good): it is not replayed.
    pub fn journal_done(&self, ev: &ObjectEvent) {
        if let (Some(j), true) = (&self.journal, ev.id != 0)
            && let Err(e) = j.done(ev.id)
        {
            tracing::error!("{e}");
        }
    }

    /// A hook failed for good: a Warning Event on its object says why.
    pub async fn hook_failed(&self, object: &Value, why: &str) {
        if let Some(reporter) = &self.reporter {
            reporter.warn(object, "HookFailed", why).await;
        }
    }
}
