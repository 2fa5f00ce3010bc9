//! Builds a hook's environment: a pure function of the event's variables and the runner's settings.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The command to run, as data: spawning is done elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCommand {
    pub program: PathBuf,
    /// The complete environment (inherited variables included), in order.
    pub env: Vec<(OsString, OsString)>,
    /// EVENT_* variables left out because the kernel would refuse the whole.
    pub dropped: Vec<String>,
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

/// Later entries win: inherited < LOG_*/KUBECONFIG < -E pairs < the event's variables.
pub fn command(program: PathBuf, event_vars: Vec<(String, String)>, event_file: PathBuf, s: &Settings) -> HookCommand {
    let mut runner: Vec<(OsString, OsString)> = Vec::new();
    if let Some(f) = &s.log_file {
        runner.push(("LOG_FILE".into(), f.into()));
    }
    runner.push(("LOG_LEVEL".into(), s.log_level.to_string().into()));
    if let Some(k) = &s.kubeconfig {
        runner.push(("KUBECONFIG".into(), k.into()));
    }
    runner.extend(s.hook_env.iter().map(|(k, v)| (k.into(), v.into())));
    runner.push(("EVENT_FILE".into(), event_file.into()));
    let base = merge(&s.inherited, runner);
    let budget = s.arg_max.saturating_sub(env_bytes(&base) + program.as_os_str().len() + 64 + 4096);
    let (kept, dropped) = fit(event_vars, budget);
    let env = merge(&base, kept.into_iter().map(|(k, v)| (k.into(), v.into())).collect());
    HookCommand { program, env, dropped }
}

/// Runs per event with ~100 entries on each side: a set keeps it linear.
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

    fn get<'a>(cmd: &'a HookCommand, name: &str) -> Option<&'a str> {
        cmd.env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.to_str().unwrap())
    }

    fn var(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn event_variables_and_event_file_are_set() {
        let cmd = command("/h/added".into(), vec![var("EVENT_TYPE", "ADDED")], "/tmp/e.json".into(), &settings());
        assert_eq!(get(&cmd, "EVENT_TYPE"), Some("ADDED"));
        assert_eq!(get(&cmd, "EVENT_FILE"), Some("/tmp/e.json"));
        assert_eq!(get(&cmd, "LOG_LEVEL"), Some("1"));
    }

    #[test]
    fn hook_env_pairs_override_inherited_but_not_event_variables() {
        let mut s = settings();
        s.inherited = vec![("A".into(), "old".into())];
        s.hook_env = vec![var("A", "new"), var("EVENT_TYPE", "spoofed")];
        let cmd = command("/h".into(), vec![var("EVENT_TYPE", "ADDED")], "/f".into(), &s);
        assert_eq!(get(&cmd, "A"), Some("new"));
        assert_eq!(get(&cmd, "EVENT_TYPE"), Some("ADDED"));
        assert_eq!(cmd.env.iter().filter(|(k, _)| k == "A").count(), 1);
    }

    #[test]
    fn log_file_and_kubeconfig_are_passed_when_set() {
        let mut s = settings();
        s.log_file = Some("/var/log/op.log".into());
        s.kubeconfig = Some("/k/config".into());
        let cmd = command("/h".into(), vec![], "/f".into(), &s);
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
