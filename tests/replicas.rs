//! Several instances with --leader-elect on one Lease, on a real control plane: exactly
//! one runs hooks, hand-over on SIGTERM, kill -9 and to and from a higher priority, and
//! a leader that loses its API server stops its hooks before its Lease could expire.
//! Its own test binary, so its own cluster.
//!
//! The Lease timings are short here (--lease-duration 4s, --renew-deadline 3s,
//! --retry-period 1s) so that expiry-based hand-overs take seconds, not 15.

mod support;

use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Operator, Recorder, cluster, secs};

/// Tests that restart kube-apiserver must run alone.
static APISERVER: RwLock<()> = RwLock::new(());

const TIMINGS: [&str; 6] = ["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "1s"];

/// Every run appends `RUNNER TYPE NAME NANOS start`; objects named slow-* take 3 s and
/// then append `... end`; objects named long-* record their PID and hang.
const HOOK: &str = r#"#!/usr/bin/env bash
set -euo pipefail
name=$EVENT_OBJECT_METADATA_NAME
echo "$RUNNER $EVENT_TYPE $name $(date +%s%N) start" >> "$RECORD_DIR/runs"
case $name in
  slow-*) sleep 3; echo "$RUNNER $EVENT_TYPE $name $(date +%s%N) end" >> "$RECORD_DIR/runs" ;;
  long-*) echo $$ > "$RECORD_DIR/$name.pid"; sleep 60 ;;
esac
"#;

#[derive(Debug, Clone, PartialEq)]
struct Run {
    runner: String,
    name: String,
    at: u128,
    end: bool,
}

fn recorder() -> Recorder {
    let rec = Recorder::new(&[]);
    rec.hook("added", HOOK);
    rec
}

fn runs(rec: &Recorder) -> Vec<Run> {
    let text = std::fs::read_to_string(rec.out.path().join("runs")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let at = f.get(3)?.parse().ok()?;
            Some(Run { runner: f[0].into(), name: f[2].into(), at, end: f.get(4) == Some(&"end") })
        })
        .collect()
}

fn ran(rec: &Recorder, runner: &str, name: &str) -> bool {
    runs(rec).iter().any(|r| r.runner == runner && r.name == name && !r.end)
}

