//! The hook author's tools: `replay` against a live delivery, `flatten --format` against
//! shell injection, a DEBUG log free of transport lines, the embedding example, completions.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{OPERATOR, Operator, Recorder, cluster, secs};

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(OPERATOR);
    cmd.args(args);
    support::output_with_stdin(cmd, stdin)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Values a shell would run, split or expand if they were ever pasted into shell code.
const CORPUS: &[&str] = &[
    "$(touch {mark})",
    "`touch {mark}`",
    "it's '$(touch {mark})'",
    "\"double\" and \\\"escaped\\\"",
    "line one\nline two\n",
    "ends in a backslash\\",
    "'",
    "''\\''",
    "; touch {mark} #",
    "${HOME} $PATH * ?",
    "tab\there",
    "ünïcødé ✓",
    "",
    "\\n is not a newline",
    "!!",
];

fn corpus_event(mark: &Path) -> serde_json::Value {
    let annotations: serde_json::Map<String, serde_json::Value> = CORPUS
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("v{i}"), v.replace("{mark}", &mark.display().to_string()).into()))
        .collect();
    serde_json::json!({"type": "ADDED", "object": {"metadata": {"name": "x", "annotations": annotations}}})
}

fn env0(bytes: &[u8]) -> std::collections::BTreeMap<String, String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| text(s).split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

#[test]
fn flatten_shell_output_round_trips_the_injection_corpus_through_eval_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("pwned");
    let event = serde_json::to_vec(&corpus_event(&mark)).unwrap();
    let json = run(&["flatten", "--format", "json"], &event);
    let expected: std::collections::BTreeMap<String, String> = serde_json::from_slice(&json.stdout).unwrap();
    let shell = run(&["flatten", "--format", "shell"], &event);
    assert!(shell.status.success(), "{}", text(&shell.stderr));
    let script = dir.path().join("vars.sh");
    std::fs::write(&script, &shell.stdout).unwrap();
    for how in [r#"eval "$(cat "$1")""#, r#"source "$1""#] {
        let out = Command::new("bash")
            .args(["-c", &format!("{how}; env -0"), "bash", &script.display().to_string()])
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{how}: {}", text(&out.stderr));
        let got = env0(&out.stdout);
        for (name, value) in &expected {
            assert_eq!(got.get(name), Some(value), "{how}: {name} changed on the way\n{}", text(&shell.stdout));
        }
        assert!(!mark.exists(), "{how} ran code from a value");
    }
}

#[test]
fn flatten_nul_output_is_what_env_0_prints() {
    let dir = tempfile::tempdir().unwrap();
    let event = serde_json::to_vec(&corpus_event(&dir.path().join("m"))).unwrap();
    let json = run(&["flatten", "--format", "json"], &event);
    let expected: std::collections::BTreeMap<String, String> = serde_json::from_slice(&json.stdout).unwrap();
    let nul = run(&["flatten", "--format", "nul"], &event);
    assert_eq!(env0(&nul.stdout), expected);
    assert!(expected["EVENT_OBJECT_METADATA_ANNOTATIONS_V4"].contains('\n'), "the corpus has a multi-line value");
}

/// A hook that keeps its whole environment and its event file, one pair per run.
const DUMP: &str = r#"#!/usr/bin/env bash
set -euo pipefail
f="$RECORD_DIR/$(date +%s%N)-$$"
cp "$EVENT_FILE" "$f.event"
env -0 > "$f.tmp"
mv "$f.tmp" "$f.env"
"#;

