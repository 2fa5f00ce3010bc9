//! `operator replay`: runs the hook for one saved event through the runner's own Deliverer, without a watch.

use crate::cli::{Cli, ReplayArgs, RunArgs};
use crate::commands::run::{self, EventDir, RunError};
use crate::config::{Config, ConfigError};
use crate::model::event::{EventType, FinalizerAction, ObjectEvent};
use crate::runtime::deliver::Delivered;
use clap::Parser;
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read event file '{path}'")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("'{path}' is not JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("'{path}' is not an event: {reason}")]
    NotAnEvent { path: PathBuf, reason: String },
    #[error("'{path}' holds {count} events: choose one with --line N (1 the first, -1 the last)")]
    WhichLine { path: PathBuf, count: usize },
    #[error("invalid value '{line}' for '--line': '{path}' holds {count} events")]
    NoSuchLine { path: PathBuf, line: i64, count: usize },
    #[error("invalid value '{0}' for '--type': expected ADDED, MODIFIED, DELETED or SYNC")]
    EventType(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Log(#[from] crate::runtime::log::LogError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl ReplayError {
    /// 2 for what the command line got wrong, as for the runner's flags.
    pub fn exit_code(&self) -> u8 {
        match self {
            ReplayError::Config(_) | ReplayError::EventType(_) | ReplayError::NoSuchLine { .. } => 2,
            ReplayError::WhichLine { .. } => 2,
            _ => 1,
        }
    }
}

/// Exit status of a replay whose hook was interrupted by SIGINT/SIGTERM (as a shell reports SIGINT).
pub const INTERRUPTED: u8 = 130;

/// Runs the hook once (no retries) and returns the exit status to end with.
pub fn replay(args: ReplayArgs) -> Result<u8, ReplayError> {
    let mut ev = read_event(&args.event, args.line, args.event_type.as_deref())?;
    if let Some(old) = &args.old {
        ev.old = Some(read_event(old, None, None).or_else(|_| read_object(old))?.object);
    }
    let cfg = Config::from_args(run_args(&args))?;
    let guard = crate::runtime::log::init(&cfg.log)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ReplayError::Runtime)?;
    let result = runtime.block_on(deliver(&cfg, &ev));
    drop(runtime);
    drop(guard);
    result
}

/// The runner's flags with replay's values: one source of validation and defaults.
fn run_args(args: &ReplayArgs) -> RunArgs {
    let mut run = Cli::parse_from(["operator", "-o", "replay"]).run;
    run.hooks = args.hooks.clone();
    run.hook_env = args.hook_env.clone();
    run.kubeconfig = args.kubeconfig.clone();
    run.context = args.context.clone();
    run.log_file = args.log_file.clone();
    run.log_level = args.log_level.clone();
    run.log_format = args.log_format.clone();
    run.filter = args.filter.clone();
    run.hook_timeout = args.hook_timeout.clone();
    run.grace_period = args.grace_period.clone();
    // Its exit status is the answer: a retry would hide it.
    run.retries = 0;
    run
}

async fn deliver(cfg: &Config, ev: &ObjectEvent) -> Result<u8, ReplayError> {
    let dir = EventDir::create()?;
    let stop = CancellationToken::new();
    let signals = tokio::spawn(run::wait_for_signal(stop.clone()));
    let deliverer = run::deliverer(cfg, None, dir.0.clone(), stop);
    let name = ev.kind.hook_name();
    if !cfg.hooks_dir.join(name).exists() && !cfg.hooks_dir.join(format!("{name}.d")).exists() {
        tracing::warn!("no hook {name} in {}: nothing to run for {}", cfg.hooks_dir.display(), ev.kind.as_str());
    }
    let delivered = deliverer.deliver(ev).await;
    signals.abort();
    Ok(match delivered {
        Delivered::Done => 0,
        // The hook's own status; 1 when it has none (timed out, not started).
        Delivered::Failed(status) => status.and_then(|s| u8::try_from(s).ok()).filter(|s| *s != 0).unwrap_or(1),
        Delivered::Interrupted => INTERRUPTED,
    })
}

/// The event in `path`: one JSON document (an EVENT_FILE), or the `line`th of several (--record).
pub fn read_event(path: &Path, line: Option<i64>, kind: Option<&str>) -> Result<ObjectEvent, ReplayError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReplayError::Read { path: path.into(), source })?;
    let docs = serde_json::Deserializer::from_str(&text)
        .into_iter::<Box<RawValue>>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ReplayError::Json { path: path.into(), source })?;
    let doc = pick(path, &docs, line)?;
    let event: Event = serde_json::from_str(doc.get()).map_err(|e| not_an_event(path, e.to_string()))?;
    let kind = event_type(kind.unwrap_or(&event.kind)).map_err(|e| match kind {
        Some(_) => e,
        None => not_an_event(path, format!("unknown type '{}'", event.kind)),
    })?;
    object_event(path, kind, event.object.get())
}

fn pick<'a>(path: &Path, docs: &'a [Box<RawValue>], line: Option<i64>) -> Result<&'a RawValue, ReplayError> {
    let count = docs.len();
    let index = match line {
        None if count == 1 => Some(0),
        None if count == 0 => return Err(not_an_event(path, "the file is empty".into())),
        None => return Err(ReplayError::WhichLine { path: path.into(), count }),
        Some(n) if n > 0 => usize::try_from(n - 1).ok(),
        Some(n) if n < 0 => count.checked_sub(n.unsigned_abs() as usize),
        Some(_) => None,
    };
    match index.and_then(|i| docs.get(i)) {
        Some(doc) => Ok(doc),
        None => Err(ReplayError::NoSuchLine { path: path.into(), line: line.unwrap_or(0), count }),
    }
}

