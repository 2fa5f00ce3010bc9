//! The runner against a real control plane: which events reach which hooks, with which variables.

mod support;

use support::{Operator, Recorder, cluster, secs};

fn configmap(name: &str, labels: &str, data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\ndata: {{{data}}}\n")
}

#[test]
fn existing_objects_are_added_then_changes_and_deletes_follow() {
    let c = cluster();
    let ns = c.namespace("lifecycle");
    c.apply(&ns.name, &configmap("before", "", "a: '1'"));
    let rec = Recorder::new(&["added", "modified", "deleted"]);
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name]);
    op.wait_until("ADDED for the existing object", secs(20), || rec.types_of("before") == ["ADDED"]);
    c.apply(&ns.name, &configmap("before", "", "a: '2'"));
    c.ok(&["delete", "configmap", "before", "-n", &ns.name]);
    op.wait_until("MODIFIED then DELETED", secs(20), || rec.types_of("before") == ["ADDED", "MODIFIED", "DELETED"]);
    let runs = rec.runs_of("before");
    let modified = runs.iter().find(|r| r["EVENT_TYPE"] == "MODIFIED").unwrap();
    op.check(modified.get("EVENT_OBJECT_DATA_A").map(String::as_str) == Some("2"), "MODIFIED carries the new data");
    op.check(modified["EVENT_OBJECT_KIND"] == "ConfigMap", "kind is set");
}

#[test]
fn changes_only_skips_existing_objects() {
    let c = cluster();
    let ns = c.namespace("changes");
    c.apply(&ns.name, &configmap("old", "", ""));
    let rec = Recorder::new(&["added", "modified"]);
    let op = Operator::watching(&rec, &["-o", "configmaps", "-n", &ns.name, "-c"]);
    c.apply(&ns.name, &configmap("new", "", ""));
    op.wait_until("ADDED for the new object", secs(20), || rec.types_of("new") == ["ADDED"]);
    op.check(rec.types_of("old").is_empty(), "the existing object gave no event with -c");
}

#[test]
fn namespace_limits_and_all_namespaces_widens() {
    let c = cluster();
    let (ns1, ns2) = (c.namespace("scope-a"), c.namespace("scope-b"));
    let rec_one = Recorder::new(&["added"]);
    let rec_all = Recorder::new(&["added"]);
    let one = Operator::watching(&rec_one, &["-o", "configmap", "-n", &ns1.name]);
    let all = Operator::watching(&rec_all, &["-o", "ConfigMap", "-A"]);
    c.apply(&ns1.name, &configmap("in-a", "", ""));
    c.apply(&ns2.name, &configmap("in-b", "", ""));
    all.wait_until("both objects with -A", secs(20), || {
        rec_all.types_of("in-a").len() == 1 && rec_all.types_of("in-b").len() == 1
    });
    one.wait_until("the object of its namespace", secs(20), || rec_one.types_of("in-a").len() == 1);
    one.check(rec_one.types_of("in-b").is_empty(), "-n saw another namespace");
}

#[test]
fn label_and_field_selectors_filter() {
    let c = cluster();
    let ns = c.namespace("selectors");
    let rec_l = Recorder::new(&["added"]);
    let rec_f = Recorder::new(&["added"]);
    let by_label =
        Operator::watching(&rec_l, &["-o", "cm", "-n", &ns.name, "--label-selector", "tier in (web,api),!canary"]);
    let by_field =
        Operator::watching(&rec_f, &["-o", "cm", "-n", &ns.name, "--field-selector", "metadata.name=picked"]);
    c.apply(&ns.name, &configmap("web", "tier: web", ""));
    c.apply(&ns.name, &configmap("canary", "tier: web, canary: 'yes'", ""));
    c.apply(&ns.name, &configmap("db", "tier: db", ""));
    c.apply(&ns.name, &configmap("picked", "", ""));
    by_label.wait_until("the matching object", secs(20), || rec_l.types_of("web").len() == 1);
    by_field.wait_until("the matching object", secs(20), || rec_f.types_of("picked").len() == 1);
    std::thread::sleep(secs(1));
    let seen = |r: &Recorder| r.runs().into_iter().map(|e| e["EVENT_OBJECT_METADATA_NAME"].clone()).collect::<Vec<_>>();
    by_label.check(seen(&rec_l) == ["web"], &format!("label selector let through {:?}", seen(&rec_l)));
    by_field.check(seen(&rec_f) == ["picked"], &format!("field selector let through {:?}", seen(&rec_f)));
}

