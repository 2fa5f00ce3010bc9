//! Embedding: the runner's watch and per-object queue in your own program, with a Rust closure as the hook.
//!
//! For teams that outgrow bash but want the runner's guarantees: the same type
//! resolution as `-o`, lossless re-lists (no repeated ADDED, no lost DELETED), one
//! object's events in order and never overlapping, different objects in parallel, and
//! failed calls retried with exponential backoff.
//!
//! ```no_run
//! use operator::embed::{Event, Runner};
//!
//! # async fn example() -> Result<(), operator::embed::EmbedError> {
//! let runner = Runner::new("configmaps").namespace("default").workers(4);
//! runner
//!     .run(|event: Event| async move {
//!         println!("{} {} ({} keys)", event.kind.as_str(), event.key, event.data_len("data"));
//!         Ok::<(), std::convert::Infallible>(())
//!     })
//!     .await
//! # }
//! ```
//!
//! The hook returns `Err` to be called again later (see [`Runner::retries`]). `run`
//! returns once [`Runner::stop_token`] is cancelled and running calls have returned:
//!
//! ```no_run
//! use operator::embed::{Event, Runner};
//! use std::time::Duration;
//!
//! # async fn example() -> Result<(), operator::embed::EmbedError> {
//! let runner = Runner::new("deployments.apps").all_namespaces().label_selector("team=data");
//! let stop = runner.stop_token();
//! tokio::spawn(async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     stop.cancel();
//! });
//! runner
//!     .retries(3, Duration::from_millis(200), Duration::from_secs(5))
//!     .run(|event: Event| async move {
//!         if event.name().is_empty() {
//!             return Err(format!("{} has no name", event.key));
//!         }
//!         Ok(())
//!     })
//!     .await
//! # }
//! ```

use crate::cluster::resolve::{self, ResolveError, Resolved};
use crate::model::event::{EventType, ObjectEvent};
use crate::model::retry::RetryPolicy;
use crate::runtime::watch::{Tracker, Watch, WatchError};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot create the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Watch(#[from] WatchError),
}

/// One event for the hook: what happened, to which object, and the object.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventType,
    /// `namespace/name` (`name` for cluster-scoped kinds).
    pub key: String,
    /// The object as the runner's shell hooks get it in EVENT_FILE (no managedFields).
    pub object: DynamicObject,
}

impl Event {
    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object.metadata.namespace.as_deref()
    }

    /// Entries of the top-level map `field` (e.g. a ConfigMap's `data`); 0 when absent.
    pub fn data_len(&self, field: &str) -> usize {
        self.object.data.get(field).and_then(|v| v.as_object()).map_or(0, |m| m.len())
    }
}

#[derive(Debug, Clone)]
enum Scope {
    Default,
    Namespace(String),
    All,
}

/// A runner built in code: what `operator -o TYPE …` is on the command line.
pub struct Runner {
    object: String,
    scope: Scope,
    labels: Option<String>,
    fields: Option<String>,
    changes_only: bool,
    resync: Option<Duration>,
    workers: usize,
    retry: RetryPolicy,
    client: Option<Client>,
    stop: CancellationToken,
}

impl Runner {
    /// Watches `object`, named as kubectl names it (`pods`, `po`, `deployments.apps`, a CRD's plural, …),
    /// in the kubeconfig context's namespace.
    pub fn new(object: impl Into<String>) -> Runner {
        Runner {
            object: object.into(),
            scope: Scope::Default,
            labels: None,
            fields: None,
            changes_only: false,
            resync: None,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            retry: RetryPolicy {
                retries: 5,
                backoff_min: Duration::from_secs(1),
                backoff_max: Duration::from_secs(300),
            },
            client: None,
            stop: CancellationToken::new(),
        }
    }

    pub fn namespace(mut self, ns: impl Into<String>) -> Runner {
        self.scope = Scope::Namespace(ns.into());
        self
    }

    pub fn all_namespaces(mut self) -> Runner {
        self.scope = Scope::All;
        self
    }

    /// Only objects whose labels match (`--label-selector`).
    pub fn label_selector(mut self, selector: impl Into<String>) -> Runner {
        self.labels = Some(selector.into());
        self
    }

    /// Only objects whose fields match (`--field-selector`).
    pub fn field_selector(mut self, selector: impl Into<String>) -> Runner {
        self.fields = Some(selector.into());
        self
    }

    /// No ADDED for objects that exist at start (`-c`).
    pub fn changes_only(mut self, yes: bool) -> Runner {
        self.changes_only = yes;
        self
    }

    /// Every `period`, every known object again as [`EventType::Sync`] (`--resync`).
    pub fn resync(mut self, period: Duration) -> Runner {
        self.resync = Some(period);
        self
    }

    /// Calls for different objects run in parallel, up to `n` at once (at least 1).
    pub fn workers(mut self, n: usize) -> Runner {
        self.workers = n.max(1);
        self
    }

    /// A call returning `Err` is made again up to `retries` times, waiting `min`, doubling up to `max`.
    pub fn retries(mut self, retries: u32, min: Duration, max: Duration) -> Runner {
        self.retry = RetryPolicy { retries, backoff_min: min, backoff_max: max };
        self
    }

    /// Use this client instead of the default one (`KUBECONFIG`, `~/.kube/config`, in-cluster).
    pub fn client(mut self, client: Client) -> Runner {
        self.client = Some(client);
        self
    }