fn dumps(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// The environment dump without EVENT_FILE, whose path differs from run to run.
fn without_event_file(dump: &[u8]) -> Vec<Vec<u8>> {
    dump.split(|b| *b == 0).filter(|s| !s.starts_with(b"EVENT_FILE=")).map(<[u8]>::to_vec).collect()
}

#[test]
fn replay_of_a_recorded_event_gives_the_hook_byte_identical_variables_and_event_file() {
    let c = cluster();
    let ns = c.namespace("replay");
    let rec = Recorder::new(&[]);
    rec.hook("added", DUMP);
    let record = rec.out.path().join("events.jsonl");
    let flags = ["-E", "EXTRA=a,b", "-s", "--prefix", "EV", "-L", "DEBUG"];
    // Only web: the namespace also holds kube-root-ca.crt.
    let only_web = ["--field-selector", "metadata.name=web"];
    let mut args: Vec<String> = ["-o", "configmaps", "-n", &ns.name, "--record", &record.display().to_string()]
        .iter()
        .chain(flags.iter())
        .chain(only_web.iter())
        .map(|s| s.to_string())
        .collect();
    args.extend(rec.args());
    let mut op = Operator::start(&args);
    op.wait_for_log("listed ", secs(30));
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  annotations:\n    cmd: \"$(touch /tmp/x) `id`\"\n    multi: \"a\\nb\\n\"\n    slash: \"ends\\\\\"\ndata:\n  k: v\n";
    c.apply(&ns.name, yaml);
    op.wait_until("the live delivery", secs(30), || dumps(rec.out.path(), "env").len() == 1);
    op.stop();

    // The same flags, the same log file (LOG_FILE), the same environment.
    let mut replay_args: Vec<String> = vec!["replay".into(), "--line".into(), "-1".into()];
    replay_args.extend(flags.iter().map(|s| s.to_string()));
    replay_args.extend(rec.args());
    replay_args.extend(["-l".into(), op.log.display().to_string(), record.display().to_string()]);
    let out = Command::new(OPERATOR).args(&replay_args).env("KUBECONFIG", &c.kubeconfig).output().unwrap();
    op.check(out.status.success(), &format!("replay failed: {}", text(&out.stderr)));
    let envs = dumps(rec.out.path(), "env");
    op.check(envs.len() == 2, "replay ran the hook once");
    let (live, replayed) = (std::fs::read(&envs[0]).unwrap(), std::fs::read(&envs[1]).unwrap());
    op.check(env0(&live).contains_key("EV_OBJECT_METADATA_ANNOTATIONS_MULTI"), "the prefix and the annotations");
    op.check(env0(&live)["EXTRA"] == "a,b", "-E reached the hook");
    assert_eq!(without_event_file(&live), without_event_file(&replayed), "variables differ{}", op.report());
    let events = dumps(rec.out.path(), "event");
    assert_eq!(std::fs::read(&events[0]).unwrap(), std::fs::read(&events[1]).unwrap(), "EVENT_FILE differs");
    let line = std::fs::read_to_string(&record).unwrap();
    assert_eq!(line.lines().last().unwrap().as_bytes(), std::fs::read(&events[0]).unwrap(), "the record is the event");
}

#[test]
fn replay_gives_the_old_object_to_the_hook_and_its_field_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new(&[]);
    rec.hook("modified", "#!/bin/sh\ncp \"$EVENT_OLD_FILE\" \"$RECORD_DIR/old.json\"\n");
    std::fs::create_dir(rec.hooks.path().join("field")).unwrap();
    rec.hook("field/data.a", "#!/bin/sh\necho \"$EVENT_FIELD_OLD -> $EVENT_FIELD_NEW\" > \"$RECORD_DIR/field\"\n");
    let (event, old) = (dir.path().join("ev.json"), dir.path().join("old.json"));
    let object =
        |a: &str| format!(r#"{{"kind":"ConfigMap","metadata":{{"name":"c","namespace":"n"}},"data":{{"a":"{a}"}}}}"#);
    std::fs::write(&event, format!(r#"{{"type":"MODIFIED","object":{}}}"#, object("2"))).unwrap();
    std::fs::write(&old, object("1")).unwrap();
    let hooks = rec.hooks.path().display().to_string();
    let env = format!("RECORD_DIR={}", rec.out.path().display());
    let args = ["replay", "-h", &hooks, "-E", &env, "--old", &old.display().to_string(), &event.display().to_string()];
    let out = run(&args, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec.out.path().join("old.json")).unwrap()).unwrap();
    assert_eq!(got["data"]["a"], "1", "EVENT_OLD_FILE is the --old object");
    let field = std::fs::read_to_string(rec.out.path().join("field")).unwrap();
    assert_eq!(field.trim(), r#""1" -> "2""#, "the field hook compares with the --old object");
}

#[test]
fn replay_runs_the_hook_of_type_and_fails_when_the_hook_fails() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new(&[]);
    rec.hook("sync", "#!/bin/sh\necho \"sync for $EVENT_OBJECT_METADATA_NAME\"\nexit 7\n");
    let event = dir.path().join("ev.json");
    std::fs::write(&event, r#"{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"n"}}}"#).unwrap();
    let hooks = rec.hooks.path().display().to_string();
    let out = run(&["replay", "-h", &hooks, "--type", "SYNC", &event.display().to_string()], b"");
    let log = text(&out.stderr);
    assert!(log.contains("INFO [sync n/a] sync for a"), "the hook's output is tagged as the runner tags it: {log}");
    assert_eq!(out.status.code(), Some(7), "replay exits with the hook's status: {log}");
    let out = run(&["replay", "-h", &hooks, "--type", "BOOKMARK", &event.display().to_string()], b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--type"), "{}", text(&out.stderr));
}

#[test]
fn replay_ends_a_hook_at_the_hook_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new(&[]);
    rec.hook("added", "#!/bin/sh\nsleep 30\n");
    let event = dir.path().join("ev.json");
    std::fs::write(&event, r#"{"type":"ADDED","object":{"metadata":{"name":"a"}}}"#).unwrap();
    let hooks = rec.hooks.path().display().to_string();
    let started = std::time::Instant::now();
    let out = run(
        &["replay", "-h", &hooks, "--hook-timeout", "500ms", "--grace-period", "100ms", &event.display().to_string()],
        b"",
    );
    assert!(started.elapsed() < secs(10), "the timeout was not applied");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("timed out"), "{}", text(&out.stderr));
}

/// Targets of the JSON log lines that are not the runner's own.
fn foreign_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            !v["target"].as_str().unwrap_or("operator").starts_with("operator")
        })
        .map(String::from)
        .collect()
}

