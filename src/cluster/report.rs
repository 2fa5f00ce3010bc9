//! Posts core/v1 Events about objects, deduplicated like client-go's recorder: HookFailed and `operator event`.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::Value;

/// Who posts, unless told otherwise: the reporting component's name.
pub const COMPONENT: &str = "operator";

/// A repeat within this time counts on the existing Event (client-go aggregates
/// over the same 10 minutes).
pub const REPEAT_WINDOW: SignedDuration = SignedDuration::from_mins(10);

/// Longest message kept; longer ones are cut (kubelet and kubectl cut at 1024 too).
pub const MAX_MESSAGE: usize = 1024;

/// Writers racing on one Event: how many times a conflicting write is tried again.
const ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the object has no {0}")]
    MissingField(&'static str),
    #[error("cannot post event {name} in namespace {namespace}: {message}")]
    Post { name: String, namespace: String, message: String },
    #[error("cannot post event {0}: other writers kept changing it")]
    Contended(String),
}

/// Normal or Warning, the two types Kubernetes knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Normal => "Normal",
            Severity::Warning => "Warning",
        }
    }
}

/// What an Event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub severity: Severity,
    pub reason: String,
    pub message: String,
    /// Shown as the Event's source ("From" in `kubectl describe`).
    pub component: String,
}

/// How a post ended: a new Event, or the count of the one it was added to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    Created(String),
    Repeated(String, i32),
}

#[derive(Clone)]
pub struct Reporter {
    client: Client,
}

impl Reporter {
    pub fn new(client: Client) -> Self {
        Reporter { client }
    }

    /// Best effort: a failure to post is logged, never fatal.
    pub async fn warn(&self, object: &Value, reason: &str, message: &str) {
        let note = Note {
            severity: Severity::Warning,
            reason: reason.into(),
            message: message.into(),
            component: COMPONENT.into(),
        };
        if let Err(e) = post(&self.client, object, &note).await {
            tracing::warn!("cannot post a {reason} event: {e}");
        }
    }
}

/// Creates the Event, or counts a repeat on the existing one. Its name is derived
/// from what it says, so concurrent posters (several hooks, several runners) meet
/// on one Event; writes carry the resourceVersion, so no count is lost.
pub async fn post(client: &Client, object: &Value, note: &Note) -> Result<Posted, ReportError> {
    let about = involved(object)?;
    let namespace = about.namespace.clone().unwrap_or_else(|| "default".into());
    let name = event_name(&about, note);
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let failed = |e: kube::Error| ReportError::Post {
        name: name.clone(),
        namespace: namespace.clone(),
        message: api_message(&e),
    };
    for _ in 0..ATTEMPTS {
        let now = Timestamp::now();
        let written = match api.get_opt(&name).await {
            Ok(None) => api.create(&PostParams::default(), &fresh(&about, note, &name, now)).await,
            Ok(Some(old)) => {
                match api.replace(&name, &PostParams::default(), &repeat(old, &about, note, &name, now)).await {
                    // Expired between the read and the write: start again.
                    Err(kube::Error::Api(s)) if s.code == 404 => continue,
                    other => other,
                }
            }
            Err(e) => Err(e),
        };
        match written {
            Ok(e) if e.count.unwrap_or(1) > 1 => return Ok(Posted::Repeated(name, e.count.unwrap_or(1))),
            Ok(_) => return Ok(Posted::Created(name)),
            // Created or changed by someone else meanwhile: read it again.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            // Allowed to create Events but not to read or update them (RBAC with
            // `create` only): every post becomes an Event of its own.
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return create_unique(&api, &about, note, &name).await.map_err(failed);
            }
            Err(e) => return Err(failed(e)),
        }
    }
    Err(ReportError::Contended(name))
}

/// An Event under a name of its own (the deduplicating name and the time).
async fn create_unique(
    api: &Api<Event>,
    about: &ObjectReference,
    note: &Note,
    name: &str,
) -> Result<Posted, kube::Error> {
    let now = Timestamp::now();
    let unique = format!("{name}.{:x}", now.as_nanosecond());
    api.create(&PostParams::default(), &fresh(about, note, &unique, now)).await?;
    Ok(Posted::Created(unique))
}

