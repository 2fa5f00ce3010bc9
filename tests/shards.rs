//! Several instances with --shards on one group, on a real control plane: each object's
//! hooks run on exactly one member, shares are even, and members joining, leaving,
//! being killed or frozen hand objects over without two members running one object's
//! hooks at once, without losing a change and in order. Its own test binary, so its
//! own cluster.
//!
//! Lease timings are short (--lease-duration 4s, --renew-deadline 3s, --retry-period
//! 1s), as in tests/replicas.rs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{Operator, Recorder, cluster, secs};

/// The chaos test restarts kube-apiserver: it runs alone.
static APISERVER: RwLock<()> = RwLock::new(());

const TIMINGS: [&str; 6] = ["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "1s"];

/// Every run appends `RUNNER TYPE NAME VALUE NANOS start`, takes 50 ms, then appends
/// the same with `end`: the test reads who ran what, when, and with which state.
const HOOK: &str = r#"#!/usr/bin/env bash
set -euo pipefail
line="$RUNNER $EVENT_TYPE $EVENT_OBJECT_METADATA_NAME ${EVENT_OBJECT_DATA_V:--1}"
echo "$line $(date +%s%N) start" >> "$RECORD_DIR/runs"
sleep 0.05
echo "$line $(date +%s%N) end" >> "$RECORD_DIR/runs"
"#;

#[derive(Debug, Clone)]
struct Run {
    runner: String,
    kind: String,
    name: String,
    value: i64,
    at: u128,
    end: bool,
}

fn recorder() -> Recorder {
    let rec = Recorder::new(&[]);
    for event in ["added", "modified", "deleted"] {
        rec.hook(event, HOOK);
    }
    rec
}

fn runs(rec: &Recorder) -> Vec<Run> {
    let text = std::fs::read_to_string(rec.out.path().join("runs")).unwrap_or_default();
    let mut out: Vec<Run> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some(Run {
                runner: f.first()?.to_string(),
                name: f.get(2).filter(|n| **n != "kube-root-ca.crt")?.to_string(),
                kind: f.get(1)?.to_string(),
                value: f.get(3)?.parse().ok()?,
                at: f.get(4)?.parse().ok()?,
                end: *f.get(5)? == "end",
            })
        })
        .collect();
    out.sort_by_key(|r| r.at);
    out
}

fn member(rec: &Recorder, ns: &str, runner: &str) -> Operator {
    let mut args: Vec<String> = ["-o", "cm", "-n", ns, "--shards", "--lease-namespace", ns, "--lease-name", "group"]
        .iter()
        .chain(&TIMINGS)
        .map(|s| s.to_string())
        .collect();
    args.extend(rec.args());
    args.extend(["-E".into(), format!("RUNNER={runner}")]);
    Operator::start(&args)
}

/// Creates or changes `names` to data.v = `value`, in one request.
fn set(ns: &str, names: &[String], value: i64) {
    let items: Vec<String> = names
        .iter()
        .map(|n| {
            format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{n}"}},"data":{{"v":"{value}"}}}}"#)
        })
        .collect();
    cluster().apply(ns, &format!(r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#, items.join(",")));
}

fn delete(ns: &str, names: &[String]) {
    let mut args = vec!["delete", "configmap", "-n", ns, "--wait=false", "--ignore-not-found"];
    args.extend(names.iter().map(String::as_str));
    cluster().ok(&args);
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// Waits until every member's log says the group has `n` members.
fn settled(members: &[&Operator], n: usize) {
    let needle = format!(": {n} member(s)");
    for m in members {
        m.wait_until(&format!("{n} members seen"), secs(30), || {
            m.log_text().lines().rev().find(|l| l.contains("shard group")).is_some_and(|l| l.contains(&needle))
        });
    }
}

/// Per object, the (runner, start, end) of every hook run; a run whose end is missing
/// (its member was killed with it) counts as running to the end of the test.
fn intervals(runs: &[Run]) -> BTreeMap<String, Vec<(String, u128, u128)>> {
    let mut open: BTreeMap<(String, String), Vec<u128>> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<(String, u128, u128)>> = BTreeMap::new();
    for r in runs {
        let slot = open.entry((r.runner.clone(), r.name.clone())).or_default();
        if r.end {
            if let Some(start) = (!slot.is_empty()).then(|| slot.remove(0)) {
                out.entry(r.name.clone()).or_default().push((r.runner.clone(), start, r.at));
            }
        } else {
            slot.push(r.at);
        }
    }
    for ((runner, name), starts) in open {
        for start in starts {
            out.entry(name.clone()).or_default().push((runner.clone(), start, u128::MAX));
        }
    }
    out
}

/// Two members' hooks for one object that ran at the same time.
fn overlaps(runs: &[Run]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, mut list) in intervals(runs) {
        list.sort_by_key(|i| i.1);
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if b.1 < a.2 && a.0 != b.0 {
                    found.push(format!("{name}: {a:?} and {b:?}"));
                }
            }
        }
    }
    found
}