/// Status and body of GET `path` on the instance's --listen address (from its log).
fn get(op: &Operator, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let log = op.log_text();
    let at = log.find("/readyz on http://").expect("a --listen line in the log") + "/readyz on http://".len();
    let addr = log[at..].split_whitespace().next().unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// An instance named `runner` on the Lease `ha` of the namespace; TIMINGS unless
/// `extra` has its own.
fn instance(rec: &Recorder, ns: &str, runner: &str, extra: &[&str]) -> Operator {
    let timings: &[&str] = if extra.contains(&"--lease-duration") { &[] } else { &TIMINGS };
    let mut args: Vec<String> = ["-o", "cm", "-n", ns, "--leader-elect", "--lease-namespace", ns, "--lease-name", "ha"]
        .iter()
        .chain(timings)
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    args.extend(rec.args());
    args.extend(["-E".into(), format!("RUNNER={runner}")]);
    Operator::start(&args)
}

fn cm(ns: &str, name: &str) {
    cluster().apply(ns, &format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#));
}

/// A leader and a standby (with --listen), the leader having run the hook for `before`.
fn pair(rec: &Recorder, ns: &str) -> (Operator, Operator) {
    cm(ns, "before");
    let a = instance(rec, ns, "A", &[]);
    a.wait_for_log("leading:", secs(30));
    let b = instance(rec, ns, "B", &["--listen", "127.0.0.1:0"]);
    b.wait_for_log("standing by:", secs(30));
    a.wait_until("A ran the hook for before", secs(30), || ran(rec, "A", "before"));
    (a, b)
}

#[test]
fn one_of_two_instances_runs_hooks_and_sigterm_hands_over_within_two_seconds() {
    let _shared = APISERVER.read().unwrap_or_else(|e| e.into_inner());
    let ns = cluster().namespace("ha-term");
    let rec = recorder();
    let (mut a, b) = pair(&rec, &ns.name);
    cm(&ns.name, "while-a");
    a.wait_until("A ran while-a", secs(30), || ran(&rec, "A", "while-a"));
    std::thread::sleep(secs(2));
    b.check(runs(&rec).iter().all(|r| r.runner == "A"), &format!("only the leader runs hooks: {:?}", runs(&rec)));
    b.check(get(&b, "/readyz").0 == 200, "a standby that knows the leader is ready");
    b.check(get(&b, "/metrics").1.contains("\noperator_leader 0\n"), "a standby reports operator_leader 0");

    cm(&ns.name, "slow-1");
    a.wait_until("A started slow-1", secs(30), || ran(&rec, "A", "slow-1"));
    a.signal("TERM");
    cm(&ns.name, "switch-1");
    let status = a.wait_exit(secs(30));
    let exited = now_nanos();
    a.check(status.success(), &format!("the old leader exits cleanly: {status}"));
    let finished = runs(&rec).iter().any(|r| r.runner == "A" && r.name == "slow-1" && r.end);
    a.check(finished, "the running hook finished within the grace period before the hand-over");

    b.wait_until("B ran switch-1, made during the switch", secs(30), || ran(&rec, "B", "switch-1"));
    let first = runs(&rec).iter().filter(|r| r.runner == "B").map(|r| r.at).min().unwrap();
    let handover_ms = (first as i128 - exited as i128) / 1_000_000;
    eprintln!("SIGTERM hand-over: the standby ran its first hook {handover_ms} ms after the old leader exited");
    b.check(handover_ms < 2000, &format!("hand-over took {handover_ms} ms"));
    cm(&ns.name, "after");
    b.wait_until("B ran after", secs(30), || ran(&rec, "B", "after"));
    b.check(get(&b, "/metrics").1.contains("\noperator_leader 1\n"), "the new leader reports operator_leader 1");
    b.check(get(&b, "/readyz").0 == 200, "the new leader is ready after its list");
}

#[test]
fn after_kill_9_the_standby_takes_over_once_the_lease_expired() {
    let _shared = APISERVER.read().unwrap_or_else(|e| e.into_inner());
    let ns = cluster().namespace("ha-kill");
    let rec = recorder();
    let (mut a, b) = pair(&rec, &ns.name);
    a.signal("KILL");
    let killed = now_nanos();
    a.wait_exit(secs(10));
    cm(&ns.name, "switch-9");
    b.wait_until("B ran switch-9, made during the switch", secs(30), || ran(&rec, "B", "switch-9"));
    let first = runs(&rec).iter().filter(|r| r.runner == "B").map(|r| r.at).min().unwrap();
    let handover_ms = (first - killed) / 1_000_000;
    eprintln!(
        "kill -9 hand-over (--lease-duration 4s): the standby ran its first hook {handover_ms} ms after the kill"
    );
    b.check(handover_ms < 7000, &format!("hand-over took {handover_ms} ms, more than the lease duration + 3 s"));
    // The last renewal was at most a retry period (1 s) before the kill.
    b.check(handover_ms > 2500, &format!("the standby took a Lease that had not expired ({handover_ms} ms)"));
}

#[test]
fn a_higher_priority_instance_takes_over_and_hands_back_when_it_stops() {
    let _shared = APISERVER.read().unwrap_or_else(|e| e.into_inner());
    let ns = cluster().namespace("ha-prio");
    let rec = recorder();
    cm(&ns.name, "before");
    let a = instance(&rec, &ns.name, "A", &[]);
    a.wait_for_log("leading:", secs(30));
    a.wait_until("A ran before", secs(30), || ran(&rec, "A", "before"));
    let mut high = instance(&rec, &ns.name, "H", &["--priority", "100"]);
    high.wait_for_log("leading:", secs(30));
    a.wait_for_log("asks for the Lease", secs(5));
    a.check(a.log_text().contains("standing by:"), "the priority-0 leader stands by");
    cm(&ns.name, "high");
    high.wait_until("H ran high", secs(30), || ran(&rec, "H", "high"));
    std::thread::sleep(secs(1));
    a.check(!ran(&rec, "A", "high"), "the yielded leader ran a hook");

    high.stop();
    a.wait_until("A leads again", secs(10), || a.log_text().matches("leading:").count() == 2);
    cm(&ns.name, "back");
    a.wait_until("A ran back", secs(30), || ran(&rec, "A", "back"));
    a.check(!ran(&rec, "H", "back"), "the stopped instance ran a hook");
}

#[test]
fn a_lower_priority_instance_does_not_take_the_lease_from_a_higher_one() {
    let _shared = APISERVER.read().unwrap_or_else(|e| e.into_inner());
    let ns = cluster().namespace("ha-low");
    let rec = recorder();
    let high = instance(&rec, &ns.name, "H", &["--priority", "100"]);
    high.wait_for_log("leading:", secs(30));
    let low = instance(&rec, &ns.name, "L", &[]);
    low.wait_for_log("standing by:", secs(30));
    cm(&ns.name, "x");
    high.wait_until("H ran x", secs(30), || ran(&rec, "H", "x"));
    std::thread::sleep(secs(5));
    low.check(!low.log_text().contains("leading:") && !ran(&rec, "L", "x"), "the lower priority took over");
    high.check(!high.log_text().contains("asks for the Lease"), "a lower priority asked to take over");
}

fn running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).map(str::to_string);
    !matches!(state.as_deref(), None | Some("Z") | Some("X"))
}

