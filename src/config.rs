//! The validated configuration: every flag checked and converted once, before anything runs.

use crate::cli::RunArgs;
use crate::model::filter::{FilterError, ObjectFilter};
use crate::model::flatten;
use crate::model::retry::RetryPolicy;
use crate::model::selector::SelectorError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value '{value}' for '{flag}': {reason}")]
    InvalidValue { flag: &'static str, value: String, reason: String },
    #[error("invalid value '{value}' for '{flag}': expected a duration such as 500ms, 3s or 2m")]
    InvalidDuration {
        flag: &'static str,
        value: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("hooks directory '{0}' does not exist or is not a directory")]
    HooksDirMissing(PathBuf),
    #[error("hooks directory '{path}' cannot be read")]
    HooksDirUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} and {1} cannot be used together: {2}")]
    Conflict(&'static str, &'static str, &'static str),
    #[error("cannot find the current directory")]
    CurrentDir(#[source] std::io::Error),
}

/// Lowest level written to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    /// The number operator-sh's log library compares against (0 DEBUG … 3 ERROR).
    pub fn hook_value(self) -> u8 {
        match self {
            LogLevel::Trace | LogLevel::Debug => 0,
            LogLevel::Info => 1,
            LogLevel::Warning => 2,
            LogLevel::Error => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub file: Option<PathBuf>,
    pub level: LogLevel,
    pub format: LogFormat,
    pub reset: bool,
    pub events: bool,
}

/// Which namespaces are watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The kubeconfig context's namespace, as kubectl does.
    ContextDefault,
    Namespace(String),
    All,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub object: String,
    pub hooks_dir: PathBuf,
    pub scope: Scope,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    /// --annotation-selector and --filter, parsed and compiled.
    pub object_filter: Arc<ObjectFilter>,
    pub ignore_status_changes: bool,
    pub changes_only: bool,
    pub hook_env: Vec<(String, String)>,
    pub log: LogConfig,
    pub flatten: flatten::Options,
    pub queue: Option<PathBuf>,
    pub reset_queue: bool,
    pub workers: usize,
    pub resync: Option<Duration>,
    pub retry: RetryPolicy,
    pub hook_timeout: Duration,
    pub grace_period: Duration,
    pub finalizer: Option<String>,
    pub leader: Option<LeaderConfig>,
    /// --shards: the Lease group and its timing (the --leader-elect lease flags).
    pub shards: Option<LeaderConfig>,
    pub listen: Option<ListenConfig>,
    /// --record: every delivered event is appended here.
    pub record: Option<PathBuf>,
}

/// --leader-elect and its flags.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// None: derived from the resource and the hooks directory once the type is resolved.
    pub name: Option<String>,
    /// None: the service account's or kubeconfig context's namespace.
    pub namespace: Option<String>,
    pub priority: i32,
    pub timing: crate::model::lease::Timing,
}

/// --listen and its flags.
#[derive(Debug, Clone, Copy)]
pub struct ListenConfig {
    pub addr: std::net::SocketAddr,
    pub unhealthy_after: Duration,
}

