//! Posts Warning Kubernetes Events on the object a hook failed for, so `kubectl describe` shows it.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::Value;

/// Who posts: the reporting component's name.
const COMPONENT: &str = "operator";

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
        let event = warning(object, reason, message);
        let ns = event.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!("cannot post a {reason} event: {e}");
        }
    }
}

/// A core/v1 Event about `object` (pure, so it can be tested).
pub fn warning(object: &Value, reason: &str, message: &str) -> Event {
    let field = |path: &str| object.pointer(path).and_then(Value::as_str).map(str::to_string);
    let name = field("/metadata/name").unwrap_or_default();
    let namespace = field("/metadata/namespace");
    let now = k8s_openapi::jiff::Timestamp::now();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: namespace.clone().or_else(|| Some("default".into())),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: field("/apiVersion"),
            kind: field("/kind"),
            name: Some(name),
            namespace,
            uid: field("/metadata/uid"),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message.chars().take(1024).collect()),
        type_: Some("Warning".into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: None::<MicroTime>,
        source: Some(EventSource { component: Some(COMPONENT.into()), host: None }),
        reporting_component: Some(COMPONENT.into()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn warning_points_at_the_object() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "uid": "u1"}});
        let e = warning(&obj, "HookFailed", "boom");
        assert_eq!(e.involved_object.name.as_deref(), Some("p"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("HookFailed"));
    }

    #[test]
    fn events_of_cluster_scoped_objects_go_to_default() {
        let e = warning(&json!({"kind": "Node", "metadata": {"name": "n"}}), "HookFailed", "x");
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(e.involved_object.namespace, None);
    }
}
