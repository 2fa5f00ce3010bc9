//! Command-line parsing: operator-sh's flags, plus the new ones; nothing here checks meaning.

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Watch one kind of Kubernetes object and run the hook named after each event.
///
/// For every watch event the runner runs `<hooks>/added`, `<hooks>/modified`,
/// `<hooks>/deleted` (or `<hooks>/sync` with --resync) with the event flattened
/// into EVENT_* environment variables and the whole event as JSON in $EVENT_FILE.
/// See docs/HOOKS.md for the full contract.
#[derive(Debug, Parser)]
#[command(
    name = "operator",
    version,
    disable_help_flag = true,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub run: RunArgs,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Print help
    #[arg(long, action = ArgAction::Help, global = true)]
    pub help: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the variables a hook would get for an event read from stdin, sorted by name
    Flatten(FlattenArgs),
    /// Post a Kubernetes Event about the hook's object (or --object); a repeat within 10 minutes counts on the existing Event
    Event(EventArgs),
    /// Print the ownerReferences JSON that makes an object a child of the hook's object
    OwnerRef,
    /// Run the hook for one event exactly as the runner would, without watching; exit status is the hook's
    Replay(Box<ReplayArgs>),
    /// Print shell completions for bash, zsh, fish, elvish or powershell
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `operator man > ~/.local/share/man/man1/operator.1`
    Man,
}

#[derive(Debug, Args)]
pub struct EventArgs {
    /// Why, in UpperCamelCase by convention, e.g. BackupStarted
    #[arg(long, value_name = "REASON")]
    pub reason: String,

    /// What happened, for humans (cut at 1024 characters)
    #[arg(long, value_name = "TEXT")]
    pub message: String,

    /// Warning for problems, else Normal
    #[arg(long = "type", value_name = "TYPE", value_enum, ignore_case = true, default_value = "Normal")]
    pub r#type: EventType,

    /// The object the Event is about: KIND/NAMESPACE/NAME, or KIND/NAME for a cluster-scoped kind
    /// (KIND as for -o) [default: the object of $EVENT_FILE]
    #[arg(long, value_name = "KIND/NS/NAME")]
    pub object: Option<String>,

    /// Who reports it: the Event's source, shown as "From" by kubectl describe
    #[arg(long, value_name = "NAME", default_value = "operator")]
    pub component: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventType {
    #[value(name = "Normal")]
    Normal,
    #[value(name = "Warning")]
    Warning,
}

#[derive(Debug, Args)]
pub struct FlattenArgs {
    #[command(flatten)]
    pub filter: FilterArgs,

    /// Output format
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t)]
    pub format: crate::model::format::Format,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `operator replay`: the runner's hook-facing flags, without the watch.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The event: an event file as hooks get it in $EVENT_FILE, or a file written by --record
    #[arg(value_name = "EVENT_FILE")]
    pub event: PathBuf,

    /// Directory holding the hooks (added, modified, deleted, sync)
    #[arg(short = 'h', long, value_name = "DIR", default_value = "./hooks")]
    pub hooks: PathBuf,

    /// Which event of a --record file holds several: 1 is the first, -1 the last
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub line: Option<i64>,

    /// Run it as this event type instead of the file's: ADDED, MODIFIED, DELETED or SYNC, any case
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,

    /// The object as it was before this event (a JSON object, or an event holding it)
    #[arg(long, value_name = "FILE")]
    pub old: Option<PathBuf>,

    /// Extra variables for the hooks: K=V[,K=V...] (repeatable)
    #[arg(short = 'E', long, value_name = "K=V[,K=V...]")]
    pub hook_env: Vec<String>,

    /// Kubeconfig file for the hook (as KUBECONFIG) [default: the runner's environment]
    #[arg(short = 'k', long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context the hook's kubectl uses
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// Log to this file instead of stderr (hooks get it as LOG_FILE)
    #[arg(short = 'l', long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// Lowest level logged: DEBUG, INFO, WARNING (WARN), ERROR or TRACE, any case
    #[arg(short = 'L', long, value_name = "LEVEL", default_value = "INFO")]
    pub log_level: String,

    /// Log line format: text or json
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: String,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// A hook running longer is ended (SIGTERM, then SIGKILL) and counts as failed
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub hook_timeout: String,

    /// How long the hook may finish after SIGTERM/SIGINT or a timeout before it is killed
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub grace_period: String,
}

