//! The batched hooks against a real control plane: with --resync, the `sync-all` hook runs
//! once per pass with every known object in EVENT_FILE; `snapshot` runs after changes.

mod support;

use support::{Operator, Recorder, cluster, secs};

/// A sync-all hook that keeps each pass's environment and event file in RECORD_DIR; the
/// event file comes last and whole (mv), so a pass seen has its environment too.
const SYNC_ALL: &str = r#"#!/usr/bin/env bash
set -euo pipefail
f="$RECORD_DIR/$(date +%s%N)-$$"
env -0 > "$f.tmp"
mv "$f.tmp" "$f.env"
cp "$EVENT_FILE" "$f.tmp"
mv "$f.tmp" "$f.pass"
"#;

/// The names of the objects of each pass, in order.
fn passes(rec: &Recorder) -> Vec<Vec<String>> {
    let mut files: Vec<_> = std::fs::read_dir(rec.out.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pass"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            assert_eq!(v["type"], "SYNC");
            v["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

fn configmap(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata: {{a: '1'}}\n")
}

#[test]
fn each_pass_gives_sync_all_every_known_object_in_one_run() {
    let c = cluster();
    let ns = c.namespace("batch");
    c.apply(&ns.name, &configmap("one"));
    c.apply(&ns.name, &configmap("two"));
    let rec = Recorder::new(&[]);
    rec.hook("sync-all", SYNC_ALL);
    let op = Operator::watching(&rec, &["-o", "configmaps", "-n", &ns.name, "--resync", "1s"]);
    let all = |p: &Vec<String>| p.contains(&"one".to_string()) && p.contains(&"two".to_string());
    op.wait_until("a pass with both ConfigMaps", secs(30), || passes(&rec).iter().any(all));
    let first = passes(&rec).into_iter().find(all).unwrap();
    op.check(first.windows(2).all(|w| w[0] <= w[1]), "objects are in name order");
    let run = rec.runs().into_iter().next().unwrap();
    op.check(run.get("EVENT_TYPE").map(String::as_str) == Some("SYNC"), "EVENT_TYPE is SYNC");
    op.check(!run.keys().any(|k| k.starts_with("EVENT_OBJECT_")), "no EVENT_OBJECT_* variables");
    c.ok(&["delete", "configmap", "one", "-n", &ns.name]);
    op.wait_until("a pass without the deleted ConfigMap", secs(30), || {
        passes(&rec).last().is_some_and(|p| p.contains(&"two".to_string()) && !p.contains(&"one".to_string()))
    });
    op.check(!op.log_text().contains(" ERROR "), "no errors while the hook succeeded");
}

#[test]
fn a_failing_sync_all_is_an_error_and_runs_again_next_pass() {
    let c = cluster();
    let ns = c.namespace("batchfail");
    c.apply(&ns.name, &configmap("x"));
    let rec = Recorder::new(&[]);
    rec.hook("sync-all", "#!/bin/sh\necho \"failing on $(date +%s%N)\" >> \"$RECORD_DIR/fails\"\nexit 3\n");
    let op = Operator::watching(&rec, &["-o", "configmaps", "-n", &ns.name, "--resync", "1s"]);
    op.wait_for_log("objects exited with status 3; not retried, the next pass runs it again", secs(30));
    let fails = || std::fs::read_to_string(rec.out.path().join("fails")).unwrap_or_default().lines().count();
    op.wait_until("a second run at the next pass", secs(30), || fails() >= 2);
}

#[test]
fn without_resync_sync_all_never_runs() {
    let c = cluster();
    let ns = c.namespace("batchoff");
    c.apply(&ns.name, &configmap("x"));
    let rec = Recorder::new(&["added"]);
    rec.hook("sync-all", SYNC_ALL);
    let op = Operator::watching(&rec, &["-o", "configmaps", "-n", &ns.name]);
    op.wait_until("the ADDED hook ran", secs(30), || rec.types_of("x") == ["ADDED"]);
    std::thread::sleep(secs(3));
    op.check(passes(&rec).is_empty(), "sync-all ran without --resync");
}

/// Creates `n` ConfigMaps in one kubectl run (one burst of ADDED events).
fn create_many(c: &support::Cluster, ns: &str, prefix: &str, n: usize) {
    let docs: Vec<String> = (0..n).map(|i| configmap(&format!("{prefix}{i:02}"))).collect();
    c.apply(ns, &docs.join("---\n"));
}

#[test]
fn snapshot_runs_after_changes_with_every_object_and_gathers_a_burst_into_few_runs() {
    let c = cluster();
    let ns = c.namespace("snap");
    c.apply(&ns.name, &configmap("first"));
    let rec = Recorder::new(&[]);
    rec.hook("snapshot", SYNC_ALL);
    let op = Operator::watching(&rec, &["-o", "configmaps", "-n", &ns.name]);
    op.wait_until("a snapshot after the initial list", secs(30), || {
        passes(&rec).iter().any(|p| p.contains(&"first".to_string()))
    });
    let before = passes(&rec).len();
    create_many(c, &ns.name, "burst", 40);
    op.wait_until("a snapshot with all 40 new ConfigMaps", secs(30), || {
        passes(&rec).last().is_some_and(|p| p.iter().filter(|n| n.starts_with("burst")).count() == 40)
    });
    std::thread::sleep(secs(1));
    let runs = passes(&rec).len() - before;
    op.check(runs <= 10, &format!("40 creations in one burst gave {runs} snapshot runs, expected a few"));
    let run = rec.runs().into_iter().next().unwrap();
    op.check(run.get("EVENT_TYPE").map(String::as_str) == Some("SYNC"), "EVENT_TYPE is SYNC");
    c.ok(&["delete", "configmap", "first", "-n", &ns.name]);
    op.wait_until("a snapshot without the deleted ConfigMap", secs(30), || {
        passes(&rec).last().is_some_and(|p| {
            p.iter().filter(|n| n.starts_with("burst")).count() == 40 && !p.contains(&"first".to_string())
        })
    });
    let settled = passes(&rec).len();
    std::thread::sleep(secs(2));
    op.check(passes(&rec).len() == settled, "no snapshot runs while nothing changes (no --resync)");
}

#[test]
fn a_failing_snapshot_is_retried_with_backoff_then_given_up() {
    let c = cluster();
    let ns = c.namespace("snapfail");
    c.apply(&ns.name, &configmap("x"));
    let rec = Recorder::new(&[]);
    rec.hook("snapshot", "#!/bin/sh\necho run >> \"$RECORD_DIR/fails\"\nexit 3\n");
    let op = Operator::watching(
        &rec,
        &["-o", "configmaps", "-n", &ns.name, "--retries", "3", "--backoff-min", "200ms", "--backoff-max", "400ms"],
    );
    // The namespace also holds kube-root-ca.crt.
    op.wait_for_log("hook snapshot for 2 objects exited with status 3; gave up after 3 attempts", secs(30));
    let fails = || std::fs::read_to_string(rec.out.path().join("fails")).unwrap_or_default().lines().count();
    op.check(fails() == 3, &format!("{} attempts, expected 3", fails()));
    op.check(op.log_text().contains("attempt 1 of 3, retrying in"), "the first failure says it will retry");
    c.apply(&ns.name, &configmap("second"));
    op.wait_until("a change starts the attempts again", secs(30), || fails() >= 4);
}
