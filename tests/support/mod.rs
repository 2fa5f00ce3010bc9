//! Test environment for integration tests: one real control plane per test binary
//! (tests/cluster/start.sh), a namespace per test, the operator binary started with
//! its own log, and on failure a report of the command, its stdout, stderr and log.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const OPERATOR: &str = env!("CARGO_BIN_EXE_operator");

/// Runs `cmd` with `stdin` written to it and its output captured.
pub fn output_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// (status, stdout, stderr) as text; -1 for a process ended by a signal.
pub fn status_and_text(out: Output) -> (i32, String, String) {
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running control plane, shared by the tests of one binary; its watchdog stops
/// it when this process ends, and deletes its directory (about 66 MB) unless a
/// test failed: then the directory stays, and its path is printed.
/// `KEEP_CLUSTER_DIR=1` keeps it in any case.
pub struct Cluster {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let mut start = Command::new(repo().join("tests/cluster/start.sh"));
        start.args(["--owner-pid", &std::process::id().to_string()]);
        if std::env::var_os("KEEP_CLUSTER_DIR").is_none() {
            start.arg("--owner-clean");
        }
        let out =
            start.env("OPERATOR_BIN", OPERATOR).stderr(Stdio::inherit()).output().expect("run tests/cluster/start.sh");
        assert!(out.status.success(), "tests/cluster/start.sh failed: {}", String::from_utf8_lossy(&out.stdout));
        let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        keep_on_failure(&dir);
        Cluster { kubeconfig: dir.join("kubeconfig"), dir }
    })
}

/// A test that fails panics: the first panic marks the cluster directory to be kept
/// (DIR/keep, read by the watchdog) and says where it is.
fn keep_on_failure(dir: &Path) {
    let dir = dir.to_path_buf();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let keep = dir.join("keep");
        if !keep.exists() && std::fs::write(&keep, b"a test failed\n").is_ok() {
            eprintln!("cluster directory kept (a test failed): {}", dir.display());
        }
        previous(info);
    }));
}

impl Cluster {
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, "")
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            // Ports are reused by later clusters; kubectl's discovery cache is per host:port.
            .env("KUBECACHEDIR", self.dir.join("kube-cache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and panics with its output when it fails; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn apply(&self, ns: &str, yaml: &str) {
        let out = self.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], yaml);
        assert!(out.status.success(), "kubectl apply failed: {}\n{yaml}", String::from_utf8_lossy(&out.stderr));
    }

    /// A fresh namespace, deleted (without waiting) when dropped.
    pub fn namespace(&'static self, prefix: &str) -> Namespace {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        self.ok(&["create", "namespace", &name]);
        // Pods are refused until the controller-manager made the default service account.
        let start = Instant::now();
        while !self.kubectl(&["get", "serviceaccount", "default", "-n", &name]).status.success() {
            assert!(start.elapsed() < Duration::from_secs(30), "no default service account in {name}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Namespace { name, cluster: self }
    }
}

pub struct Namespace {
    pub name: String,
    cluster: &'static Cluster,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// A hooks directory whose hooks record their whole environment, one file per run.
pub struct Recorder {
    pub hooks: tempfile::TempDir,
    pub out: tempfile::TempDir,
}

const RECORD: &str = r#"#!/usr/bin/env bash
set -euo pipefail
f="$RECORD_DIR/$(date +%s%N)-$$"
env -0 > "$f.tmp"
mv "$f.tmp" "$f.env"
"#;

impl Recorder {
    /// Hooks for these events (added, modified, deleted, sync) that record and exit 0.
    pub fn new(events: &[&str]) -> Recorder {
        let r = Recorder { hooks: tempfile::tempdir().unwrap(), out: tempfile::tempdir().unwrap() };
        for e in events {
            r.hook(e, RECORD);
        }
        r
    }

    /// Writes an executable hook with this body.
    pub fn hook(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.hooks.path().join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// `-h DIR -E RECORD_DIR=…` for the operator.
    pub fn args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            self.hooks.path().display().to_string(),
            "-E".into(),
            format!("RECORD_DIR={}", self.out.path().display()),
        ]
    }

    /// Every recorded run's environment, in the order the hooks ran.
    pub fn runs(&self) -> Vec<BTreeMap<String, String>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.out.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "env"))
            .collect();
        files.sort();
        files.iter().map(|f| parse_env(&std::fs::read(f).unwrap())).collect()
    }

    /// The runs for one object (by name).
    pub fn runs_of(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        self.runs()
            .into_iter()
            .filter(|r| r.get("EVENT_OBJECT_METADATA_NAME").map(String::as_str) == Some(name))
            .collect()
    }

    /// The event types delivered for one object, in order.
    pub fn types_of(&self, name: &str) -> Vec<String> {
        self.runs_of(name).into_iter().map(|r| r["EVENT_TYPE"].clone()).collect()
    }
}

