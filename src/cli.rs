//! Command-line parsing: operator-sh's flags, plus the new ones; nothing here checks meaning.

use clap::{ArgAction, Args, Parser, Subcommand};
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
    /// Print the variables a hook would get for an event read from stdin, as sorted NAME=value lines
    Flatten(FlattenArgs),
}

#[derive(Debug, Args)]
pub struct FlattenArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
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
    fn reset_queue_needs_a_queue() {
        assert!(parse(&["-o", "pods", "-r"]).is_err());
        assert!(parse(&["-o", "pods", "-q", "/tmp/q", "-r"]).is_ok());
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