/// Which parts of the object become variables.
#[derive(Debug, Args, Clone)]
pub struct FilterArgs {
    /// Leave out the object's spec (no EVENT_OBJECT_SPEC* variables)
    #[arg(short = 's', long)]
    pub filter_spec: bool,

    /// Leave out the object's status (no EVENT_OBJECT_STATUS* variables)
    #[arg(short = 'S', long)]
    pub filter_status: bool,

    /// Prefix of every variable name
    #[arg(long, value_name = "PREFIX", default_value = "EVENT")]
    pub prefix: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kind of object to watch, as kubectl names it: pods, pod, po, Pod, deployments.apps, evc, …
    #[arg(short = 'o', long, value_name = "TYPE", required = true)]
    pub object: Option<String>,

    /// Directory holding the hooks (added, modified, deleted, sync)
    #[arg(short = 'h', long, value_name = "DIR", default_value = "./hooks")]
    pub hooks: PathBuf,

    /// Namespace to watch [default: the kubeconfig context's namespace]
    #[arg(short = 'n', long, value_name = "NS", conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,

    /// Watch every namespace
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Kubeconfig file [default: $KUBECONFIG, else ~/.kube/config, else in-cluster]
    #[arg(short = 'k', long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use [default: the current context]
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// Only objects whose labels match, e.g. 'app=web,tier in (a,b),!canary'
    #[arg(long, value_name = "SEL")]
    pub label_selector: Option<String>,

    /// Only objects whose fields match, e.g. 'status.phase=Running'
    #[arg(long, value_name = "SEL")]
    pub field_selector: Option<String>,

    /// Only objects whose annotations match, in label-selector syntax, e.g. 'example.com/managed=true'
    #[arg(long, value_name = "SEL")]
    pub annotation_selector: Option<String>,

    /// Only objects for which this jq expression gives true, e.g. '.spec.replicas > 1'
    #[arg(long = "filter", value_name = "EXPR")]
    pub filter_expr: Option<String>,

    /// No MODIFIED when only .status, resourceVersion, managedFields or generation changed
    #[arg(long)]
    pub ignore_status_changes: bool,

    /// Only changes: no ADDED for the objects that exist when the runner starts
    #[arg(short = 'c', long)]
    pub changes_only: bool,

    /// Log every watch event as received, with its JSON, at INFO
    #[arg(short = 'e', long)]
    pub log_events: bool,

    /// Extra variables for the hooks: K=V[,K=V...] (repeatable)
    #[arg(short = 'E', long, value_name = "K=V[,K=V...]")]
    pub hook_env: Vec<String>,

    /// Log to this file instead of stderr
    #[arg(short = 'l', long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// Lowest level logged: DEBUG, INFO, WARNING (WARN), ERROR or TRACE, any case
    #[arg(short = 'L', long, value_name = "LEVEL", default_value = "INFO")]
    pub log_level: String,

    /// Log line format: text or json
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: String,

    /// Empty the log file before starting
    #[arg(short = 'R', long)]
    pub reset_log: bool,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// Durable queue file: events are written to it before their hook runs, so a crash loses none
    #[arg(short = 'q', long, value_name = "PATH")]
    pub queue: Option<PathBuf>,

    /// Discard what the queue file holds before starting
    #[arg(short = 'r', long, requires = "queue")]
    pub reset_queue: bool,