fn parse_env(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = String::from_utf8_lossy(s);
            s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The operator binary, running against the shared cluster with its own log file.
pub struct Operator {
    pub child: Option<Child>,
    pub args: Vec<String>,
    pub log: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    pub fn start<S: AsRef<str>>(args: &[S]) -> Operator {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operator.log");
        let mut all: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        all.extend(["-l".into(), log.display().to_string()]);
        let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let child = Command::new(OPERATOR)
            .args(&all)
            .env("KUBECONFIG", &cluster().kubeconfig)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start operator");
        Operator { child: Some(child), args: all, log, stdout, stderr, _dir: dir }
    }

    /// Starts with a recorder's hooks and waits until the initial list is done.
    pub fn watching(rec: &Recorder, args: &[&str]) -> Operator {
        let all: Vec<String> = args.iter().map(|s| s.to_string()).chain(rec.args()).collect();
        let op = Operator::start(&all);
        op.wait_for_log("listed ", Duration::from_secs(30));
        op
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The command, its stdout, stderr and log: printed when a test fails.
    pub fn report(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "\n--- command: {OPERATOR} {}\n--- stdout:\n{}\n--- stderr:\n{}\n--- log:\n{}",
            self.args.join(" "),
            read(&self.stdout),
            read(&self.stderr),
            self.log_text()
        )
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        self.wait_until(&format!("log line containing {needle:?}"), timeout, || self.log_text().contains(needle));
    }

    /// Waits until `cond` holds, or panics with the report.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            if start.elapsed() > timeout {
                panic!("timed out after {timeout:?} waiting for {what}{}", self.report());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails with the report unless `cond` holds.
    pub fn check(&self, cond: bool, what: &str) {
        assert!(cond, "{what}{}", self.report());
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([&format!("-{sig}"), &c.id().to_string()]).status();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        let child = self.child.as_mut().expect("operator running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if start.elapsed() > timeout {
                panic!("operator did not exit within {timeout:?}{}", self.report());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl Cluster {
    fn pid(&self, name: &str) -> i32 {
        std::fs::read_to_string(self.dir.join("pids").join(name)).unwrap().trim().parse().unwrap()
    }

    fn cmdline(pid: i32) -> Vec<String> {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read cmdline");
        raw.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
    }

    /// Kills kube-apiserver (SIGKILL), waits `down`, starts it again with the same
    /// command line and waits until it is ready.
    pub fn restart_apiserver(&self, down: Duration) {
        use std::os::unix::process::CommandExt;
        let pid = self.pid("kube-apiserver");
        let argv = Self::cmdline(pid);
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        while Path::new(&format!("/proc/{pid}")).exists() && !Self::is_zombie(pid) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(down);
        let log = std::fs::OpenOptions::new().append(true).open(self.dir.join("logs/kube-apiserver.log")).unwrap();
        // It outlives this call, as the original did; stop.sh ends it by its PID file.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("restart kube-apiserver");
        std::fs::write(self.dir.join("pids/kube-apiserver"), child.id().to_string()).unwrap();
        let start = Instant::now();
        while !self.kubectl(&["get", "--raw", "/readyz"]).status.success() {
            assert!(start.elapsed() < Duration::from_secs(90), "kube-apiserver did not come back");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn is_zombie(pid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()) == Some("Z")
    }

    /// Compacts etcd's history up to now, so that older resourceVersions are gone (410).
    pub fn compact_etcd(&self) {
        let argv = Self::cmdline(self.pid("etcd"));
        let url = argv
            .iter()
            .find_map(|a| a.strip_prefix("--listen-client-urls="))
            .expect("etcd client url")
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let post = |path: &str, body: &str| {
            let out =
                Command::new("curl").args(["-sf", "-X", "POST", &format!("{url}{path}"), "-d", body]).output().unwrap();
            assert!(out.status.success(), "etcd {path} failed");
            String::from_utf8(out.stdout).unwrap()
        };
        let range: serde_json::Value = serde_json::from_str(&post("/v3/kv/range", r#"{"key":"Lw=="}"#)).unwrap();
        let rev = range["header"]["revision"].as_str().expect("revision").to_string();
        post("/v3/kv/compaction", &format!(r#"{{"revision":"{rev}","physical":true}}"#));
    }
}