#[derive(serde::Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    object: Box<RawValue>,
}

fn not_an_event(path: &Path, reason: String) -> ReplayError {
    ReplayError::NotAnEvent { path: path.into(), reason }
}

pub fn event_type(value: &str) -> Result<EventType, ReplayError> {
    match value.to_ascii_uppercase().as_str() {
        "ADDED" => Ok(EventType::Added),
        "MODIFIED" => Ok(EventType::Modified),
        "DELETED" => Ok(EventType::Deleted),
        "SYNC" => Ok(EventType::Sync),
        _ => Err(ReplayError::EventType(value.to_string())),
    }
}

/// The object's JSON is kept byte for byte, so EVENT_FILE is what the runner wrote.
fn object_event(path: &Path, kind: EventType, object: &str) -> Result<ObjectEvent, ReplayError> {
    let value: serde_json::Value = serde_json::from_str(object).map_err(|e| not_an_event(path, e.to_string()))?;
    let Some(meta) = value.as_object().map(|o| &o["metadata"]) else {
        return Err(not_an_event(path, "\"object\" is not a JSON object".into()));
    };
    let name = meta["name"].as_str().unwrap_or_default();
    let key = match meta["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    };
    Ok(ObjectEvent {
        kind,
        key: key.into(),
        object: object.into(),
        old: None,
        finalizer: FinalizerAction::None,
        id: 0,
        hook: true,
    })
}

/// `--old` may be a bare object (`kubectl get -o json`) as well as an event.
fn read_object(path: &Path) -> Result<ObjectEvent, ReplayError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReplayError::Read { path: path.into(), source })?;
    object_event(path, EventType::Modified, text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    const A: &str = r#"{"type":"ADDED","object":{"metadata":{"namespace":"ns","name":"a"},"b":1}}"#;
    const B: &str = r#"{"type":"MODIFIED","object":{"metadata":{"name":"b"}}}"#;

    #[test]
    fn an_event_file_keeps_its_object_byte_for_byte_and_gets_its_key() {
        let f = file(A);
        let ev = read_event(f.path(), None, None).unwrap();
        assert_eq!(ev.kind, EventType::Added);
        assert_eq!(&*ev.key, "ns/a");
        assert_eq!(&*ev.object, r#"{"metadata":{"namespace":"ns","name":"a"},"b":1}"#);
    }

    #[test]
    fn a_record_file_needs_a_line_and_counts_from_either_end() {
        let f = file(&format!("{A}\n{B}\n"));
        assert!(matches!(read_event(f.path(), None, None), Err(ReplayError::WhichLine { count: 2, .. })));
        assert_eq!(&*read_event(f.path(), Some(1), None).unwrap().key, "ns/a");
        assert_eq!(&*read_event(f.path(), Some(-1), None).unwrap().key, "b");
        assert!(matches!(read_event(f.path(), Some(3), None), Err(ReplayError::NoSuchLine { .. })));
        assert!(matches!(read_event(f.path(), Some(0), None), Err(ReplayError::NoSuchLine { .. })));
    }

    #[test]
    fn type_overrides_the_files_type_in_any_case() {
        let f = file(A);
        assert_eq!(read_event(f.path(), None, Some("sync")).unwrap().kind, EventType::Sync);
        assert!(matches!(read_event(f.path(), None, Some("BOOKMARK")), Err(ReplayError::EventType(_))));
    }

    #[test]
    fn replay_flags_become_the_runners_configuration_without_retries() {
        let cli = Cli::try_parse_from([
            "operator",
            "replay",
            "-h",
            "/tmp",
            "-E",
            "A=1,B=2",
            "-s",
            "--prefix",
            "X",
            "-L",
            "debug",
            "--hook-timeout",
            "3s",
            "ev.json",
        ])
        .unwrap();
        let Some(crate::cli::Command::Replay(args)) = cli.command else { panic!("no replay") };
        let cfg = Config::from_args(run_args(&args)).unwrap();
        assert_eq!(cfg.hook_env, vec![("A".into(), "1".into()), ("B".into(), "2".into())]);
        assert!(cfg.flatten.filter_spec && !cfg.flatten.filter_status);
        assert_eq!(cfg.flatten.prefix, "X");
        assert_eq!(cfg.log.level, crate::config::LogLevel::Debug);
        assert_eq!(cfg.hook_timeout, std::time::Duration::from_secs(3));
        assert_eq!(cfg.retry.retries, 0);
    }

    #[test]
    fn what_is_not_an_event_is_named() {
        let err = read_event(file(r#"{"object":{}}"#).path(), None, None).unwrap_err().to_string();
        assert!(err.contains("is not an event") && err.contains("type"), "{err}");
        let err = read_event(file(r#"{"type":"ADDED","object":[1]}"#).path(), None, None).unwrap_err().to_string();
        assert!(err.contains("not a JSON object"), "{err}");
        let err = read_event(file("{oops").path(), None, None).unwrap_err().to_string();
        assert!(err.contains("is not JSON"), "{err}");
    }
}
