//! Builds a hook's environment: the runner's part once at start, the event's part per event.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

/// The command to run, as data: spawning is done elsewhere. Its environment is three
/// layers, later ones winning: `base` (built once), the event's variables (built once
/// per event, shared by all its handlers) and `extra` (this run's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCommand {
    pub program: PathBuf,
    pub base: Arc<[(OsString, OsString)]>,
    pub event: Arc<[(OsString, OsString)]>,
    pub extra: Vec<(OsString, OsString)>,
}

impl HookCommand {
    /// Every variable in the order they are applied (a later one replaces an earlier one).
    pub fn layers(&self) -> impl DoubleEndedIterator<Item = &(OsString, OsString)> {
        self.base.iter().chain(self.event.iter()).chain(self.extra.iter())
    }

    /// The value the hook sees for `name`.
    pub fn get(&self, name: &str) -> Option<&OsString> {
        self.layers().rev().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// What every hook gets besides the event's own variables.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The runner's environment, without variables of the event prefix.
    pub inherited: Vec<(OsString, OsString)>,
    pub log_file: Option<PathBuf>,
    pub log_level: u8,
    pub kubeconfig: Option<PathBuf>,
    pub hook_env: Vec<(String, String)>,
    /// The kernel's limit on argv + environment (ARG_MAX).
    pub arg_max: usize,
}

/// Variables only the runner sets per run: never inherited, never from -E.
pub const RESERVED: [&str; 5] = ["EVENT_FILE", "EVENT_OLD_FILE", "EVENT_FIELD", "EVENT_FIELD_OLD", "EVENT_FIELD_NEW"];

/// The runner's part of every hook's environment, merged once at start.
#[derive(Debug, Clone)]
pub struct Environment {
    base: Arc<[(OsString, OsString)]>,
    base_bytes: usize,
    arg_max: usize,
}

impl Environment {
    /// inherited < LOG_*/KUBECONFIG < -E pairs; the reserved names are left out.
    pub fn new(s: &Settings) -> Environment {
        let mut runner: Vec<(OsString, OsString)> = Vec::new();
        if let Some(f) = &s.log_file {
            runner.push(("LOG_FILE".into(), f.into()));
        }
        runner.push(("LOG_LEVEL".into(), s.log_level.to_string().into()));
        if let Some(k) = &s.kubeconfig {
            runner.push(("KUBECONFIG".into(), k.into()));
        }
        runner.extend(s.hook_env.iter().map(|(k, v)| (k.into(), v.into())));
        let mut base = merge(&s.inherited, runner);
        base.retain(|(k, _)| !RESERVED.iter().any(|r| k == r));
        let base_bytes = env_bytes(&base);
        Environment { base: base.into(), base_bytes, arg_max: s.arg_max }
    }

    /// The event's variables that fit beside the runner's part and `reserve` bytes of
    /// per-run variables, and the names left out (largest first).
    pub fn event_vars(
        &self,
        vars: Vec<(String, String)>,
        reserve: usize,
    ) -> (Arc<[(OsString, OsString)]>, Vec<String>) {
        let budget = self.arg_max.saturating_sub(self.base_bytes + reserve + 4096);
        let (kept, dropped) = fit(vars, budget);
        (kept.into_iter().map(|(k, v)| (k.into(), v.into())).collect(), dropped)
    }