#[test]
fn a_bad_label_selector_is_refused_at_start() {
    let c = cluster();
    let ns = c.namespace("badsel");
    let rec = Recorder::new(&["added"]);
    let mut all =
        vec!["-o".to_string(), "cm".into(), "-n".into(), ns.name.clone(), "--label-selector".into(), "a in (".into()];
    all.extend(rec.args());
    let mut op = Operator::start(&all);
    let status = op.wait_exit(secs(30));
    op.check(!status.success(), "a bad selector must stop the runner");
    op.check(op.log_text().contains("refused to list"), "the log names the refusal");
}

#[test]
fn filter_spec_and_filter_status_drop_those_variables() {
    let c = cluster();
    let ns = c.namespace("filters");
    let rec = Recorder::new(&["added"]);
    let op = Operator::watching(&rec, &["-o", "services", "-n", &ns.name, "-s", "-S"]);
    c.ok(&["create", "service", "clusterip", "svc", "--tcp=80:80", "-n", &ns.name]);
    op.wait_until("ADDED", secs(20), || rec.types_of("svc").len() == 1);
    let run = &rec.runs_of("svc")[0];
    op.check(!run.keys().any(|k| k.starts_with("EVENT_OBJECT_SPEC")), "spec variables with -s");
    op.check(!run.keys().any(|k| k.starts_with("EVENT_OBJECT_STATUS")), "status variables with -S");
    op.check(run.contains_key("EVENT_OBJECT_METADATA_UID"), "metadata kept");
}

#[test]
fn hook_env_pairs_and_runner_variables_reach_the_hook() {
    let c = cluster();
    let ns = c.namespace("hookenv");
    let rec = Recorder::new(&["added"]);
    let args = ["-o", "cm", "-n", &ns.name, "-E", "ALPHA=1,BETA=two words,GAMMA=", "-L", "warning"];
    // At WARNING the runner logs no "listed" line to wait for: the list delivers the object anyway.
    let op = Operator::start(&[args.map(String::from).to_vec(), rec.args()].concat());
    c.apply(&ns.name, &configmap("x", "", ""));
    op.wait_until("ADDED", secs(20), || rec.types_of("x").len() == 1);
    let run = &rec.runs_of("x")[0];
    op.check(run.get("ALPHA").map(String::as_str) == Some("1"), "ALPHA");
    op.check(run.get("BETA").map(String::as_str) == Some("two words"), "BETA");
    op.check(run.get("GAMMA").map(String::as_str) == Some(""), "GAMMA");
    op.check(run.get("LOG_LEVEL").map(String::as_str) == Some("2"), "LOG_LEVEL for WARNING");
    op.check(run.get("LOG_FILE").map(String::as_str) == Some(&*op.log.display().to_string()), "LOG_FILE");
    let file = run.get("EVENT_FILE").cloned().unwrap_or_default();
    op.check(file.ends_with(".json"), "EVENT_FILE is set");
    op.wait_until("EVENT_FILE removed after the hook", secs(5), || !std::path::Path::new(&file).exists());
}