#[test]
fn a_leader_whose_api_server_disappears_stops_its_hooks_before_its_lease_could_expire() {
    let _alone = APISERVER.write().unwrap_or_else(|e| e.into_inner());
    let c = cluster();
    let ns = c.namespace("ha-lost");
    let rec = recorder();
    let fast = ["--lease-duration", "6s", "--renew-deadline", "2s", "--retry-period", "500ms"];
    let mut a = instance(&rec, &ns.name, "A", &fast);
    a.wait_for_log("leading:", secs(30));
    cm(&ns.name, "long-1");
    let pid_file = rec.out.path().join("long-1.pid");
    a.wait_until("the hanging hook started", secs(30), || Path::new(&pid_file).exists());
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();

    let killed = Instant::now();
    let outage = std::thread::spawn(move || cluster().restart_apiserver(secs(8)));
    a.wait_until("the hook ended", secs(10), || !running(pid));
    let gone = killed.elapsed();
    eprintln!("API server gone: the leader ended its hook after {} ms", gone.as_millis());
    // Renewed at most a retry period (500 ms) before the kill, so the Lease holds until
    // at least 5.5 s after it; the renew deadline ends the hook about 2 s after it.
    a.check(gone < Duration::from_millis(5000), &format!("the hook ran {gone:?} into the outage"));
    let status = a.wait_exit(secs(10));
    a.check(!status.success(), &format!("the leader exits non-zero: {status}"));
    a.check(a.log_text().contains("lost the Lease"), "the log says why");
    outage.join().unwrap();
}

#[test]
fn a_lease_namespace_that_does_not_exist_stops_the_runner_with_the_servers_message() {
    let _shared = APISERVER.read().unwrap_or_else(|e| e.into_inner());
    let ns = cluster().namespace("ha-nons");
    let rec = recorder();
    let args: Vec<String> = ["-o", "cm", "-n", &ns.name, "--leader-elect", "--lease-namespace", "no-such-namespace"]
        .iter()
        .map(|s| s.to_string())
        .chain(rec.args())
        .collect();
    let mut op = Operator::start(&args);
    let status = op.wait_exit(secs(30));
    op.check(status.code() == Some(1), &format!("exit status {status}"));
    let log = op.log_text();
    let says = log.contains("refused the Lease no-such-namespace/") && log.contains("not found");
    op.check(says, "the error names the Lease and gives the server's message");
}