impl Config {
    pub fn from_args(args: RunArgs) -> Result<Config, ConfigError> {
        let cwd = std::env::current_dir().map_err(ConfigError::CurrentDir)?;
        let retry = RetryPolicy {
            retries: args.retries,
            backoff_min: duration("--backoff-min", &args.backoff_min)?,
            backoff_max: duration("--backoff-max", &args.backoff_max)?,
        };
        let log = log_config(&args, &cwd)?;
        let sharded = shards(&args.replicas, args.queue.is_some())?;
        Ok(Config {
            object: args.object.unwrap_or_default(),
            hooks_dir: hooks_dir(&cwd.join(&args.hooks))?,
            scope: scope(args.namespace, args.all_namespaces),
            kubeconfig: args.kubeconfig.map(|p| cwd.join(p)),
            context: args.context,
            label_selector: non_empty("--label-selector", args.label_selector)?,
            field_selector: non_empty("--field-selector", args.field_selector)?,
            object_filter: Arc::new(object_filter(args.annotation_selector, args.filter_expr)?),
            ignore_status_changes: args.ignore_status_changes,
            changes_only: args.changes_only,
            hook_env: hook_env(&args.hook_env)?,
            log,
            flatten: prefix(args.filter)?,
            queue: args.queue.map(|p| cwd.join(p)),
            reset_queue: args.reset_queue,
            workers: workers(args.workers)?,
            resync: args.resync.as_deref().map(|v| positive_duration("--resync", v)).transpose()?,
            retry,
            hook_timeout: positive_duration("--hook-timeout", &args.hook_timeout)?,
            grace_period: duration("--grace-period", &args.grace_period)?,
            finalizer: args.finalizer.map(finalizer).transpose()?,
            shards: sharded,
            leader: leader(&args.replicas)?.filter(|_| args.replicas.leader_elect),
            listen: listen(&args.replicas)?,
            record: args.record.map(|p| cwd.join(p)),
        })
    }
}

/// Parsed and compiled once: a bad one is a usage error at start, naming its position.
fn object_filter(annotations: Option<String>, jq: Option<String>) -> Result<ObjectFilter, ConfigError> {
    let annotations = match annotations {
        Some(text) => {
            Some(text.parse().map_err(|e: SelectorError| invalid("--annotation-selector", &text, e.to_string()))?)
        }
        None => None,
    };
    let jq = match jq {
        Some(text) => Some(text.parse().map_err(|e: FilterError| invalid("--filter", &text, e.to_string()))?),
        None => None,
    };
    Ok(ObjectFilter { annotations, jq })
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue { flag, value: value.to_string(), reason: reason.into() }
}

/// Durations as humans write them: 500ms, 3s, 2m, 1h30m.
pub fn duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|source| ConfigError::InvalidDuration {
        flag,
        value: value.to_string(),
        source,
    })
}

fn positive_duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let d = duration(flag, value)?;
    if d.is_zero() {
        return Err(invalid(flag, value, "must be longer than zero"));
    }
    Ok(d)
}

fn hooks_dir(path: &Path) -> Result<PathBuf, ConfigError> {
    if !path.is_dir() {
        return Err(ConfigError::HooksDirMissing(path.to_path_buf()));
    }
    std::fs::read_dir(path).map_err(|source| ConfigError::HooksDirUnreadable { path: path.to_path_buf(), source })?;
    Ok(path.to_path_buf())
}

fn scope(namespace: Option<String>, all: bool) -> Scope {
    match (namespace, all) {
        (_, true) => Scope::All,
        (Some(ns), false) => Scope::Namespace(ns),
        (None, false) => Scope::ContextDefault,
    }
}

fn non_empty(flag: &'static str, value: Option<String>) -> Result<Option<String>, ConfigError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(invalid(flag, &v, "must not be empty")),
        other => Ok(other),
    }
}

