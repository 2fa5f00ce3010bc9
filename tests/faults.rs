//! API faults on a real control plane: kube-apiserver killed and restarted, etcd
//! compacted while the runner was paused. Its own test binary, so its own cluster.

mod support;

use std::sync::Mutex;
use support::{Operator, Recorder, cluster, secs};

/// Tests that restart kube-apiserver must not overlap.
static APISERVER: Mutex<()> = Mutex::new(());

#[test]
fn after_an_outage_and_a_compaction_exactly_the_changes_of_the_gap_arrive() {
    let _serial = APISERVER.lock().unwrap_or_else(|e| e.into_inner());
    let c = cluster();
    let ns = c.namespace("gap");
    let rec = Recorder::new(&["added", "modified", "deleted"]);
    let all: Vec<String> = ["-o", "cm", "-n", &ns.name].iter().map(|s| s.to_string()).chain(rec.args()).collect();
    let op = Operator::start(&all);
    let names = ["gone-1", "gone-2", "changed", "same"];
    for n in names {
        c.apply(
            &ns.name,
            &format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{n}"}},"data":{{"v":"1"}}}}"#),
        );
    }
    op.wait_until("four ADDED", secs(30), || names.iter().all(|n| rec.types_of(n) == ["ADDED"]));
    op.signal("STOP");
    c.ok(&["delete", "cm", "gone-1", "gone-2", "-n", &ns.name]);
    c.ok(&["patch", "cm", "changed", "-n", &ns.name, "--type=merge", "-p", r#"{"data":{"v":"2"}}"#]);
    c.restart_apiserver(secs(2));
    c.compact_etcd();
    op.signal("CONT");
    op.wait_until("the gap's events", secs(90), || {
        rec.types_of("gone-1").len() == 2 && rec.types_of("gone-2").len() == 2 && rec.types_of("changed").len() == 2
    });
    std::thread::sleep(secs(3));
    op.check(rec.types_of("gone-1") == ["ADDED", "DELETED"], &format!("gone-1: {:?}", rec.types_of("gone-1")));
    op.check(rec.types_of("gone-2") == ["ADDED", "DELETED"], &format!("gone-2: {:?}", rec.types_of("gone-2")));
    op.check(rec.types_of("changed") == ["ADDED", "MODIFIED"], &format!("changed: {:?}", rec.types_of("changed")));
    op.check(rec.types_of("same") == ["ADDED"], &format!("same: {:?}", rec.types_of("same")));
}

#[test]
fn an_api_server_outage_is_logged_once_and_the_watch_resumes() {
    let _serial = APISERVER.lock().unwrap_or_else(|e| e.into_inner());
    let c = cluster();
    let ns = c.namespace("outage");
    let rec = Recorder::new(&["added"]);
    let all: Vec<String> = ["-o", "cm", "-n", &ns.name].iter().map(|s| s.to_string()).chain(rec.args()).collect();
    let op = Operator::start(&all);
    op.wait_for_log("listed ", secs(30));
    c.restart_apiserver(secs(6));
    c.apply(&ns.name, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after"}}"#);
    op.wait_until("an object made after the outage", secs(60), || rec.types_of("after") == ["ADDED"]);
    let log = op.log_text();
    op.check(log.matches("watch interrupted").count() == 1, "one line per outage");
    op.check(log.matches("watch recovered").count() == 1, "one line when it recovers");
    op.check(!log.contains("failed with error"), "the client library's own retry lines leak into the log");
}

#[test]
fn the_runner_waits_for_an_unreachable_api_server_at_start() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // The same credentials, pointed at a port nobody listens on.
    let text = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let port_start = text.find("https://127.0.0.1:").unwrap() + "https://127.0.0.1:".len();
    let port_end = port_start + text[port_start..].find(|ch: char| !ch.is_ascii_digit()).unwrap();
    std::fs::write(&kubeconfig, format!("{}1{}", &text[..port_start], &text[port_end..])).unwrap();
    let rec = Recorder::new(&[]);
    let k = kubeconfig.display().to_string();
    let all: Vec<String> = ["-o", "pods", "-k", &k].iter().map(|s| s.to_string()).chain(rec.args()).collect();
    let op = Operator::start(&all);
    std::thread::sleep(secs(4));
    op.check(op.child.is_some(), "the runner is still there");
    let log = op.log_text();
    let retries = log.matches("cannot reach the API server").count();
    op.check((2..=6).contains(&retries), &format!("{retries} retry lines in 4 s: expected backoff, not a tight loop"));
}
