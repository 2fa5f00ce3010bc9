//! The event types shared by the watch, the queues and delivery: what happened to which object.

use std::sync::Arc;

/// What happened to an object; also the hook's name (lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    Sync,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Sync => "SYNC",
        }
    }

    pub fn hook_name(self) -> &'static str {
        match self {
            EventType::Added => "added",
            EventType::Modified => "modified",
            EventType::Deleted => "deleted",
            EventType::Sync => "sync",
        }
    }
}

/// What --finalizer mode must do around the hook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalizerAction {
    #[default]
    None,
    /// The object lacks the finalizer: add it before the hook runs.
    Add,
    /// The object is being deleted: remove the finalizer once the deleted hook succeeded.
    Remove,
}

/// One event for one object: its key (`namespace/name`) and its compact JSON.
///
/// The object stays text until delivery: the tracker keeps the same `Arc<str>`, so a
/// waiting event costs no memory of its own, and delivery parses it exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub kind: EventType,
    pub key: Arc<str>,
    pub object: Arc<str>,
    /// The previous object for EVENT_OLD_FILE and field hooks. None: the deliverer uses
    /// the object it last delivered for this key (`operator replay` sets it from --old).
    pub old: Option<Arc<str>>,
    pub finalizer: FinalizerAction,
    /// Its entry in the durable queue (0: none).
    pub id: u64,
    /// Whether a hook runs; false for an event that only adds the finalizer (-c at start).
    pub hook: bool,
}

impl ObjectEvent {
    /// An event with no finalizer work, not in the durable queue.
    pub fn new(kind: EventType, key: Arc<str>, object: Arc<str>) -> Self {
        ObjectEvent { kind, key, object, old: None, finalizer: FinalizerAction::None, id: 0, hook: true }
    }
}
