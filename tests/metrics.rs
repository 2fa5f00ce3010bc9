//! --listen on a real control plane: /metrics counts hook outcomes as they happen,
//! /readyz flips after the initial list, /healthz turns 503 while the API server is
//! down long enough and back to 200 after. Scraped with a plain TCP client, as curl
//! would. Its own test binary, so its own cluster.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;
use support::{Operator, Recorder, cluster, secs};

/// The outage test must not overlap the others.
static APISERVER: Mutex<()> = Mutex::new(());

/// Status code and body of a request.
fn request(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    request(addr, "GET", path)
}

/// The value of one series, e.g. `operator_objects` or `operator_hook_runs_total{hook="added",outcome="failed"}`.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The address the operator listens on (it was given port 0), from its log.
fn listen_addr(op: &Operator) -> String {
    op.wait_for_log("/readyz on http://", secs(30));
    let log = op.log_text();
    let start = log.find("/readyz on http://").unwrap() + "/readyz on http://".len();
    log[start..].split_whitespace().next().unwrap().to_string()
}

fn runs(outcome: &str) -> String {
    format!(r#"operator_hook_runs_total{{hook="added",outcome="{outcome}"}}"#)
}

const OUTCOMES: &str = r#"#!/usr/bin/env bash
set -euo pipefail
case $EVENT_OBJECT_METADATA_NAME in
  ok) exit 0 ;;
  fail) exit 1 ;;
  slow) sleep 5 ;;
  perm) exit 100 ;;
esac
"#;

#[test]
fn hook_outcomes_are_counted_as_they_happen() {
    let _serial = APISERVER.lock().unwrap_or_else(|e| e.into_inner());
    let c = cluster();
    let ns = c.namespace("metrics");
    let rec = Recorder::new(&[]);
    rec.hook("added", OUTCOMES);
    let flags = "--label-selector test=metrics --retries 1 --backoff-min 100ms --backoff-max 200ms \
                 --hook-timeout 1s --grace-period 1s --listen 127.0.0.1:0";
    let mut args = vec!["-o", "cm", "-n", &ns.name];
    args.extend(flags.split_whitespace());
    let op = Operator::watching(&rec, &args);
    let addr = listen_addr(&op);
    let (status, before) = get(&addr, "/metrics");
    op.check(status == 200, &format!("/metrics: {status}"));
    op.check(value(&before, &runs("failed")) == Some(0.0), &format!("failure series exist from the start:\n{before}"));
    op.check(value(&before, "operator_leader") == Some(1.0), "without --leader-elect the instance is active");
    op.check(get(&addr, "/readyz").0 == 200, "ready after the initial list");
    op.check(get(&addr, "/healthz").0 == 200, "healthy");

    for name in ["ok", "fail", "slow", "perm"] {
        let yaml = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"test":"metrics"}}}}}}"#
        );
        c.apply(&ns.name, &yaml);
    }
    let expected = [("succeeded", 1.0), ("failed", 2.0), ("timeout", 2.0), ("permanent", 1.0)];
    let mut text = String::new();
    op.wait_until("every outcome counted", secs(60), || {
        text = get(&addr, "/metrics").1;
        expected.iter().all(|(o, n)| value(&text, &runs(o)) == Some(*n))
    });
    let check = |series: &str, want: f64| {
        op.check(value(&text, series) == Some(want), &format!("{series} should be {want}:\n{text}"));
    };
    check(r#"operator_hook_retries_total{hook="added"}"#, 2.0);
    check(r#"operator_events_total{type="ADDED"}"#, 4.0);
    check(r#"operator_hook_duration_seconds_count{hook="added"}"#, 6.0);
    check("operator_objects", 4.0);
    check("operator_queue_depth", 0.0);
    check(&format!(r#"operator_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION")), 1.0);
    // Two timeouts of 1 s each are in the histogram's sum.
    let sum = value(&text, r#"operator_hook_duration_seconds_sum{hook="added"}"#).unwrap_or(0.0);
    op.check(sum >= 2.0, &format!("duration sum {sum}"));
    let last = value(&text, "operator_last_event_timestamp_seconds").unwrap_or(0.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    op.check(now - last < 120.0 && last <= now + 1.0, &format!("last event at {last}, now {now}"));
}

#[test]
fn bad_requests_get_404_or_405_and_the_endpoint_keeps_serving() {
    let _serial = APISERVER.lock().unwrap_or_else(|e| e.into_inner());
    let ns = cluster().namespace("metrics-bad");
    let rec = Recorder::new(&[]);
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name, "--listen", "127.0.0.1:0"]);
    let addr = listen_addr(&op);
    op.check(get(&addr, "/nothing").0 == 404, "unknown path");
    op.check(request(&addr, "POST", "/metrics").0 == 405, "POST");
    op.check(request(&addr, "DELETE", "/healthz").0 == 405, "DELETE");
    let mut raw = TcpStream::connect(&addr).unwrap();
    raw.write_all(b"\x16\x03\x01 this is not HTTP\r\n\r\n").unwrap();
    let mut junk = Vec::new();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = raw.read_to_end(&mut junk);
    op.check(get(&addr, "/metrics").0 == 200, "still serving after garbage");
}

#[test]
fn readyz_waits_for_the_initial_list_and_healthz_fails_while_the_api_server_is_down() {
    let _serial = APISERVER.lock().unwrap_or_else(|e| e.into_inner());
    let c = cluster();
    let ns = c.namespace("health");
    let rec = Recorder::new(&[]);

    let outage = std::thread::spawn(|| cluster().restart_apiserver(secs(8)));
    while c.kubectl(&["get", "--raw", "/readyz"]).status.success() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let args: Vec<String> = ["-o", "cm", "-n", &ns.name, "--listen", "127.0.0.1:0", "--unhealthy-after", "2s"]
        .iter()
        .map(|s| s.to_string())
        .chain(rec.args())
        .collect();
    let op = Operator::start(&args);
    let addr = listen_addr(&op);
    op.check(get(&addr, "/readyz").0 == 503, "not ready before the initial list");
    outage.join().unwrap();
    op.wait_until("/readyz 200 after the initial list", secs(60), || get(&addr, "/readyz").0 == 200);
    op.check(op.log_text().contains("listed "), "ready means listed");
    op.check(get(&addr, "/healthz").0 == 200, "healthy once watching");

    let outage = std::thread::spawn(|| cluster().restart_apiserver(secs(10)));
    let mut body = String::new();
    op.wait_until("/healthz 503 during the outage", secs(15), || {
        let (status, b) = get(&addr, "/healthz");
        body = b;
        status == 503
    });
    op.check(body.contains("watch"), &format!("the reason names the watch: {body}"));
    outage.join().unwrap();
    c.apply(&ns.name, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after"}}"#);
    op.wait_until("/healthz 200 after the outage", secs(60), || get(&addr, "/healthz").0 == 200);
    let restarts = value(&get(&addr, "/metrics").1, "operator_watch_restarts_total").unwrap_or(0.0);
    op.check(restarts >= 1.0, &format!("watch restarts {restarts}"));
}