#[test]
fn debug_logs_the_runners_story_without_transport_lines_and_trace_adds_them() {
    let c = cluster();
    let ns = c.namespace("debuglog");
    let rec = Recorder::new(&["added"]);
    let common = ["-o", "configmaps", "-n", &ns.name, "--log-format", "json"];
    let mut debug = Operator::watching(&rec, &[&common[..], &["-L", "DEBUG"]].concat());
    let mut trace = Operator::watching(&rec, &[&common[..], &["-L", "TRACE"]].concat());
    c.apply(&ns.name, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n");
    debug.wait_until("the hook ran twice", secs(30), || rec.runs_of("one").len() == 2);
    debug.stop();
    trace.stop();
    let foreign = foreign_lines(&debug.log_text());
    debug.check(foreign.is_empty(), &format!("DEBUG shows library lines: {:?}", &foreign[..foreign.len().min(5)]));
    debug.check(debug.log_text().contains("listing configmaps"), "DEBUG shows the runner's lines");
    trace.check(!foreign_lines(&trace.log_text()).is_empty(), "TRACE shows the client libraries' lines");
}

#[test]
fn debug_against_an_unreachable_server_logs_only_the_runners_retries() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // Port 1 on loopback: connection refused at once.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: x\n    user: u\ncurrent-context: x\n",
    )
    .unwrap();
    let k = kubeconfig.display().to_string();
    let mut op = Operator::start(&["-o", "pods", "-k", &k, "-L", "DEBUG", "--log-format", "json", "-h", "/tmp"]);
    op.wait_until("a retry logged", secs(30), || op.log_text().lines().count() >= 2);
    std::thread::sleep(secs(2));
    op.stop();
    let foreign = foreign_lines(&op.log_text());
    op.check(foreign.is_empty(), &format!("library lines at DEBUG: {:?}", &foreign[..foreign.len().min(5)]));
}

/// Examples are built beside the test binaries: target/debug/examples.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().unwrap().parent().unwrap();
    let path = debug.join("examples").join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--locked", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "cargo build --example {name} failed");
    }
    path
}

#[test]
fn the_embed_example_calls_its_closure_for_configmap_events() {
    let c = cluster();
    let ns = c.namespace("embed");
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(example("embed"))
        .arg(&ns.name)
        .env("KUBECONFIG", &c.kubeconfig)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let start = std::time::Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < secs(30),
                "timed out waiting for {what}\nstdout:\n{}\nstderr:\n{}",
                read(&out),
                read(&err)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait("the initial list", &|| read(&err).contains("listed "));
    c.apply(&ns.name, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\ndata:\n  a: '1'\n  b: '2'\n");
    wait("ADDED from the closure", &|| read(&out).contains(&format!("ADDED {}/cm1 (2 keys)", ns.name)));
    c.ok(&["delete", "configmap", "cm1", "-n", &ns.name]);
    wait("DELETED from the closure", &|| read(&out).contains(&format!("DELETED {}/cm1", ns.name)));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "the example exits 0 on SIGTERM: {status}\n{}", read(&err));
}

#[test]
fn completions_are_generated_and_bash_accepts_them() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell], b"");
        assert!(out.status.success() && out.stdout.len() > 500, "{shell}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("replay"), "{shell} completions know the subcommands");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("operator.bash");
    std::fs::write(&file, run(&["completions", "bash"], b"").stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", text(&check.stderr));
    // Loaded into a shell, it completes the subcommands.
    let script = format!(
        "source {}; COMP_WORDS=(operator re); COMP_CWORD=1; COMP_LINE='operator re'; COMP_POINT=11; _operator operator re operator; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(text(&out.stdout).lines().any(|l| l == "replay"), "{} {}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn the_man_page_is_roff_with_the_flags() {
    let out = run(&["man"], b"");
    let page = text(&out.stdout);
    assert!(page.contains(".TH operator 1"), "{}", &page[..page.len().min(300)]);
    assert!(page.contains("hook\\-timeout") && page.contains("replay"), "flags and subcommands are listed");
}