/// Objects whose delivered states went backwards (by start time, across members).
fn out_of_order(runs: &[Run]) -> Vec<String> {
    let mut last: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
    let mut found = Vec::new();
    for r in runs.iter().filter(|r| !r.end) {
        if let Some((v, who)) = last.get(r.name.as_str())
            && r.value < *v
        {
            found.push(format!("{}: {} after {} ({} after {})", r.name, r.value, v, r.runner, who));
        }
        last.insert(&r.name, (r.value, &r.runner));
    }
    found
}

/// Objects whose last run did not deliver `want` (value, or deletion) on a live member.
fn unfinished(runs: &[Run], want: &BTreeMap<String, Option<i64>>, live: &BTreeSet<String>) -> Vec<String> {
    let mut last: BTreeMap<&str, &Run> = BTreeMap::new();
    for r in runs.iter().filter(|r| !r.end) {
        last.insert(&r.name, r);
    }
    want.iter()
        .filter_map(|(name, want)| {
            let got = last.get(name.as_str());
            let ok = match (got, want) {
                (Some(r), Some(v)) => r.value == *v && r.kind != "DELETED" && live.contains(&r.runner),
                (Some(r), None) => r.kind == "DELETED",
                (None, _) => false,
            };
            (!ok).then(|| format!("{name}: want {want:?}, last {got:?}"))
        })
        .collect()
}

/// Objects whose hooks ran on more than one member.
fn moved(runs: &[Run]) -> usize {
    let mut by: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in runs {
        by.entry(&r.name).or_default().insert(&r.runner);
    }
    by.values().filter(|who| who.len() > 1).count()
}

fn report(runs: &[Run], what: &[String]) -> String {
    let names: BTreeSet<&str> = what.iter().filter_map(|w| w.split(':').next()).take(3).collect();
    let related: Vec<String> =
        runs.iter().filter(|r| names.contains(r.name.as_str())).map(|r| format!("{r:?}")).collect();
    format!("{}\nruns of those objects:\n{}", what.join("\n"), related.join("\n"))
}

#[test]
fn three_members_share_300_objects_and_each_object_runs_on_exactly_one() {
    let _shared = APISERVER.read().unwrap_or_else(|e| e.into_inner());
    let ns = cluster().namespace("shards-share");
    let rec = recorder();
    let members: Vec<Operator> = ["A", "B", "C"].iter().map(|r| member(&rec, &ns.name, r)).collect();
    settled(&members.iter().collect::<Vec<_>>(), 3);
    let all = names("obj", 300);
    set(&ns.name, &all, 0);
    members[0].wait_until("every object's hook ran", secs(90), || {
        runs(&rec).iter().filter(|r| r.end).map(|r| r.name.clone()).collect::<BTreeSet<_>>().len() == 300
    });
    std::thread::sleep(secs(3));
    let runs = runs(&rec);
    let mut by: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &runs {
        by.entry(&r.name).or_default().insert(&r.runner);
    }
    let shared: Vec<_> = by.iter().filter(|(_, who)| who.len() != 1).collect();
    members[0].check(shared.is_empty(), &format!("objects run on more than one member: {shared:?}"));
    let mut shares: BTreeMap<&str, usize> = BTreeMap::new();
    for who in by.values() {
        *shares.entry(who.iter().next().unwrap()).or_default() += 1;
    }
    for (m, n) in &shares {
        members[0].check((80..=120).contains(n), &format!("{m} owns {n} of 300 (want 100 ± 20%): {shares:?}"));
    }
    members[0].check(shares.len() == 3, &format!("every member runs hooks: {shares:?}"));
}