#[test]
fn event_file_holds_the_whole_event() {
    let c = cluster();
    let ns = c.namespace("eventfile");
    let rec = Recorder::new(&[]);
    rec.hook(
        "added",
        "#!/usr/bin/env bash\nset -euo pipefail\ncp \"$EVENT_FILE\" \"$RECORD_DIR/$EVENT_OBJECT_METADATA_NAME.json\"\n",
    );
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name]);
    c.apply(&ns.name, &configmap("f", "app.kubernetes.io/name: web, app-kubernetes-io/name: other", ""));
    let path = rec.out.path().join("f.json");
    op.wait_until("the event file copy", secs(20), || path.exists());
    let event: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    op.check(event["type"] == "ADDED", "type");
    let labels = &event["object"]["metadata"]["labels"];
    op.check(
        labels["app.kubernetes.io/name"] == "web" && labels["app-kubernetes-io/name"] == "other",
        "both colliding labels readable",
    );
}

#[test]
fn values_arrive_byte_for_byte_and_nothing_runs() {
    let c = cluster();
    let ns = c.namespace("values");
    let marker = tempfile::tempdir().unwrap();
    let m = marker.path().join("marker");
    let nasty = [
        format!("$(touch {})", m.display()),
        format!("`touch {}`", m.display()),
        "it's \"quoted\"".to_string(),
        "trailing\\".to_string(),
        "  two  spaces  ".to_string(),
        "*".to_string(),
        "line1\nline2".to_string(),
    ];
    let rec = Recorder::new(&["added"]);
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name]);
    let data: serde_json::Map<String, serde_json::Value> =
        nasty.iter().enumerate().map(|(i, v)| (format!("v{i}"), serde_json::Value::String(v.clone()))).collect();
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nasty"}, "data": data});
    c.apply(&ns.name, &cm.to_string());
    op.wait_until("ADDED", secs(20), || rec.types_of("nasty").len() == 1);
    let run = &rec.runs_of("nasty")[0];
    for (i, v) in nasty.iter().enumerate() {
        let got = run.get(&format!("EVENT_OBJECT_DATA_V{i}"));
        op.check(got == Some(v), &format!("value {i}: want {v:?}, got {got:?}"));
    }
    op.check(!m.exists(), "a value was run as a command");
}

#[test]
fn custom_resources_resolve_by_short_name() {
    let c = cluster();
    let crd = r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
      "metadata":{"name":"widgets.test.example.com"},
      "spec":{"group":"test.example.com","scope":"Namespaced",
        "names":{"plural":"widgets","singular":"widget","kind":"Widget","shortNames":["wdg"]},
        "versions":[{"name":"v1","served":true,"storage":true,
          "schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}"#;
    c.kubectl_stdin(&["apply", "-f", "-"], crd);
    c.ok(&["wait", "--for=condition=Established", "crd/widgets.test.example.com", "--timeout=30s"]);
    let ns = c.namespace("crd");
    let rec = Recorder::new(&["added"]);
    let op = Operator::watching(&rec, &["-o", "wdg", "-n", &ns.name]);
    c.apply(
        &ns.name,
        r#"{"apiVersion":"test.example.com/v1","kind":"Widget","metadata":{"name":"w1"},"spec":{"size":3}}"#,
    );
    op.wait_until("ADDED for the widget", secs(20), || rec.types_of("w1").len() == 1);
    let run = &rec.runs_of("w1")[0];
    op.check(run.get("EVENT_OBJECT_SPEC_SIZE").map(String::as_str) == Some("3"), "spec.size");
    op.check(run.get("EVENT_OBJECT_KIND").map(String::as_str) == Some("Widget"), "kind");
}

#[test]
fn hook_output_goes_to_the_log_tagged_with_hook_and_object() {
    let c = cluster();
    let ns = c.namespace("output");
    let rec = Recorder::new(&[]);
    rec.hook("added", "#!/usr/bin/env bash\necho \"hello from $EVENT_OBJECT_METADATA_NAME\"\necho oops >&2\n");
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name]);
    c.apply(&ns.name, &configmap("talker", "", ""));
    let key = format!("[added {}/talker] hello from talker", ns.name);
    op.wait_for_log(&key, secs(20));
    op.wait_for_log(&format!("[added {}/talker] oops", ns.name), secs(5));
}

#[test]
fn missing_and_non_executable_hooks_are_reported_and_the_runner_goes_on() {
    let c = cluster();
    let ns = c.namespace("badhooks");
    let rec = Recorder::new(&["modified"]);
    let added = rec.hook("added", "#!/bin/sh\n");
    std::fs::set_permissions(&added, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name, "-L", "debug"]);
    c.apply(&ns.name, &configmap("h", "", "a: '1'"));
    op.wait_for_log("chmod +x", secs(20));
    c.ok(&["delete", "cm", "h", "-n", &ns.name]);
    op.wait_for_log("No event handler exists for event DELETED. Ignoring.", secs(20));
    c.apply(&ns.name, &configmap("h2", "", ""));
    c.apply(&ns.name, &configmap("h2", "", "a: '2'"));
    op.wait_until("the modified hook still runs", secs(20), || rec.types_of("h2") == ["MODIFIED"]);
}

