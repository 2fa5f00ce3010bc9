//! Wires the parts together: client, type resolution, watch, queue, hooks; handles signals.

use crate::cluster::finalizer::Finalizers;
use crate::cluster::report::Reporter;
use crate::cluster::resolve::{self, Resolved};
use crate::config::{Config, LeaderConfig, Scope};
use crate::model::event::ObjectEvent;
use crate::runtime::deliver::Deliverer;
use crate::runtime::deliver::aftermath::Aftermath;
use crate::runtime::deliver::attempt::Attempts;
use crate::runtime::hooks::HookDir;
use crate::runtime::hooks::env::Settings;
use crate::runtime::hooks::spawn::Limits;
use crate::runtime::journal::Journal;
use crate::runtime::leader;
use crate::runtime::shard;
use crate::runtime::watch::{Tracker, Watch};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot read kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("cannot find a Kubernetes configuration (no -k, no $KUBECONFIG, no ~/.kube/config, not in a cluster)")]
    InferConfig(#[source] kube::config::InferConfigError),
    #[error("cannot create the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    #[error(transparent)]
    Watch(#[from] crate::runtime::watch::WatchError),
    #[error("cannot create the directory for event files")]
    EventDir(#[source] std::io::Error),
    #[error("cannot listen for signals")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Journal(#[from] crate::runtime::journal::JournalError),
    #[error(transparent)]
    Startup(#[from] crate::runtime::deliver::DeliverError),
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
    #[error(transparent)]
    Listen(#[from] crate::runtime::listen::ListenError),
    #[error(transparent)]
    Record(#[from] crate::runtime::record::RecordError),
}

/// How long a watch may stay silent before it is restarted (the server sends
/// bookmarks well within it).
const WATCH_TIMEOUT_SECS: u32 = 120;
/// Objects per list page. A page is held twice while its objects are handed on (the
/// response body and its parsed tree, ~10x the JSON), which sets the runner's peak
/// memory; kube's default of 500 pods costs ~6 MiB more at the peak than 100, and
/// 100 costs 100 requests for 10,000 pods instead of 20 (bench/RESULTS.md).
const LIST_PAGE_SIZE: u32 = 100;

pub async fn run(cfg: Config) -> Result<(), RunError> {
    if let Some(l) = cfg.listen {
        crate::runtime::listen::start(l.addr, l.unhealthy_after).await?;
    }
    let (client, default_ns) = client(&cfg).await?;
    let resolved = resolve::resolve(&client, &cfg.object).await?;
    let new_watch = || Watch {
        api: api(client.clone(), &resolved, &cfg.scope, &default_ns),
        resource: resolved.resource.clone(),
        config: watcher_config(&cfg),
        resync: cfg.resync,
        log_events: cfg.log.events,
        finalizer: cfg.finalizer.clone(),
        filter: cfg.object_filter.clone(),
        ignore_status_changes: cfg.ignore_status_changes,
        batch: None,
        shard: None,
    };
    new_watch().check().await?;
    let scope = scope_text(&cfg, &resolved, &default_ns);
    tracing::info!("watching {} ({scope}) with hooks from {}", resolved.resource.plural, cfg.hooks_dir.display());
    let stop = CancellationToken::new();
    let signals = tokio::spawn(wait_for_signal(stop.clone()));
    let result = match (&cfg.leader, &cfg.shards) {
        (None, Some(s)) => {
            crate::runtime::metrics::leader(true);
            let (namespace, group) = lease_of(s, &resolved, &cfg, &default_ns);
            sharded(&cfg, client.clone(), &resolved, new_watch(), stop, (&namespace, &group, s.timing)).await
        }
        (None, None) => {
            crate::runtime::metrics::leader(true);
            serve(&cfg, client.clone(), &resolved, new_watch(), stop).await
        }
        (Some(l), _) => {
            let election = election(l, client.clone(), &resolved, &cfg, &default_ns);
            election.lead(stop, |term| serve(&cfg, client.clone(), &resolved, new_watch(), term)).await
        }
    };
    signals.abort();
    tracing::info!("stopped");
    result
}

fn election(l: &LeaderConfig, client: Client, r: &Resolved, cfg: &Config, default_ns: &str) -> leader::Election {
    let (namespace, name) = lease_of(l, r, cfg, default_ns);
    leader::Election::new(client, &namespace, &name, l.priority, l.timing)
}

/// The Lease's namespace and name (for --shards: the group's name).
fn lease_of(l: &LeaderConfig, r: &Resolved, cfg: &Config, default_ns: &str) -> (String, String) {
    let resource = match r.resource.group.as_str() {
        "" => r.resource.plural.clone(),
        group => format!("{}.{group}", r.resource.plural),
    };
    let name = l.name.clone().unwrap_or_else(|| crate::model::lease::default_lease_name(&resource, &cfg.hooks_dir));
    (l.namespace.clone().unwrap_or_else(|| default_ns.to_string()), name)
}

/// --shards: joins the group, serves this member's objects while its Lease is renewed,
/// and leaves (deletes its Lease) once its hooks ended.
async fn sharded(
    cfg: &Config,
    client: Client,
    r: &Resolved,
    mut watch: Watch,
    stop: CancellationToken,
    (namespace, group, timing): (&str, &str, crate::model::lease::Timing),
) -> Result<(), RunError> {
    let (membership, changes) = shard::Membership::join(client.clone(), namespace, group, timing).await?;
    watch.shard = Some(shard::Ownership::new(membership.shard(), changes));
    let until = CancellationToken::new();
    let member = tokio::spawn(membership.run(stop.clone(), until.clone()));
    let served = serve(cfg, client, r, watch, stop).await;
    until.cancel();
    let renewed = member.await.unwrap_or(Ok(()));
    served?;
    renewed.map_err(RunError::from)
}

/// Runs the queue and the watch until a signal; unfinished events of the durable
/// queue go first.
async fn serve(
    cfg: &Config,
    client: Client,
    r: &Resolved,
    mut watch: Watch,
    stop: CancellationToken,
) -> Result<(), RunError> {
    let event_dir = EventDir::create()?;
    let (journal, unfinished) = open_journal(cfg)?;
    let mut deliverer = deliverer(cfg, Some(client.clone()), event_dir.0.clone(), stop.clone());
    deliverer.after.journal = journal.clone();
    deliverer.after.finalizers = cfg.finalizer.clone().map(|name| Finalizers {
        client,
        resource: r.resource.clone(),
        namespaced: r.namespaced,
        name,
    });
    // Batched hooks (src/runtime/batch.rs): their own task, so they hold no worker.
    let (feed, batches) = crate::runtime::batch::Batcher::from_deliverer(&deliverer, &cfg.flatten.prefix).start();
    watch.batch = Some(feed);
    let deliverer = Arc::new(deliverer);
    deliverer.run_lifecycle("startup", deliverer.attempts.limits, true, &stop).await?;
    let record = cfg.record.as_deref().map(crate::runtime::record::Record::open).transpose()?.map(Arc::new);
    let (tx, rx) = mpsc::channel(1024);
    let d = deliverer.clone();
    let shard = watch.shard.as_ref().map(|own| own.shard());
    let stopping = stop.clone();
    let handle = move |ev: ObjectEvent| {
        let (d, record, shard, stopping) = (d.clone(), record.clone(), shard.clone(), stopping.clone());
        async move {
            // --shards: only while this member may run the object's hooks (src/runtime/shard.rs).
            let epoch = crate::runtime::hooks::spawn::epoch();
            let (ev, running) = match &shard {
                Some(s) => match s.acquire(&ev.key, &stopping).await {
                    Some(running) => (s.freshen(ev), Some(running)),
                    None => return tracing::debug!("{} {}: not this member's object now", ev.kind.as_str(), ev.key),
                },
                None => (ev, None),
            };
            if let Some(r) = record {
                r.append(&ev);
            }
            crate::runtime::hooks::spawn::within_epoch(epoch, d.handle(&ev)).await;
            drop(running);
        }
    };
    let dispatcher = tokio::spawn(crate::runtime::queue::dispatch(rx, cfg.workers, handle, stop.clone()));
    for ev in unfinished {
        let _ = tx.send(ev).await;
    }
    let watched = watch.run(Tracker::new(cfg.changes_only), tx, journal, stop.clone()).await;
    let signalled = stop.is_cancelled();
    stop.cancel();
    let _ = dispatcher.await;
    let _ = batches.await;
    if signalled {
        // After the last event hook; its own grace period, then SIGTERM and SIGKILL 1 s later.
        let limits = Limits { timeout: cfg.grace_period, grace: Duration::from_secs(1) };
        if let Err(e) = deliverer.run_lifecycle("shutdown", limits, false, &CancellationToken::new()).await {
            tracing::error!("{e}");
        }
    }
    watched.map_err(RunError::from)
}

fn open_journal(cfg: &Config) -> Result<(Option<Arc<Journal>>, Vec<ObjectEvent>), RunError> {
    let Some(path) = &cfg.queue else { return Ok((None, Vec::new())) };
    let (journal, unfinished) = Journal::open(path, cfg.reset_queue)?;
    if !unfinished.is_empty() {
        tracing::info!("queue {}: delivering {} unfinished events first", path.display(), unfinished.len());
    }
    Ok((Some(Arc::new(journal)), unfinished))
}

async fn client(cfg: &Config) -> Result<(Client, String), RunError> {
    let opts = KubeConfigOptions { context: cfg.context.clone(), ..KubeConfigOptions::default() };
    let mut kc = match &cfg.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(RunError::Kubeconfig)?;
            kube::Config::from_custom_kubeconfig(file, &opts).await.map_err(RunError::Kubeconfig)?
        }
        None if cfg.context.is_some() => kube::Config::from_kubeconfig(&opts).await.map_err(RunError::Kubeconfig)?,
        None => kube::Config::infer().await.map_err(RunError::InferConfig)?,
    };
    kc.read_timeout = Some(Duration::from_secs(u64::from(WATCH_TIMEOUT_SECS) + 30));
    let ns = kc.default_namespace.clone();
    Ok((Client::try_from(kc).map_err(RunError::Client)?, ns))
}

fn api(client: Client, r: &Resolved, scope: &Scope, default_ns: &str) -> Api<DynamicObject> {
    match scope {
        _ if !r.namespaced => Api::all_with(client, &r.resource),
        Scope::All => Api::all_with(client, &r.resource),
        Scope::Namespace(ns) => Api::namespaced_with(client, ns, &r.resource),
        Scope::ContextDefault => Api::namespaced_with(client, default_ns, &r.resource),
    }
}

fn scope_text(cfg: &Config, r: &Resolved, default_ns: &str) -> String {
    match &cfg.scope {
        _ if !r.namespaced => "cluster-scoped".into(),
        Scope::All => "all namespaces".into(),
        Scope::Namespace(ns) => format!("namespace {ns}"),
        Scope::ContextDefault => format!("namespace {default_ns}"),
    }
}

fn watcher_config(cfg: &Config) -> watcher::Config {
    let mut wc = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS).page_size(LIST_PAGE_SIZE);
    if let Some(l) = &cfg.label_selector {
        wc = wc.labels(l);
    }
    if let Some(f) = &cfg.field_selector {
        wc = wc.fields(f);
    }
    wc
}

/// The Deliverer the runner uses for `cfg`; also `operator replay`'s (without a client:
/// no HookFailed Events).
pub fn deliverer(cfg: &Config, client: Option<Client>, event_dir: PathBuf, stop: CancellationToken) -> Deliverer {
    let prefix = format!("{}_", cfg.flatten.prefix);
    let mut inherited: Vec<(OsString, OsString)> =
        std::env::vars_os().filter(|(k, _)| !k.to_string_lossy().starts_with(&prefix) && k != "OPERATOR_BIN").collect();
    // Hooks run `operator event` and `operator owner-ref` with this very binary.
    if let Ok(exe) = std::env::current_exe() {
        inherited.push(("OPERATOR_BIN".into(), exe.into()));
    }
    let settings = Settings {
        inherited,
        log_file: cfg.log.file.clone(),
        log_level: cfg.log.level.hook_value(),
        kubeconfig: hook_kubeconfig(cfg, &event_dir),
        hook_env: cfg.hook_env.clone(),
        arg_max: arg_max(),
    };
    let attempts =
        Attempts { retry: cfg.retry, limits: Limits { timeout: cfg.hook_timeout, grace: cfg.grace_period }, stop };
    let after = Aftermath { reporter: client.map(Reporter::new), ..Aftermath::default() };
    Deliverer::new(HookDir::new(&cfg.hooks_dir), settings, cfg.flatten.clone(), attempts, event_dir, after)
}

/// With --context, hooks get a private copy of the kubeconfig whose current context
/// is that one, so their kubectl talks to the same cluster as the runner.
fn hook_kubeconfig(cfg: &Config, event_dir: &std::path::Path) -> Option<PathBuf> {
    let Some(context) = &cfg.context else { return cfg.kubeconfig.clone() };
    let loaded = match &cfg.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    };
    let written = loaded.ok().and_then(|mut kc| {
        kc.current_context = Some(context.clone());
        let path = event_dir.join("kubeconfig");
        let text = serde_json::to_string(&kc).ok()?;
        write_private(&path, text.as_bytes()).ok()?;
        Some(path)
    });
    if written.is_none() {
        tracing::warn!("cannot give hooks a kubeconfig for context {context}; their kubectl uses the current context");
    }
    written.or_else(|| cfg.kubeconfig.clone())
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?.write_all(bytes)
}

fn arg_max() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::ARG_MAX) {
        Ok(Some(n)) if n > 0 => n as usize,
        _ => 128 * 1024,
    }
}

/// A private directory (0700) for event files, removed on exit.
pub struct EventDir(pub PathBuf);

impl EventDir {
    /// In memory when possible (tmpfs: $XDG_RUNTIME_DIR, then /dev/shm): every event
    /// writes and removes a file there.
    pub fn create() -> Result<EventDir, RunError> {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|p| p.is_absolute());
        let bases = runtime.into_iter().chain([PathBuf::from("/dev/shm")]).filter(|p| p.is_dir());
        for base in bases {
            match Self::create_in(&base) {
                Ok(dir) => return Ok(dir),
                Err(e) => tracing::debug!("cannot use {} for event files: {e}", base.display()),
            }
        }
        Self::create_in(&std::env::temp_dir())
    }

    fn create_in(base: &std::path::Path) -> Result<EventDir, RunError> {
        use std::os::unix::fs::DirBuilderExt;
        for n in 0..100u32 {
            let dir = base.join(format!("operator-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(EventDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(RunError::EventDir(e)),
            }
        }
        Err(RunError::EventDir(std::io::Error::other("no free name")))
    }
}

impl Drop for EventDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn wait_for_signal(stop: CancellationToken) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{name} received: stopping (running hooks get the grace period)");
    stop.cancel();
    Ok(())
}