/// The server's own sentence for API errors, not a debug dump; for others (the
/// server cannot be reached, TLS) the error with its causes, on one line.
pub fn api_message(e: &kube::Error) -> String {
    if let kube::Error::Api(s) = e
        && !s.message.is_empty()
    {
        return s.message.clone();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The reference to the object an Event is about.
pub fn involved(object: &Value) -> Result<ObjectReference, ReportError> {
    let field = |path: &str| object.pointer(path).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
    Ok(ObjectReference {
        api_version: field("/apiVersion"),
        kind: Some(field("/kind").ok_or(ReportError::MissingField("kind"))?),
        name: Some(field("/metadata/name").ok_or(ReportError::MissingField("metadata.name"))?),
        namespace: field("/metadata/namespace"),
        uid: field("/metadata/uid"),
        ..ObjectReference::default()
    })
}

/// `<object name>.<hash of what the Event says>`: the same note about the same
/// object always gets the same name, which is what makes repeats meet.
pub fn event_name(about: &ObjectReference, note: &Note) -> String {
    let key = [
        about.api_version.as_deref().unwrap_or(""),
        about.kind.as_deref().unwrap_or(""),
        about.namespace.as_deref().unwrap_or(""),
        about.name.as_deref().unwrap_or(""),
        about.uid.as_deref().unwrap_or(""),
        note.severity.as_str(),
        &note.reason,
        &message_of(note),
        &note.component,
    ]
    .join("\0");
    format!("{}.{:016x}", name_prefix(about.name.as_deref().unwrap_or("")), fnv1a(key.as_bytes()))
}

/// Object names may hold characters an Event name may not (RBAC's `system:…`,
/// `a._b`): one DNS label of the name's letters, digits and dashes; the hash
/// keeps such names apart.
fn name_prefix(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .take(200)
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() { "object".into() } else { trimmed.into() }
}

/// FNV-1a, 64 bits: stable across builds, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn message_of(note: &Note) -> String {
    note.message.chars().take(MAX_MESSAGE).collect()
}

/// A first occurrence.
pub fn fresh(about: &ObjectReference, note: &Note, name: &str, now: Timestamp) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: about.namespace.clone().or_else(|| Some("default".into())),
            ..ObjectMeta::default()
        },
        involved_object: about.clone(),
        reason: Some(note.reason.clone()),
        message: Some(message_of(note)),
        type_: Some(note.severity.as_str().into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(EventSource { component: Some(note.component.clone()), host: None }),
        reporting_component: Some(note.component.clone()),
        ..Event::default()
    }
}