#[test]
fn hook_failure_is_an_error_naming_hook_object_and_status() {
    let c = cluster();
    let ns = c.namespace("failing");
    let rec = Recorder::new(&[]);
    rec.hook("added", "#!/bin/sh\nexit 100\n");
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name]);
    c.apply(&ns.name, &configmap("f", "", ""));
    op.wait_for_log(&format!("ERROR hook added for {}/f exited with status 100", ns.name), secs(20));
}

#[test]
fn unknown_type_fails_within_seconds() {
    let rec = Recorder::new(&[]);
    let mut op = Operator::start(&[vec!["-o".to_string(), "frobnicators".into()], rec.args()].concat());
    let start = std::time::Instant::now();
    let status = op.wait_exit(secs(20));
    op.check(status.code() == Some(1), "exit status 1");
    op.check(start.elapsed() < secs(10), "within seconds");
    let stderr = op.report();
    op.check(stderr.contains("the server doesn't have a resource type \"frobnicators\""), "message");
}

#[test]
fn sigterm_stops_the_runner_with_status_0() {
    let c = cluster();
    let ns = c.namespace("sigterm");
    let rec = Recorder::new(&["added"]);
    let mut op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name]);
    let status = op.stop();
    op.check(status.success(), "exit 0 after SIGTERM");
}

#[test]
fn the_echo_hooks_log_every_pod_event() {
    let c = cluster();
    let ns = c.namespace("echo");
    let hooks = support::repo().join("hooks/echo").display().to_string();
    let op = Operator::start(&["-o", "pods", "-n", &ns.name, "-h", &hooks]);
    op.wait_for_log("listed ", secs(30));
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},
      "spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"busybox","command":["true"]}]}}"#;
    c.apply(&ns.name, pod);
    op.wait_for_log(&format!("ADDED: Pod {}/web", ns.name), secs(20));
    op.wait_for_log(&format!("MODIFIED: Pod {}/web", ns.name), secs(30));
    c.ok(&["delete", "pod", "web", "-n", &ns.name, "--grace-period=0", "--force"]);
    op.wait_for_log(&format!("DELETED: Pod {}/web", ns.name), secs(30));
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let c = cluster();
    let ns = c.namespace("jsonlog");
    let rec = Recorder::new(&[]);
    rec.hook("added", "#!/bin/sh\necho \"said $EVENT_OBJECT_METADATA_NAME\"\n");
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name, "--log-format", "json"]);
    c.apply(&ns.name, &configmap("j", "", ""));
    op.wait_for_log("said j", secs(20));
    for line in op.log_text().lines() {
        let v: Result<serde_json::Value, _> = serde_json::from_str(line);
        op.check(
            v.as_ref().is_ok_and(|v| v["level"].is_string() && v["message"].is_string()),
            &format!("not a JSON log line: {line}"),
        );
    }
}
