//! Delivery guarantees on a real control plane: ordering with parallelism, retries,
//! timeouts, the durable queue and finalizer mode.

mod support;

use std::collections::BTreeMap;
use support::{Operator, Recorder, cluster, secs};

/// Records the environment plus START/END (ns); objects other than `hot` take 0.3 s.
const TIMED: &str = r#"#!/usr/bin/env bash
set -euo pipefail
start=$(date +%s%N)
[[ $EVENT_OBJECT_METADATA_NAME == hot ]] || sleep 0.3
f="$RECORD_DIR/$start-$$"
{ env -0; printf 'START=%s\0END=%s\0' "$start" "$(date +%s%N)"; } > "$f.tmp"
mv "$f.tmp" "$f.env"
"#;

fn cm(name: &str, data: &str) -> String {
    format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{{data}}}}}"#)
}

fn span(run: &BTreeMap<String, String>) -> (u128, u128) {
    (run["START"].parse().unwrap(), run["END"].parse().unwrap())
}

#[test]
fn rapid_changes_to_one_object_arrive_in_order_while_others_run_in_parallel() {
    let c = cluster();
    let ns = c.namespace("order");
    let rec = Recorder::new(&[]);
    rec.hook("added", TIMED);
    rec.hook("modified", TIMED);
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name, "--workers", "4"]);
    c.apply(&ns.name, &cm("hot", r#""n":"0""#));
    let cold: Vec<String> = (0..20).map(|i| cm(&format!("cold-{i}"), "")).collect();
    c.apply(&ns.name, &format!(r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#, cold.join(",")));
    let script = format!(
        "for i in $(seq 1 100); do kubectl patch cm hot -n {} --type=merge -p \"{{\\\"data\\\":{{\\\"n\\\":\\\"$i\\\"}}}}\" >/dev/null; done",
        ns.name
    );
    let patched =
        std::process::Command::new("bash").args(["-c", &script]).env("KUBECONFIG", &c.kubeconfig).status().unwrap();
    op.check(patched.success(), "patch loop");
    op.wait_until("all 101 events of hot", secs(60), || rec.runs_of("hot").len() >= 101);
    op.wait_until("all 20 cold objects", secs(30), || (0..20).all(|i| rec.types_of(&format!("cold-{i}")).len() == 1));
    let hot = rec.runs_of("hot");
    let seq: Vec<u32> = hot.iter().map(|r| r["EVENT_OBJECT_DATA_N"].parse().unwrap()).collect();
    op.check(seq == (0..=100).collect::<Vec<_>>(), &format!("hot's changes out of order or lost: {seq:?}"));
    for pair in hot.windows(2) {
        op.check(span(&pair[1]).0 >= span(&pair[0]).1, "two hooks of one object overlapped");
    }
    let spans: Vec<_> =
        rec.runs().iter().filter(|r| r["EVENT_OBJECT_METADATA_NAME"].starts_with("cold-")).map(span).collect();
    let overlapping = spans.iter().enumerate().any(|(i, a)| spans[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1));
    op.check(overlapping, "hooks of different objects never ran in parallel");
}

#[test]
fn a_hook_failing_twice_then_succeeding_runs_three_times() {
    let c = cluster();
    let ns = c.namespace("retry");
    let rec = Recorder::new(&[]);
    rec.hook(
        "added",
        "#!/usr/bin/env bash\nset -euo pipefail\nf=\"$RECORD_DIR/count\"\nn=$(( $(cat \"$f\" 2>/dev/null || echo 0) + 1 ))\necho \"$n\" > \"$f\"\n(( n >= 3 ))\n",
    );
    let op = Operator::watching(
        &rec,
        &["-o", "cm", "-n", &ns.name, "--field-selector", "metadata.name=flaky", "--backoff-min", "100ms"],
    );
    c.apply(&ns.name, &cm("flaky", ""));
    let count = || std::fs::read_to_string(rec.out.path().join("count")).unwrap_or_default().trim().to_string();
    op.wait_until("a third run", secs(30), || count() == "3");
    std::thread::sleep(secs(2));
    op.check(count() == "3", &format!("ran {} times", count()));
    let log = op.log_text();
    op.check(
        log.contains("retry 1 of 5") && log.contains("retry 2 of 5") && !log.contains("retry 3 of 5"),
        "retry lines",
    );
}

#[test]
fn exhausted_retries_post_a_hook_failed_event_and_later_events_still_run() {
    let c = cluster();
    let ns = c.namespace("exhaust");
    let rec = Recorder::new(&["modified"]);
    rec.hook("added", "#!/bin/sh\necho broken >&2\nexit 1\n");
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name, "--retries", "1", "--backoff-min", "100ms"]);
    c.apply(&ns.name, &cm("doomed", r#""a":"1""#));
    op.wait_for_log("no retries left", secs(30));
    op.wait_until("a HookFailed event", secs(20), || {
        c.ok(&[
            "get",
            "events",
            "-n",
            &ns.name,
            "--field-selector",
            "reason=HookFailed,involvedObject.name=doomed",
            "-o",
            "name",
        ])
        .contains("event")
    });
    c.apply(&ns.name, &cm("doomed", r#""a":"2""#));
    op.wait_until("the next event of the object", secs(20), || rec.types_of("doomed") == ["MODIFIED"]);
}

#[test]
fn a_hanging_hook_is_killed_at_the_timeout_while_other_objects_run() {
    let c = cluster();
    let ns = c.namespace("timeout");
    let rec = Recorder::new(&[]);
    rec.hook(
        "added",
        "#!/usr/bin/env bash\nset -euo pipefail\nif [[ $EVENT_OBJECT_METADATA_NAME == slow ]]; then\n  echo $$ > \"$RECORD_DIR/slow.pid\"\n  sleep 300\nfi\ntouch \"$RECORD_DIR/$EVENT_OBJECT_METADATA_NAME.done\"\n",
    );
    let op = Operator::watching(
        &rec,
        &["-o", "cm", "-n", &ns.name, "--hook-timeout", "15s", "--retries", "0", "--grace-period", "1s"],
    );
    c.apply(&ns.name, &cm("slow", ""));
    let pid_file = rec.out.path().join("slow.pid");
    op.wait_until("the slow hook to start", secs(20), || pid_file.exists());
    for i in 0..5 {
        c.apply(&ns.name, &cm(&format!("quick-{i}"), ""));
    }
    op.wait_until("the quick objects", secs(20), || {
        (0..5).all(|i| rec.out.path().join(format!("quick-{i}.done")).exists())
    });
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let alive = || std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z")).unwrap_or(false);
    op.check(alive() && !op.log_text().contains("timed out"), "other objects waited for the hanging hook");
    op.wait_for_log(&format!("hook added for {}/slow timed out", ns.name), secs(30));
    op.wait_until("the hanging hook ended", secs(5), || !alive());
}

#[test]
fn a_runner_killed_mid_hook_delivers_the_event_again_from_its_queue() {
    let c = cluster();
    let ns = c.namespace("queue");
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    let rec = Recorder::new(&[]);
    rec.hook(
        "modified",
        "#!/usr/bin/env bash\nset -euo pipefail\nif [[ ! -e $RECORD_DIR/first ]]; then touch \"$RECORD_DIR/first\"; sleep 299; fi\ntouch \"$RECORD_DIR/second\"\n",
    );
    c.apply(&ns.name, &cm("victim", r#""a":"1""#));
    let q = queue.display().to_string();
    let args = ["-o", "cm", "-n", &ns.name, "-c", "-q", &q];
    let mut first = Operator::watching(&rec, &args);
    c.apply(&ns.name, &cm("victim", r#""a":"2""#));
    first.wait_until("the hook to start", secs(20), || rec.out.path().join("first").exists());
    first.signal("KILL");
    first.wait_exit(secs(10));
    // -c: the restart's list gives no event for the existing object; only the queue can.
    let second = Operator::watching(&rec, &args);
    second.wait_until("the event again after the restart", secs(30), || rec.out.path().join("second").exists());
    second.check(second.log_text().contains("delivering 1 unfinished events first"), "replay line");
    // The killed runner's hook lives on in its own process group (299: no other test's).
    let _ = std::process::Command::new("pkill").args(["-f", "sleep 299"]).status();
}

#[test]
fn finalizer_mode_handles_a_delete_made_while_the_runner_was_down() {
    let c = cluster();
    let ns = c.namespace("finalizer");
    let rec = Recorder::new(&["added", "deleted"]);
    let args = [
        "-o",
        "cm",
        "-n",
        &ns.name,
        "--field-selector",
        "metadata.name=held",
        "--finalizer",
        "test.example.com/cleanup",
    ];
    let mut op = Operator::watching(&rec, &args);
    c.apply(&ns.name, &cm("held", ""));
    let finalizers = || c.ok(&["get", "cm", "held", "-n", &ns.name, "-o", "jsonpath={.metadata.finalizers}"]);
    op.wait_until("the finalizer on the object", secs(20), || finalizers().contains("test.example.com/cleanup"));
    let stopped = op.stop();
    op.check(stopped.success(), "clean stop");
    c.ok(&["delete", "cm", "held", "-n", &ns.name, "--wait=false"]);
    let ts = c.ok(&["get", "cm", "held", "-n", &ns.name, "-o", "jsonpath={.metadata.deletionTimestamp}"]);
    op.check(!ts.is_empty(), "the object waits for the finalizer while the runner is down");
    let op = Operator::watching(&rec, &args);
    op.wait_until("the deleted hook", secs(20), || rec.types_of("held").contains(&"DELETED".to_string()));
    op.wait_until("the object gone", secs(20), || !c.kubectl(&["get", "cm", "held", "-n", &ns.name]).status.success());
    std::thread::sleep(secs(1));
    let deleted = rec.types_of("held").iter().filter(|t| *t == "DELETED").count();
    op.check(deleted == 1, &format!("{deleted} DELETED events"));
}
