//! What runs for one event: the event's handlers (`<event>` and `<event>.d/*`), then the
//! field hooks whose field changed since the object last delivered for the key.
//!
//! Nothing here runs a process; the plan is data the delivery then executes in order.

use crate::model::event::{EventType, ObjectEvent};
use crate::model::fields::{self, FieldPath};
use crate::runtime::hooks::{Handler, HookDir, HookError};
use serde_json::Value;
use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};

/// EVENT_FIELD_OLD and EVENT_FIELD_NEW longer than this are left out (see EVENT_FILE).
const MAX_FIELD_VALUE: usize = 64 * 1024;

/// One handler to run for an event, why, and the variables only it gets.
pub struct Run {
    pub handler: Handler,
    pub why: String,
    pub extra: Vec<(OsString, OsString)>,
}

impl Run {
    fn of(handler: Handler, why: String) -> Run {
        Run { handler, why, extra: Vec::new() }
    }
}

/// The hooks an event's type names, before the object is looked at.
pub struct Candidates {
    handlers: Vec<Handler>,
    fields: Vec<(Handler, FieldPath)>,
    /// Hooks that exist but cannot be run (not executable, a bad field path): logged, the rest run.
    pub problems: Vec<HookError>,
}

impl Candidates {
    /// Field hooks take part in ADDED and MODIFIED only.
    pub fn of(hooks: &HookDir, kind: EventType) -> Candidates {
        let (handlers, mut problems) = hooks.handlers(kind.hook_name());
        let (fields, field_problems) = match kind {
            EventType::Added | EventType::Modified => hooks.field_hooks(),
            _ => (Vec::new(), Vec::new()),
        };
        problems.extend(field_problems);
        Candidates { handlers, fields, problems }
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty() && self.fields.is_empty()
    }

    /// The handlers in order, then the field hooks whose field differs from `old`.
    pub fn runs(self, ev: &ObjectEvent, object: &Value, old: Option<&str>) -> Vec<Run> {
        let why = format!("a handler of {}", ev.kind.as_str());
        let mut runs: Vec<Run> = self.handlers.into_iter().map(|h| Run::of(h, why.clone())).collect();
        if !self.fields.is_empty() {
            let old = old.and_then(|text| parse(ev, text, "previous "));
            runs.extend(self.fields.into_iter().filter_map(|(h, path)| field_run(ev, h, path, old.as_ref(), object)));
        }
        runs
    }
}

fn field_run(ev: &ObjectEvent, handler: Handler, path: FieldPath, old: Option<&Value>, object: &Value) -> Option<Run> {
    let Some(change) = fields::change(&path, old, object) else {
        tracing::debug!("{}: {} unchanged, {} not run", ev.key, path.text, handler.name);
        return None;
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
    Some(run)
}

/// The object last given to each key's ADDED or MODIFIED handlers (EVENT_OLD_FILE).
/// It shares its text with the watch's tracker, so it costs no memory of its own
/// unless the two differ.
#[derive(Default)]
pub struct Memory(Mutex<HashMap<Arc<str>, Arc<str>>>);

impl Memory {
    /// EVENT_OLD_FILE's object: the event's own if it brings one, else the last
    /// delivered; none for ADDED (a new object) and SYNC.
    pub fn old_object(&self, ev: &ObjectEvent) -> Option<Arc<str>> {
        match ev.kind {
            EventType::Modified | EventType::Deleted => {
                ev.old.clone().or_else(|| self.0.lock().expect("memory lock").get(&ev.key).cloned())
            }
            EventType::Added | EventType::Sync => None,
        }
    }

    /// What the hooks of this key were given last: an ADDED or MODIFIED object.
    pub fn remember(&self, ev: &ObjectEvent) {
        let mut delivered = self.0.lock().expect("memory lock");
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
}

/// The event's object (or, with `which` = "previous ", its old one) as JSON; a decode
/// error is logged with the key.
pub fn parse(ev: &ObjectEvent, text: &str, which: &str) -> Option<Value> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventType, object: &str) -> ObjectEvent {
        ObjectEvent::new(kind, "ns/o".into(), object.into())
    }

    #[test]
    fn the_old_object_is_the_last_added_or_modified_and_forgotten_after_deleted() {
        let m = Memory::default();
        m.remember(&event(EventType::Added, "1"));
        assert_eq!(m.old_object(&event(EventType::Modified, "2")).as_deref(), Some("1"));
        m.remember(&event(EventType::Sync, "s"));
        assert_eq!(m.old_object(&event(EventType::Modified, "2")).as_deref(), Some("1"), "SYNC is not remembered");
        m.remember(&event(EventType::Deleted, "1"));
        assert_eq!(m.old_object(&event(EventType::Modified, "3")), None);
    }

    #[test]
    fn added_and_sync_have_no_old_object() {
        let m = Memory::default();
        m.remember(&event(EventType::Added, "1"));
        assert_eq!(m.old_object(&event(EventType::Added, "2")), None);
        assert_eq!(m.old_object(&event(EventType::Sync, "2")), None);
    }

    #[test]
    fn long_values_are_cut_for_the_log() {
        let long = "x".repeat(100);
        assert_eq!(short(&long).chars().count(), 61);
        assert_eq!(short("abc"), "abc");
    }
}