/// The existing Event with one more occurrence; one last seen longer than
/// REPEAT_WINDOW ago (or a hash collision) starts a new series instead.
pub fn repeat(old: Event, about: &ObjectReference, note: &Note, name: &str, now: Timestamp) -> Event {
    let mut next = fresh(about, note, name, now);
    let last = old.last_timestamp.as_ref().map(|t| t.0);
    let same = old.involved_object == *about
        && old.reason == next.reason
        && old.message == next.message
        && old.type_ == next.type_
        && old.source == next.source
        && last.is_some_and(|t| now.duration_since(t) <= REPEAT_WINDOW);
    if same {
        next.count = Some(old.count.unwrap_or(1).saturating_add(1));
        next.first_timestamp = old.first_timestamp.clone();
    }
    next.metadata = old.metadata;
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "uid": "u1"}})
    }

    fn note(reason: &str, message: &str) -> Note {
        Note {
            severity: Severity::Warning,
            reason: reason.into(),
            message: message.into(),
            component: COMPONENT.into(),
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn an_event_points_at_the_object_in_its_namespace() {
        let about = involved(&pod()).unwrap();
        let e = fresh(&about, &note("HookFailed", "boom"), "n", at(0));
        assert_eq!(e.involved_object.name.as_deref(), Some("p"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!((e.reason.as_deref(), e.count), (Some("HookFailed"), Some(1)));
    }

    #[test]
    fn events_of_cluster_scoped_objects_go_to_default() {
        let about = involved(&json!({"kind": "Node", "metadata": {"name": "n"}})).unwrap();
        let e = fresh(&about, &note("HookFailed", "x"), "n", at(0));
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(e.involved_object.namespace, None);
    }

    #[test]
    fn an_object_without_kind_or_name_is_refused_naming_the_field() {
        let err = involved(&json!({"kind": "Pod", "metadata": {}})).unwrap_err();
        assert_eq!(err.to_string(), "the object has no metadata.name");
        assert!(involved(&json!({"metadata": {"name": "x"}})).is_err());
    }

    #[test]
    fn the_same_note_about_the_same_object_gets_the_same_name() {
        let about = involved(&pod()).unwrap();
        let a = event_name(&about, &note("R", "m"));
        assert_eq!(a, event_name(&about, &note("R", "m")));
        assert!(a.starts_with("p."), "{a}");
        assert_ne!(a, event_name(&about, &note("R", "other")));
        assert_ne!(a, event_name(&about, &note("Other", "m")));
        let mut normal = note("R", "m");
        normal.severity = Severity::Normal;
        assert_ne!(a, event_name(&about, &normal));
        let mut other = note("R", "m");
        other.component = "other".into();
        assert_ne!(a, event_name(&about, &other));
    }

    #[test]
    fn a_recreated_object_gets_new_events() {
        let mut other = pod();
        other["metadata"]["uid"] = json!("u2");
        let n = note("R", "m");
        assert_ne!(event_name(&involved(&pod()).unwrap(), &n), event_name(&involved(&other).unwrap(), &n));
    }

    #[test]
    fn event_names_are_valid_whatever_the_object_is_called() {
        let about = involved(&json!({"kind": "ClusterRole", "metadata": {"name": "system:Auth_X"}})).unwrap();
        let name = event_name(&about, &note("R", "m"));
        assert!(name.starts_with("system-auth-x."), "{name}");
        let dotted = involved(&json!({"kind": "X", "metadata": {"name": "a._b.c"}})).unwrap();
        assert!(event_name(&dotted, &note("R", "m")).starts_with("a--b-c."));
        let long = involved(&json!({"kind": "Pod", "metadata": {"name": "a".repeat(253)}})).unwrap();
        assert!(event_name(&long, &note("R", "m")).len() <= 253);
    }

    #[test]
    fn a_repeat_within_the_window_counts_on_the_existing_event() {
        let about = involved(&pod()).unwrap();
        let n = note("R", "m");
        let mut old = fresh(&about, &n, "e", at(0));
        old.count = Some(4);
        old.metadata.resource_version = Some("77".into());
        let next = repeat(old, &about, &n, "e", at(60));
        assert_eq!(next.count, Some(5));
        assert_eq!(next.first_timestamp, Some(Time(at(0))));
        assert_eq!(next.last_timestamp, Some(Time(at(60))));
        assert_eq!(next.metadata.resource_version.as_deref(), Some("77"));
    }

    #[test]
    fn a_repeat_after_the_window_starts_a_new_series() {
        let about = involved(&pod()).unwrap();
        let n = note("R", "m");
        let old = fresh(&about, &n, "e", at(0));
        let next = repeat(old, &about, &n, "e", at(601));
        assert_eq!(next.count, Some(1));
        assert_eq!(next.first_timestamp, Some(Time(at(601))));
    }

    #[test]
    fn long_messages_are_cut() {
        let about = involved(&pod()).unwrap();
        let e = fresh(&about, &note("R", &"x".repeat(5000)), "e", at(0));
        assert_eq!(e.message.unwrap().len(), MAX_MESSAGE);
    }

    #[test]
    fn api_errors_read_as_the_servers_sentence() {
        let status = kube::core::Status::failure("pods \"x\" not found", "NotFound").with_code(404);
        assert_eq!(api_message(&kube::Error::Api(Box::new(status))), "pods \"x\" not found");
    }

    #[test]
    fn fnv1a_matches_its_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