/// `K=V[,K=V...]`, every pair. A piece that does not start with `NAME=` continues the
/// previous value, so `LIST=a,b,C=1` gives LIST=`a,b` and C=`1`.
pub fn hook_env(values: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for value in values {
        for (i, piece) in value.split(',').enumerate() {
            match piece.split_once('=') {
                Some((k, v)) if valid_env_name(k) => pairs.push((k.to_string(), v.to_string())),
                _ if i > 0 => {
                    let last = pairs.last_mut().expect("a first piece was pushed");
                    last.1.push(',');
                    last.1.push_str(piece);
                }
                Some((k, _)) => {
                    return Err(invalid("--hook-env", value, format!("'{k}' is not a valid variable name")));
                }
                None => return Err(invalid("--hook-env", value, "expected K=V[,K=V...]")),
            }
        }
    }
    Ok(pairs)
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn log_level(value: &str) -> Result<LogLevel, ConfigError> {
    match value.to_ascii_uppercase().as_str() {
        "TRACE" => Ok(LogLevel::Trace),
        "DEBUG" => Ok(LogLevel::Debug),
        "INFO" => Ok(LogLevel::Info),
        "WARNING" | "WARN" => Ok(LogLevel::Warning),
        "ERROR" => Ok(LogLevel::Error),
        _ => Err(invalid("--log-level", value, "expected DEBUG, INFO, WARNING, ERROR or TRACE")),
    }
}

fn log_config(args: &RunArgs, cwd: &Path) -> Result<LogConfig, ConfigError> {
    let format = match args.log_format.to_ascii_lowercase().as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        _ => {
            return Err(invalid("--log-format", &args.log_format, "expected text or json"));
        }
    };
    if args.reset_log && args.log_file.is_none() {
        return Err(invalid("--reset-log", "true", "needs a log file (-l PATH)"));
    }
    Ok(LogConfig {
        file: args.log_file.as_ref().map(|p| cwd.join(p)),
        level: log_level(&args.log_level)?,
        format,
        reset: args.reset_log,
        events: args.log_events,
    })
}

fn prefix(filter: crate::cli::FilterArgs) -> Result<flatten::Options, ConfigError> {
    if !valid_env_name(&filter.prefix) {
        return Err(invalid("--prefix", &filter.prefix, "must be a valid variable name"));
    }
    Ok(flatten::Options { prefix: filter.prefix, filter_spec: filter.filter_spec, filter_status: filter.filter_status })
}

/// Hooks mostly wait (kubectl round trips, Jobs, watches) rather than compute, so the
/// default runs more of them than there are CPUs: 4 per CPU, at least 8, at most 64.
fn workers(value: Option<usize>) -> Result<usize, ConfigError> {
    match value {
        Some(0) => Err(invalid("--workers", "0", "must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_mul(4).clamp(8, 64)),
    }
}

/// Finalizer names are qualified (`example.com/cleanup`), as Kubernetes asks.
fn finalizer(name: String) -> Result<String, ConfigError> {
    let ok = name
        .split_once('/')
        .is_some_and(|(domain, rest)| domain.contains('.') && !rest.is_empty() && name.len() <= 253)
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c));
    if ok {
        Ok(name)
    } else {
        Err(invalid("--finalizer", &name, "expected a qualified name such as example.com/cleanup"))
    }
}

/// --shards: the lease flags as for --leader-elect, which it excludes (one group of
/// members shares the objects; a leader would run them all).
fn shards(args: &crate::cli::ReplicaArgs, queue: bool) -> Result<Option<LeaderConfig>, ConfigError> {
    if !args.shards {
        return Ok(None);
    }
    if args.leader_elect {
        return Err(ConfigError::Conflict(
            "--shards",
            "--leader-elect",
            "a leader runs every object's hooks, members of a shard group each run their own",
        ));
    }
    if queue {
        return Err(ConfigError::Conflict(
            "--shards",
            "--queue",
            "after a restart a member's unfinished events may belong to another member",
        ));
    }
    leader(args)
}

/// The Lease flags, for --leader-elect or --shards (None with neither).
fn leader(args: &crate::cli::ReplicaArgs) -> Result<Option<LeaderConfig>, ConfigError> {
    if !args.leader_elect && !args.shards {
        return Ok(None);
    }
    if let Some(name) = args.lease_name.as_deref().filter(|n| !crate::model::lease::valid_lease_name(n)) {
        return Err(invalid("--lease-name", name, "expected a DNS name: lower-case letters, digits, '-' and '.'"));
    }
    let timing = crate::model::lease::Timing {
        lease_duration: positive_duration("--lease-duration", &args.lease_duration)?,
        renew_deadline: positive_duration("--renew-deadline", &args.renew_deadline)?,
        retry_period: positive_duration("--retry-period", &args.retry_period)?,
    };
    if timing.renew_deadline >= timing.lease_duration {
        return Err(invalid("--renew-deadline", &args.renew_deadline, "must be shorter than --lease-duration"));
    }
    // As client-go: a renewal gets at least one retry with jitter before the deadline.
    if timing.renew_deadline.as_secs_f64() <= 1.2 * timing.retry_period.as_secs_f64() {
        return Err(invalid("--retry-period", &args.retry_period, "must be shorter than --renew-deadline / 1.2"));
    }
    let namespace = non_empty("--lease-namespace", args.lease_namespace.clone())?;
    Ok(Some(LeaderConfig { name: args.lease_name.clone(), namespace, priority: args.priority, timing }))
}