    /// Cancel it to stop [`Runner::run`].
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Watches and calls `hook` for every event until the stop token is cancelled.
    /// Errors: the client, the type or the first list (bad selector, no permission);
    /// once watching, outages are retried and hook errors are logged.
    pub async fn run<F, Fut, E>(self, hook: F) -> Result<(), EmbedError>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let client = match self.client.clone() {
            Some(c) => c,
            None => Client::try_default().await.map_err(EmbedError::Client)?,
        };
        let resolved = resolve::resolve(&client, &self.object).await?;
        let watch = self.watch(client, &resolved);
        watch.check().await?;
        let (tx, rx) = mpsc::channel(1024);
        let call = Call { hook: Arc::new(hook), retry: self.retry, stop: self.stop.clone() };
        let handle = move |ev: ObjectEvent| call.clone().deliver(ev);
        let dispatcher = tokio::spawn(crate::runtime::queue::dispatch(rx, self.workers, handle, self.stop.clone()));
        let watched = watch.run(Tracker::new(self.changes_only), tx, None, self.stop.clone()).await;
        self.stop.cancel();
        let _ = dispatcher.await;
        watched.map_err(EmbedError::from)
    }

    fn watch(&self, client: Client, r: &Resolved) -> Watch {
        let default_ns = client.default_namespace().to_string();
        let api = match &self.scope {
            _ if !r.namespaced => Api::all_with(client, &r.resource),
            Scope::All => Api::all_with(client, &r.resource),
            Scope::Namespace(ns) => Api::namespaced_with(client, ns, &r.resource),
            Scope::Default => Api::namespaced_with(client, &default_ns, &r.resource),
        };
        let mut config = watcher::Config::default().timeout(120);
        if let Some(l) = &self.labels {
            config = config.labels(l);
        }
        if let Some(f) = &self.fields {
            config = config.fields(f);
        }
        Watch {
            api,
            resource: r.resource.clone(),
            config,
            resync: self.resync,
            log_events: false,
            finalizer: None,
            filter: Default::default(),
            ignore_status_changes: false,
            batch: None,
            shard: None,
        }
    }
}

/// The hook and how to call it, shared by the workers.
struct Call<F> {
    hook: Arc<F>,
    retry: RetryPolicy,
    stop: CancellationToken,
}

impl<F> Clone for Call<F> {
    fn clone(&self) -> Self {
        Call { hook: self.hook.clone(), retry: self.retry, stop: self.stop.clone() }
    }
}

impl<F, Fut, E> Call<F>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    async fn deliver(self, ev: ObjectEvent) {
        let object: DynamicObject = match serde_json::from_str(&ev.object) {
            Ok(o) => o,
            Err(e) => return tracing::error!("event {} of {} cannot be decoded: {e}", ev.kind.as_str(), ev.key),
        };
        let event = Event { kind: ev.kind, key: ev.key.to_string(), object };
        for attempt in 0.. {
            let error = match (self.hook)(event.clone()).await {
                Ok(()) => return,
                Err(e) => e,
            };
            let what = format!("hook for {} {} failed: {error}", ev.kind.as_str(), ev.key);
            if attempt >= self.retry.retries {
                return tracing::error!("{what}; no retries left");
            }
            let delay = crate::model::retry::backoff(&self.retry, attempt, rand::random::<f64>());
            tracing::warn!("{what}; retry {} of {} in {delay:?}", attempt + 1, self.retry.retries);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::FinalizerAction;
    use std::sync::Mutex;

    fn object_event(json: &str) -> ObjectEvent {
        ObjectEvent {
            kind: EventType::Added,
            key: "ns/a".into(),
            object: json.into(),
            old: None,
            finalizer: FinalizerAction::None,
            id: 0,
            hook: true,
        }
    }

    const CM: &str =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"ns"},"data":{"k":"v"}}"#;

    #[tokio::test]
    async fn the_hook_gets_the_object_and_failures_are_retried_until_success() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let hook = move |ev: Event| {
            let seen = seen.clone();
            async move {
                let mut calls = seen.lock().unwrap();
                calls.push((ev.name().to_string(), ev.namespace().map(String::from), ev.data_len("data")));
                if calls.len() < 3 { Err("not yet") } else { Ok(()) }
            }
        };
        let retry =
            RetryPolicy { retries: 5, backoff_min: Duration::from_millis(1), backoff_max: Duration::from_millis(2) };
        let call = Call { hook: Arc::new(hook), retry, stop: CancellationToken::new() };
        call.deliver(object_event(CM)).await;
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0], ("a".to_string(), Some("ns".to_string()), 1));
    }

    #[tokio::test]
    async fn retries_stop_when_none_are_left() {
        let count = Arc::new(Mutex::new(0));
        let n = count.clone();
        let hook = move |_ev: Event| {
            let n = n.clone();
            async move {
                *n.lock().unwrap() += 1;
                Err::<(), _>("always")
            }
        };
        let retry =
            RetryPolicy { retries: 2, backoff_min: Duration::from_millis(1), backoff_max: Duration::from_millis(1) };
        Call { hook: Arc::new(hook), retry, stop: CancellationToken::new() }.deliver(object_event(CM)).await;
        assert_eq!(*count.lock().unwrap(), 3, "the first call and two retries");
    }
}