/// Changes `objects` at about 50 per second (25 every half second, each its next value)
/// until `done`; returns each object's last value.
fn writer(ns: String, objects: Vec<String>, done: std::sync::Arc<AtomicBool>) -> BTreeMap<String, Option<i64>> {
    let mut value = 0;
    let mut last: BTreeMap<String, Option<i64>> = objects.iter().map(|n| (n.clone(), Some(0))).collect();
    let mut i = 0;
    while !done.load(Ordering::SeqCst) {
        value += 1;
        let batch: Vec<String> = (0..25).map(|k| objects[(i + k) % objects.len()].clone()).collect();
        i += 25;
        set(&ns, &batch, value);
        for n in batch {
            last.insert(n, Some(value));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    last
}

fn check_invariants(op: &Operator, rec: &Recorder, want: &BTreeMap<String, Option<i64>>, live: &BTreeSet<String>) {
    op.wait_until("every object's last state delivered on a live member", secs(90), || {
        unfinished(&runs(rec), want, live).is_empty()
    });
    std::thread::sleep(secs(1));
    let runs = runs(rec);
    let overlap = overlaps(&runs);
    op.check(
        overlap.is_empty(),
        &format!("hooks of one object ran at once on two members:\n{}", report(&runs, &overlap)),
    );
    let order = out_of_order(&runs);
    op.check(order.is_empty(), &format!("an object's states were delivered out of order:\n{}", report(&runs, &order)));
    let left = unfinished(&runs, want, live);
    op.check(left.is_empty(), &format!("changes lost:\n{}", report(&runs, &left)));
}

#[test]
fn a_member_joins_and_one_leaves_while_objects_change_without_overlap_loss_or_reordering() {
    let _shared = APISERVER.read().unwrap_or_else(|e| e.into_inner());
    let ns = cluster().namespace("shards-move");
    let rec = recorder();
    let mut members: Vec<Operator> = ["A", "B", "C"].iter().map(|r| member(&rec, &ns.name, r)).collect();
    settled(&members.iter().collect::<Vec<_>>(), 3);
    let all = names("obj", 100);
    set(&ns.name, &all, 0);
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let changes = {
        let (ns, all, done) = (ns.name.clone(), all.clone(), done.clone());
        std::thread::spawn(move || writer(ns, all, done))
    };
    std::thread::sleep(secs(4));
    members.push(member(&rec, &ns.name, "D"));
    settled(&members.iter().collect::<Vec<_>>(), 4);
    std::thread::sleep(secs(3));
    let status = members[1].stop();
    members[0].check(status.success(), "B leaves cleanly on SIGTERM");
    members.remove(1);
    settled(&members.iter().collect::<Vec<_>>(), 3);
    std::thread::sleep(secs(3));
    done.store(true, Ordering::SeqCst);
    let want = changes.join().unwrap();
    let live: BTreeSet<String> = ["A", "C", "D"].iter().map(|s| s.to_string()).collect();
    check_invariants(&members[0], &rec, &want, &live);
    let moved = moved(&runs(&rec));
    members[0]
        .check(moved >= 20, &format!("objects moved between members ({moved}): the join and the leave hand over"));
    let log = members[0].log_text();
    members[0].check(log.contains("gone: ") && log.contains("(left)"), "the log names the member that left");
}

/// One member slot of the chaos test: its current process and name.
struct Slot {
    op: Option<Operator>,
    name: String,
    generation: u32,
}

impl Slot {
    fn restart(&mut self, rec: &Recorder, ns: &str) {
        self.generation += 1;
        let letter = &self.name[..1];
        self.name = format!("{letter}{}", self.generation);
        self.op = Some(member(rec, ns, &self.name));
    }
}

#[test]
fn chaos_kills_freezes_and_restarts_members_and_the_api_server_without_overlap_loss_or_reordering() {
    let _alone = APISERVER.write().unwrap_or_else(|e| e.into_inner());
    let ns = cluster().namespace("shards-chaos");
    let rec = recorder();
    let mut slots: Vec<Slot> = ["A0", "B0", "C0"]
        .iter()
        .map(|n| Slot { op: Some(member(&rec, &ns.name, n)), name: n.to_string(), generation: 0 })
        .collect();
    settled(&slots.iter().filter_map(|s| s.op.as_ref()).collect::<Vec<_>>(), 3);
    let mut objects = names("obj", 60);
    set(&ns.name, &objects, 0);
    let started = Instant::now();
    let (mut value, mut step) = (0i64, 0usize);
    let mut want: BTreeMap<String, Option<i64>> = objects.iter().map(|n| (n.clone(), Some(0))).collect();
    let mut api_restarted = false;
    while started.elapsed() < secs(100) {
        value += 1;
        step += 1;
        // Objects: change a third, delete two, create two.
        let batch: Vec<String> = objects.iter().skip(step % 3).step_by(3).cloned().collect();
        set(&ns.name, &batch, value);
        want.extend(batch.iter().map(|n| (n.clone(), Some(value))));
        let gone: Vec<String> = objects.drain(..2).collect();
        delete(&ns.name, &gone);
        want.extend(gone.iter().map(|n| (n.clone(), None)));
        let born: Vec<String> = (0..2).map(|k| format!("new-{step:03}-{k}")).collect();
        set(&ns.name, &born, value);
        want.extend(born.iter().map(|n| (n.clone(), Some(value))));
        objects.extend(born);
        let slot = &mut slots[step % 3];
        match step % 4 {
            0 => {
                slot.op.as_ref().unwrap().signal("KILL");
                slot.op.take().unwrap().wait_exit(secs(10));
                slot.restart(&rec, &ns.name);
            }
            1 => {
                let op = slot.op.as_ref().unwrap();
                op.signal("STOP");
                std::thread::sleep(secs(6));
                op.signal("CONT");
            }
            2 => {
                slot.op.as_mut().unwrap().stop();
                slot.restart(&rec, &ns.name);
            }
            _ if !api_restarted => {
                cluster().restart_apiserver(secs(2));
                api_restarted = true;
            }
            _ => {}
        }
        std::thread::sleep(secs(2));
    }
    let live: BTreeSet<String> = slots.iter().map(|s| s.name.clone()).collect();
    let ops: Vec<&Operator> = slots.iter().filter_map(|s| s.op.as_ref()).collect();
    // A frozen member that resumed may have left its own process: only live ones count.
    check_invariants(ops[0], &rec, &want, &live);
    let moved = moved(&runs(&rec));
    ops[0].check(moved >= 20, &format!("objects moved between members ({moved})"));
    let fenced = ops.iter().any(|o| o.log_text().contains("within the renew deadline"));
    ops[0].check(fenced, "a frozen member noticed on resuming that its Lease had lapsed");
}