    pub fn command(
        &self,
        program: PathBuf,
        event: Arc<[(OsString, OsString)]>,
        extra: Vec<(OsString, OsString)>,
    ) -> HookCommand {
        HookCommand { program, base: self.base.clone(), event, extra }
    }
}

/// Runs once at start with ~100 entries on each side: a set keeps it linear.
fn merge(base: &[(OsString, OsString)], over: Vec<(OsString, OsString)>) -> Vec<(OsString, OsString)> {
    let replaced: std::collections::HashSet<&OsString> = over.iter().map(|(k, _)| k).collect();
    let mut out: Vec<(OsString, OsString)> = base.iter().filter(|(k, _)| !replaced.contains(k)).cloned().collect();
    out.extend(over);
    out
}

/// Bytes the kernel counts for these variables: `NAME=value\0` and a pointer each.
pub fn env_bytes(vars: &[(OsString, OsString)]) -> usize {
    vars.iter().map(|(k, v)| k.as_bytes().len() + v.as_bytes().len() + 2 + 8).sum()
}

/// Keeps as many variables as fit in `budget` bytes, dropping the largest first.
pub fn fit(mut vars: Vec<(String, String)>, budget: usize) -> (Vec<(String, String)>, Vec<String>) {
    let size = |(k, v): &(String, String)| k.len() + v.len() + 2 + 8;
    let mut total: usize = vars.iter().map(size).sum();
    if total <= budget {
        return (vars, Vec::new());
    }
    let mut by_size: Vec<usize> = (0..vars.len()).collect();
    by_size.sort_by_key(|&i| std::cmp::Reverse(size(&vars[i])));
    let mut drop = vec![false; vars.len()];
    for i in by_size {
        if total <= budget {
            break;
        }
        total -= size(&vars[i]);
        drop[i] = true;
    }
    let mut dropped = Vec::new();
    let mut i = 0;
    vars.retain(|(k, _)| {
        let keep = !drop[i];
        i += 1;
        if !keep {
            dropped.push(k.clone());
        }
        keep
    });
    (vars, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings { arg_max: 2 * 1024 * 1024, log_level: 1, ..Settings::default() }
    }

    fn var(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    fn command(vars: Vec<(String, String)>, s: &Settings) -> HookCommand {
        let env = Environment::new(s);
        let (event, _) = env.event_vars(vars, 0);
        env.command("/h/added".into(), event, vec![("EVENT_FILE".into(), "/tmp/e.json".into())])
    }

    fn get<'a>(cmd: &'a HookCommand, name: &str) -> Option<&'a str> {
        cmd.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn event_variables_and_event_file_are_set() {
        let cmd = command(vec![var("EVENT_TYPE", "ADDED")], &settings());
        assert_eq!(get(&cmd, "EVENT_TYPE"), Some("ADDED"));
        assert_eq!(get(&cmd, "EVENT_FILE"), Some("/tmp/e.json"));
        assert_eq!(get(&cmd, "LOG_LEVEL"), Some("1"));
    }

    #[test]
    fn hook_env_pairs_override_inherited_but_not_event_variables() {
        let mut s = settings();
        s.inherited = vec![("A".into(), "old".into())];
        s.hook_env = vec![var("A", "new"), var("EVENT_TYPE", "spoofed")];
        let cmd = command(vec![var("EVENT_TYPE", "ADDED")], &s);
        assert_eq!(get(&cmd, "A"), Some("new"));
        assert_eq!(get(&cmd, "EVENT_TYPE"), Some("ADDED"));
        assert_eq!(cmd.base.iter().filter(|(k, _)| k == "A").count(), 1);
    }

    #[test]
    fn reserved_names_never_come_from_the_runners_environment_or_hook_env() {
        let mut s = settings();
        s.inherited = vec![("EVENT_OLD_FILE".into(), "/stale".into())];
        s.hook_env = vec![var("EVENT_FIELD", "spoofed")];
        let cmd = command(vec![], &s);
        assert_eq!(get(&cmd, "EVENT_OLD_FILE"), None);
        assert_eq!(get(&cmd, "EVENT_FIELD"), None);
    }

    #[test]
    fn log_file_and_kubeconfig_are_passed_when_set() {
        let mut s = settings();
        s.log_file = Some("/var/log/op.log".into());
        s.kubeconfig = Some("/k/config".into());
        let cmd = command(vec![], &s);
        assert_eq!(get(&cmd, "LOG_FILE"), Some("/var/log/op.log"));
        assert_eq!(get(&cmd, "KUBECONFIG"), Some("/k/config"));
    }

    #[test]
    fn too_large_an_environment_drops_the_largest_variables_by_name() {
        let vars = vec![var("EVENT_A", "x"), var("EVENT_BIG", &"y".repeat(1000)), var("EVENT_C", "z")];
        let (kept, dropped) = fit(vars, 100);
        assert_eq!(dropped, vec!["EVENT_BIG"]);
        assert_eq!(kept, vec![var("EVENT_A", "x"), var("EVENT_C", "z")]);
    }

    #[test]
    fn an_environment_that_fits_is_untouched() {
        let vars = vec![var("EVENT_A", "x")];
        assert_eq!(fit(vars.clone(), 1000), (vars, vec![]));
    }
}