fn listen(args: &crate::cli::ReplicaArgs) -> Result<Option<ListenConfig>, ConfigError> {
    let Some(value) = &args.listen else { return Ok(None) };
    let addr = parse_addr(value).map_err(|reason| invalid("--listen", value, reason))?;
    Ok(Some(ListenConfig { addr, unhealthy_after: positive_duration("--unhealthy-after", &args.unhealthy_after)? }))
}

/// `HOST:PORT`, or `:PORT` for every interface.
fn parse_addr(value: &str) -> Result<std::net::SocketAddr, String> {
    let full = match value.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => value.to_string(),
    };
    full.parse().map_err(|_| "expected HOST:PORT with an IP address, such as 0.0.0.0:9090 or 127.0.0.1:9090".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[&str]) -> Vec<(String, String)> {
        hook_env(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn hook_env_splits_every_pair() {
        assert_eq!(pairs(&["A=1,B=2,C=3"]), vec![kv("A", "1"), kv("B", "2"), kv("C", "3")]);
    }

    #[test]
    fn hook_env_keeps_commas_inside_a_value() {
        assert_eq!(pairs(&["LIST=a,b,C=1"]), vec![kv("LIST", "a,b"), kv("C", "1")]);
    }

    #[test]
    fn hook_env_value_may_contain_equals_and_be_empty() {
        assert_eq!(pairs(&["A=x=y", "B="]), vec![kv("A", "x=y"), kv("B", "")]);
    }

    #[test]
    fn hook_env_rejects_a_bad_name() {
        let err = hook_env(&["1A=x".to_string()]).unwrap_err().to_string();
        assert!(err.contains("--hook-env") && err.contains("'1A'"), "{err}");
    }

    #[test]
    fn hook_env_rejects_a_value_without_a_name() {
        assert!(hook_env(&["novalue".to_string()]).is_err());
    }

    #[test]
    fn log_level_takes_any_case_and_warn() {
        assert_eq!(log_level("debug").unwrap(), LogLevel::Debug);
        assert_eq!(log_level("Warn").unwrap(), LogLevel::Warning);
        assert_eq!(log_level("WARNING").unwrap(), LogLevel::Warning);
        assert_eq!(log_level("trace").unwrap(), LogLevel::Trace);
        assert!(log_level("loud").unwrap_err().to_string().contains("--log-level"));
    }

    #[test]
    fn hook_log_levels_match_operator_sh() {
        assert_eq!(LogLevel::Debug.hook_value(), 0);
        assert_eq!(LogLevel::Error.hook_value(), 3);
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(duration("--resync", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("--resync", "2m").unwrap(), Duration::from_secs(120));
        let err = duration("--resync", "soon").unwrap_err().to_string();
        assert!(err.contains("--resync") && err.contains("'soon'"), "{err}");
    }

    #[test]
    fn zero_resync_is_refused() {
        assert!(positive_duration("--resync", "0s").is_err());
    }

    #[test]
    fn finalizer_must_be_qualified() {
        assert!(finalizer("example.com/cleanup".into()).is_ok());
        assert!(finalizer("cleanup".into()).is_err());
        assert!(finalizer("a.b/c d".into()).is_err());
    }

    #[test]
    fn missing_hooks_dir_is_named() {
        let err = hooks_dir(Path::new("/no/such/dir")).unwrap_err().to_string();
        assert!(err.contains("/no/such/dir"), "{err}");
    }

    fn replica_args(extra: &[&str]) -> crate::cli::ReplicaArgs {
        use clap::Parser;
        let args = ["operator", "-o", "pods", "--leader-elect"].iter().chain(extra);
        crate::cli::Cli::try_parse_from(args).unwrap().run.replicas
    }

    #[test]
    fn lease_timings_default_to_client_go_and_must_be_ordered() {
        let cfg = leader(&replica_args(&[])).unwrap().unwrap();
        assert_eq!(cfg.timing.lease_duration, Duration::from_secs(15));
        assert_eq!(cfg.timing.renew_deadline, Duration::from_secs(10));
        assert_eq!(cfg.timing.retry_period, Duration::from_secs(2));
        let err = leader(&replica_args(&["--lease-duration", "5s"])).unwrap_err().to_string();
        assert!(err.contains("--renew-deadline"), "{err}");
        let err = leader(&replica_args(&["--retry-period", "9s"])).unwrap_err().to_string();
        assert!(err.contains("--retry-period"), "{err}");
    }

    #[test]
    fn shards_refuse_leader_election_and_the_durable_queue_in_one_line_naming_both() {
        use clap::Parser;
        let args = |extra: &[&str]| {
            let all = ["operator", "-o", "pods", "--shards"].iter().chain(extra);
            crate::cli::Cli::try_parse_from(all).unwrap().run.replicas
        };
        let err = shards(&args(&["--leader-elect"]), false).unwrap_err().to_string();
        assert!(err.contains("--shards") && err.contains("--leader-elect") && !err.contains('\n'), "{err}");
        let err = shards(&args(&[]), true).unwrap_err().to_string();
        assert!(err.contains("--shards") && err.contains("--queue"), "{err}");
        let cfg = shards(&args(&["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "1s"]), false);
        assert_eq!(cfg.unwrap().unwrap().timing.lease_duration, Duration::from_secs(4));
        assert!(shards(&args(&["--lease-duration", "2s"]), false).is_err(), "the same timing checks");
    }

    #[test]
    fn a_bad_lease_name_is_named() {
        let err = leader(&replica_args(&["--lease-name", "Not_A_Name"])).unwrap_err().to_string();
        assert!(err.contains("--lease-name") && err.contains("Not_A_Name"), "{err}");
    }

    #[test]
    fn a_listen_address_needs_an_ip_and_port() {
        let err = listen(&replica_args(&["--listen", "nowhere"])).unwrap_err().to_string();
        assert!(err.contains("--listen") && err.contains("'nowhere'"), "{err}");
        let ok = listen(&replica_args(&["--listen", ":9090"])).unwrap().unwrap();
        assert_eq!(ok.unhealthy_after, Duration::from_secs(60));
    }

    #[test]
    fn default_workers_are_four_per_cpu_between_8_and_64() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(workers(None).unwrap(), (4 * cpus).clamp(8, 64));
        assert_eq!(workers(Some(3)).unwrap(), 3, "an explicit value is kept");
    }

    #[test]
    fn scope_follows_flags() {
        assert_eq!(scope(None, false), Scope::ContextDefault);
        assert_eq!(scope(Some("x".into()), false), Scope::Namespace("x".into()));
        assert_eq!(scope(None, true), Scope::All);
    }

    #[test]
    fn addresses_take_an_ip_and_a_port() {
        assert_eq!(parse_addr("127.0.0.1:9090").unwrap(), "127.0.0.1:9090".parse().unwrap());
        assert_eq!(parse_addr(":9090").unwrap(), "0.0.0.0:9090".parse().unwrap());
        assert_eq!(parse_addr("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        assert!(parse_addr("9090").is_err());
        assert!(parse_addr("localhost:9090").is_err());
    }
}
