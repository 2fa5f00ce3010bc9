//! `operator event`: posts a Kubernetes Event about the hook's object, or about --object KIND/NS/NAME.

use crate::cli::{EventArgs, EventType};
use crate::cluster::report::{self, Note, ReportError, Severity};
use crate::cluster::resolve::{self, ResolveError};
use crate::commands::event_file::{self, EventFileError};
use kube::Client;
use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};
use std::time::Duration;

/// The whole command gives up after this: a hook must not hang on an absent API server.
const TIMEOUT: Duration = Duration::from_secs(30);

/// events.k8s.io's limit, so the Event reads the same through both APIs.
const MAX_REASON: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum EventCmdError {
    #[error("no object to report on: run this from a hook (EVENT_FILE) or name one with --object KIND/NAMESPACE/NAME")]
    NoObject,
    #[error("invalid value '{value}' for '--object': {reason}")]
    InvalidObject { value: String, reason: String },
    #[error("invalid value '{value}' for '--reason': {reason}")]
    InvalidReason { value: String, reason: &'static str },
    #[error("invalid value '{0}' for '--component': must not be empty")]
    InvalidComponent(String),
    #[error(transparent)]
    EventFile(EventFileError),
    #[error("cannot find a Kubernetes configuration (no $KUBECONFIG, no ~/.kube/config, not in a cluster)")]
    InferConfig(#[source] kube::config::InferConfigError),
    #[error("cannot create the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("cannot read {what}: {message}")]
    Get { what: String, message: String },
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl EventCmdError {
    /// Mistakes on the command line (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            EventCmdError::NoObject
                | EventCmdError::InvalidObject { .. }
                | EventCmdError::InvalidReason { .. }
                | EventCmdError::InvalidComponent(_)
        )
    }
}

/// What the Event is about: the hook's object, or one to look up.
#[derive(Debug, PartialEq)]
enum Target {
    Hook(Value),
    Named { kind: String, namespace: Option<String>, name: String, text: String },
}

pub fn run(args: EventArgs) -> Result<(), EventCmdError> {
    let note = note(&args)?;
    let target = target(args.object.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(EventCmdError::Runtime)?;
    runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, post(target, note)).await.map_err(|_| EventCmdError::Timeout(TIMEOUT))?
    })
}

async fn post(target: Target, note: Note) -> Result<(), EventCmdError> {
    let config = kube::Config::infer().await.map_err(EventCmdError::InferConfig)?;
    let client = Client::try_from(config).map_err(EventCmdError::Client)?;
    let object = match target {
        Target::Hook(object) => object,
        Target::Named { kind, namespace, name, text } => {
            fetch(&client, &kind, namespace.as_deref(), &name, &text).await?
        }
    };
    report::post(&client, &object, &note).await?;
    Ok(())
}

fn note(args: &EventArgs) -> Result<Note, EventCmdError> {
    let invalid = |reason| EventCmdError::InvalidReason { value: args.reason.clone(), reason };
    if args.reason.trim().is_empty() {
        return Err(invalid("must not be empty"));
    }
    if args.reason.chars().count() > MAX_REASON {
        return Err(invalid("longer than 128 characters"));
    }
    let severity = match args.r#type {
        EventType::Normal => Severity::Normal,
        EventType::Warning => Severity::Warning,
    };
    if args.component.trim().is_empty() {
        return Err(EventCmdError::InvalidComponent(args.component.clone()));
    }
    Ok(Note { severity, reason: args.reason.clone(), message: args.message.clone(), component: args.component.clone() })
}

/// --object wins; else the hook's EVENT_FILE; else a usage error.
fn target(object: Option<&str>) -> Result<Target, EventCmdError> {
    if let Some(text) = object {
        return parse_object(text);
    }
    match event_file::object() {
        Ok(v) => Ok(Target::Hook(v)),
        Err(EventFileError::NotInHook) => Err(EventCmdError::NoObject),
        Err(e) => Err(EventCmdError::EventFile(e)),
    }
}

/// KIND/NAMESPACE/NAME, or KIND/NAME for cluster-scoped kinds.
fn parse_object(text: &str) -> Result<Target, EventCmdError> {
    let parts: Vec<&str> = text.split('/').collect();
    let named = |kind: &str, namespace: Option<&str>, name: &str| Target::Named {
        kind: kind.into(),
        namespace: namespace.map(String::from),
        name: name.into(),
        text: text.into(),
    };
    match parts[..] {
        _ if parts.iter().any(|p| p.is_empty()) => Err(invalid_object(text, "a part is empty")),
        [kind, name] => Ok(named(kind, None, name)),
        [kind, namespace, name] => Ok(named(kind, Some(namespace), name)),
        _ => Err(invalid_object(text, "expected KIND/NAMESPACE/NAME, or KIND/NAME for a cluster-scoped kind")),
    }
}

fn invalid_object(value: &str, reason: impl Into<String>) -> EventCmdError {
    EventCmdError::InvalidObject { value: value.into(), reason: reason.into() }
}

/// Resolves KIND as -o does and reads the object, for its uid and apiVersion.
async fn fetch(
    client: &Client,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    text: &str,
) -> Result<Value, EventCmdError> {
    let r = resolve::resolve(client, kind).await?;
    let api: Api<DynamicObject> = match (r.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &r.resource),
        (false, None) => Api::all_with(client.clone(), &r.resource),
        (true, None) => {
            return Err(invalid_object(text, format!("{kind} is namespaced: write {kind}/NAMESPACE/{name}")));
        }
        (false, Some(_)) => return Err(invalid_object(text, format!("{kind} is cluster-scoped: write {kind}/{name}"))),
    };
    let obj = api.get(name).await.map_err(|e| EventCmdError::Get {
        what: format!("{} {}", r.resource.plural, namespace.map_or(name.to_string(), |ns| format!("{ns}/{name}"))),
        message: report::api_message(&e),
    })?;
    Ok(json!({
        "apiVersion": r.resource.api_version,
        "kind": r.resource.kind,
        "metadata": {"name": name, "namespace": namespace, "uid": obj.metadata.uid},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(reason: &str) -> EventArgs {
        EventArgs {
            reason: reason.into(),
            message: "m".into(),
            r#type: EventType::Warning,
            object: None,
            component: "operator".into(),
        }
    }

    #[test]
    fn object_names_with_and_without_namespace_parse() {
        let Target::Named { kind, namespace, name, .. } = parse_object("deployments.apps/web/front").unwrap() else {
            panic!("not named")
        };
        assert_eq!((kind.as_str(), namespace.as_deref(), name.as_str()), ("deployments.apps", Some("web"), "front"));
        let Target::Named { namespace, .. } = parse_object("node/kind-worker").unwrap() else { panic!("not named") };
        assert_eq!(namespace, None);
    }

    #[test]
    fn malformed_object_names_are_usage_errors_naming_the_value() {
        for bad in ["pods", "pods//x", "a/b/c/d", "/ns/x", "pods/ns/"] {
            let err = parse_object(bad).unwrap_err();
            assert!(err.is_usage(), "{bad}");
            assert!(err.to_string().contains(&format!("'{bad}' for '--object'")), "{err}");
        }
    }

    #[test]
    fn empty_or_overlong_reasons_are_usage_errors() {
        assert!(note(&args(" ")).unwrap_err().is_usage());
        assert!(note(&args(&"R".repeat(129))).unwrap_err().is_usage());
        let n = note(&args("Created")).unwrap();
        assert_eq!((n.severity, n.reason.as_str()), (Severity::Warning, "Created"));
    }
}