    /// Hooks run in parallel for different objects [default: 4 per CPU, 8 to 64]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Deliver every known object again as SYNC to the `sync` hook every PERIOD (e.g. 10s), and all at once to `sync-all`
    #[arg(long, value_name = "PERIOD")]
    pub resync: Option<String>,

    /// Times a failing hook is run again before giving up
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,

    /// First wait before a retry; doubles each time, with jitter
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub backoff_min: String,

    /// Longest wait between retries
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub backoff_max: String,

    /// A hook running longer is ended (SIGTERM, then SIGKILL) and counts as failed
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub hook_timeout: String,

    /// How long running hooks may finish after SIGTERM/SIGINT or a timeout before they are killed
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub grace_period: String,

    /// Add this finalizer to every watched object; it is removed only after the deleted hook succeeded
    #[arg(long, value_name = "NAME")]
    pub finalizer: Option<String>,

    #[command(flatten)]
    pub replicas: ReplicaArgs,
    /// Append every event delivered to a hook to this file, one JSON line each, for `operator replay`
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

/// Running with replicas (leader election or shards) and being watched (--listen).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("lease_users").args(["leader_elect", "shards"]).multiple(true)))]
pub struct ReplicaArgs {
    /// Run hooks only while holding a coordination.k8s.io/v1 Lease; other instances stand by
    #[arg(long)]
    pub leader_elect: bool,

    /// Share the objects among every instance with the same --lease-name: each runs the hooks of its own part (docs/OPERATIONS.md, "Scaling out")
    #[arg(long)]
    pub shards: bool,

    /// Name of the Lease [default: operator-<resource>-<hooks directory name>]
    #[arg(long, value_name = "NAME", requires = "lease_users")]
    pub lease_name: Option<String>,

    /// Namespace of the Lease [default: the service account's, else the kubeconfig context's]
    #[arg(long, value_name = "NS", requires = "lease_users")]
    pub lease_namespace: Option<String>,

    /// How long a Lease holds without renewal; standbys take over after it
    #[arg(long, value_name = "DURATION", default_value = "15s", requires = "lease_users")]
    pub lease_duration: String,

    /// A leader that cannot renew within this time stops its hooks and exits
    #[arg(long, value_name = "DURATION", default_value = "10s", requires = "lease_users")]
    pub renew_deadline: String,

    /// How often the Lease is renewed, and tried by standbys
    #[arg(long, value_name = "DURATION", default_value = "2s", requires = "lease_users")]
    pub retry_period: String,

    /// An instance of higher priority takes the Lease over from a lower one, and gives it back when it stops
    #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true, requires = "leader_elect")]
    pub priority: i32,

    /// Serve /metrics, /healthz and /readyz on this address, e.g. 0.0.0.0:9090 or :9090
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// /healthz answers 503 once the watch (or the Lease) has been failing this long
    #[arg(long, value_name = "DURATION", default_value = "1m", requires = "listen")]
    pub unhealthy_after: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("operator").chain(args.iter().copied()))
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn short_h_is_the_hooks_directory() {
        let cli = parse(&["-o", "pvc", "-h", "hooks/pvc"]).unwrap();
        assert_eq!(cli.run.hooks, PathBuf::from("hooks/pvc"));
        assert_eq!(cli.run.object.as_deref(), Some("pvc"));
    }

    #[test]
    fn object_is_required() {
        let err = parse(&["-h", "hooks"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn namespace_and_all_namespaces_conflict() {
        let err = parse(&["-o", "pods", "-n", "x", "-A"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn hook_env_repeats() {
        let cli = parse(&["-o", "pods", "-E", "A=1,B=2", "-E", "C=3"]).unwrap();
        assert_eq!(cli.run.hook_env, vec!["A=1,B=2", "C=3"]);
    }

    #[test]
    fn flatten_subcommand_needs_no_object() {
        let cli = parse(&["flatten", "-s", "--prefix", "X"]).unwrap();
        let Some(Command::Flatten(args)) = cli.command else { panic!("no subcommand") };
        assert!(args.filter.filter_spec);
        assert_eq!(args.filter.prefix, "X");
    }

    #[test]
    fn event_subcommand_takes_a_type_in_any_case() {
        let cli = parse(&["event", "--reason", "R", "--message", "m", "--type", "warning"]).unwrap();
        let Some(Command::Event(args)) = cli.command else { panic!("no subcommand") };
        assert_eq!((args.r#type, args.reason.as_str(), args.object), (EventType::Warning, "R", None));
        assert!(parse(&["event", "--reason", "R", "--message", "m", "--type", "Error"]).is_err());
    }

    #[test]
    fn event_type_defaults_to_normal() {
        let cli = parse(&["event", "--reason", "R", "--message", "m", "--object", "pods/ns/p"]).unwrap();
        let Some(Command::Event(args)) = cli.command else { panic!("no subcommand") };
        assert_eq!((args.r#type, args.object.as_deref()), (EventType::Normal, Some("pods/ns/p")));
    }

    #[test]
    fn replay_takes_the_runners_hook_flags_and_no_object() {
        let cli =
            parse(&["replay", "-h", "hooks/pvc", "-E", "A=1", "-s", "--prefix", "X", "--type", "sync", "ev.json"])
                .unwrap();
        let Some(Command::Replay(args)) = cli.command else { panic!("no subcommand") };
        assert_eq!(args.hooks, PathBuf::from("hooks/pvc"));
        assert_eq!(args.event, PathBuf::from("ev.json"));
        assert_eq!(args.event_type.as_deref(), Some("sync"));
        assert!(args.filter.filter_spec);
    }

    #[test]
    fn flatten_format_defaults_to_env_and_refuses_unknown_formats() {
        let Some(Command::Flatten(args)) = parse(&["flatten"]).unwrap().command else { panic!() };
        assert_eq!(args.format, crate::model::format::Format::Env);
        assert!(parse(&["flatten", "--format", "yaml"]).is_err());
    }

    #[test]
    fn reset_queue_needs_a_queue() {
        assert!(parse(&["-o", "pods", "-r"]).is_err());
        assert!(parse(&["-o", "pods", "-q", "/tmp/q", "-r"]).is_ok());
    }

    #[test]
    fn lease_flags_need_leader_elect_and_listen_flags_need_listen() {
        assert!(parse(&["-o", "pods", "--priority", "100"]).is_err());
        assert!(parse(&["-o", "pods", "--lease-duration", "4s"]).is_err());
        assert!(parse(&["-o", "pods", "--unhealthy-after", "5s"]).is_err());
        let cli = parse(&["-o", "pods", "--leader-elect", "--priority", "-1", "--listen", ":9090"]).unwrap();
        assert_eq!(cli.run.replicas.priority, -1);
        assert_eq!(cli.run.replicas.lease_duration, "15s");
    }

    #[test]
    fn lease_flags_also_serve_shards_but_priority_only_leader_election() {
        let cli = parse(&["-o", "pods", "--shards", "--lease-name", "g", "--lease-duration", "4s"]).unwrap();
        assert!(cli.run.replicas.shards);
        assert!(parse(&["-o", "pods", "--shards", "--priority", "1"]).is_err());
    }

    #[test]
    fn all_operator_sh_flags_parse() {
        let cli = parse(&[
            "-o",
            "pods",
            "-h",
            "h",
            "-n",
            "ns",
            "-k",
            "kc",
            "--context",
            "c",
            "--label-selector",
            "a=b",
            "-c",
            "-e",
            "-E",
            "K=V",
            "-l",
            "log",
            "-L",
            "debug",
            "-R",
            "-s",
            "-S",
        ])
        .unwrap();
        assert!(cli.run.changes_only && cli.run.log_events && cli.run.reset_log);
        assert!(cli.run.filter.filter_spec && cli.run.filter.filter_status);
        assert_eq!(cli.run.log_level, "debug");
    }
}
