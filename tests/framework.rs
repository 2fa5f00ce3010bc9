//! Framework features on a real control plane (issue 12): handler directories, EVENT_OLD_FILE,
//! --ignore-status-changes, field hooks, startup and shutdown hooks, filters.

mod support;

use support::{Operator, Recorder, cluster, secs};

fn configmap(name: &str, annotations: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\ndata: {{{data}}}\n"
    )
}

/// A hooks directory with these subdirectories made.
fn recorder_with_dirs(dirs: &[&str]) -> Recorder {
    let rec = Recorder::new(&[]);
    for d in dirs {
        std::fs::create_dir_all(rec.hooks.path().join(d)).unwrap();
    }
    rec
}

/// Appends `<its name>` to `$RECORD_DIR/<object>.order` and prints a line, then `tail`.
fn appender(name: &str, tail: &str) -> String {
    format!(
        "#!/usr/bin/env bash\nset -euo pipefail\necho '{name}' >> \"$RECORD_DIR/$EVENT_OBJECT_METADATA_NAME.order\"\necho 'hello from {name}'\n{tail}\n"
    )
}

fn order(rec: &Recorder, object: &str) -> Vec<String> {
    let text = std::fs::read_to_string(rec.out.path().join(format!("{object}.order"))).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

#[test]
fn handlers_run_in_order_each_retried_alone_and_exit_100_stops_the_rest() {
    let c = cluster();
    let ns = c.namespace("handlers");
    let rec = recorder_with_dirs(&["added.d"]);
    rec.hook("added", &appender("added", ""));
    rec.hook("added.d/10-first", &appender("10-first", ""));
    // Fails twice per object, then succeeds.
    let flaky = "n=$(( $(cat \"$RECORD_DIR/$EVENT_OBJECT_METADATA_NAME.count\" 2>/dev/null || echo 0) + 1 ))\n\
                 echo \"$n\" > \"$RECORD_DIR/$EVENT_OBJECT_METADATA_NAME.count\"\n(( n >= 3 ))";
    rec.hook("added.d/20-flaky", &appender("20-flaky", flaky));
    rec.hook("added.d/25-halt", &appender("25-halt", "[[ $EVENT_OBJECT_METADATA_NAME != halt ]] || exit 100"));
    rec.hook("added.d/30-last", &appender("30-last", ""));
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name, "--backoff-min", "100ms"]);
    c.apply(&ns.name, &configmap("go", "", ""));
    c.apply(&ns.name, &configmap("halt", "", ""));
    op.wait_until("every handler of go", secs(30), || order(&rec, "go").last().map(String::as_str) == Some("30-last"));
    let want = ["added", "10-first", "20-flaky", "20-flaky", "20-flaky", "25-halt", "30-last"];
    op.check(order(&rec, "go") == want, &format!("order of go: {:?}", order(&rec, "go")));
    op.wait_for_log("remaining handler(s) of ADDED are not run", secs(30));
    std::thread::sleep(secs(1));
    let halted = order(&rec, "halt");
    op.check(halted.last().map(String::as_str) == Some("25-halt"), &format!("order of halt: {halted:?}"));
    op.wait_for_log(&format!("[added.d/10-first {}/go] hello from 10-first", ns.name), secs(5));
}

#[test]
fn event_old_file_holds_the_object_as_last_delivered() {
    let c = cluster();
    let ns = c.namespace("oldfile");
    let rec = Recorder::new(&[]);
    let keep = "#!/usr/bin/env bash\nset -euo pipefail\nn=$(date +%s%N)\n\
                if [[ -v EVENT_OLD_FILE ]]; then cp \"$EVENT_OLD_FILE\" \"$RECORD_DIR/$n-$EVENT_TYPE.old\"; \
                else touch \"$RECORD_DIR/$n-$EVENT_TYPE.none\"; fi\n";
    for h in ["added", "modified", "deleted"] {
        rec.hook(h, keep);
    }
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name, "--field-selector", "metadata.name=o"]);
    c.apply(&ns.name, &configmap("o", "", "a: '1'"));
    c.apply(&ns.name, &configmap("o", "", "a: '2'"));
    c.ok(&["delete", "cm", "o", "-n", &ns.name]);
    let files = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(rec.out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    op.wait_until("three runs", secs(30), || files().len() == 3);
    let f = files();
    let suffixes: Vec<&str> = f.iter().map(|n| n.split_once('-').unwrap().1).collect();
    op.check(suffixes == ["ADDED.none", "MODIFIED.old", "DELETED.old"], &format!("files: {f:?}"));
    let data = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(rec.out.path().join(name)).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["data"]["a"].clone()
    };
    op.check(data(&f[1]) == "1", "MODIFIED's old object is the ADDED one");
    op.check(data(&f[2]) == "2", "DELETED's old object is the MODIFIED one");
}

const WIDGET_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.framework.example.com
spec:
  group: framework.example.com
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

#[test]
fn ignore_status_changes_keeps_a_hook_that_writes_status_from_waking_itself() {
    let c = cluster();
    let out = c.kubectl_stdin(&["apply", "-f", "-"], WIDGET_CRD);
    assert!(out.status.success(), "CRD: {}", String::from_utf8_lossy(&out.stderr));
    c.ok(&["wait", "--for=condition=Established", "crd/widgets.framework.example.com", "--timeout=60s"]);
    let ns = c.namespace("status");
    let rec = Recorder::new(&[]);
    let writer = "#!/usr/bin/env bash\nset -euo pipefail\n\
                  env -0 > \"$RECORD_DIR/$(date +%s%N).env\"\n\
                  kubectl patch widget -n \"$EVENT_OBJECT_METADATA_NAMESPACE\" \"$EVENT_OBJECT_METADATA_NAME\" \
                  --subresource=status --type=merge -p \"{\\\"status\\\":{\\\"seen\\\":\\\"$(date +%s%N)\\\"}}\"\n";
    rec.hook("added", writer);
    rec.hook("modified", writer);
    let args = ["-o", "widgets", "-n", &ns.name, "--ignore-status-changes", "-L", "debug"];
    let op = Operator::watching(&rec, &args);
    let widget = |size: u32| {
        format!("apiVersion: framework.example.com/v1\nkind: Widget\nmetadata: {{name: w}}\nspec: {{size: {size}}}\n")
    };
    c.apply(&ns.name, &widget(1));
    op.wait_for_log("skipped (--ignore-status-changes)", secs(30));
    c.apply(&ns.name, &widget(2));
    op.wait_until("the spec change", secs(30), || rec.types_of("w") == ["ADDED", "MODIFIED"]);
    std::thread::sleep(secs(3));
    op.check(rec.types_of("w") == ["ADDED", "MODIFIED"], &format!("runs: {:?}", rec.types_of("w")));
    let seen = c.ok(&["get", "widget", "w", "-n", &ns.name, "-o", "jsonpath={.status.seen}"]);
    op.check(!seen.is_empty(), "the hook wrote status");
}

#[test]
fn field_hooks_fire_once_per_change_of_their_own_field() {
    let c = cluster();
    let ns = c.namespace("fields");
    let rec = recorder_with_dirs(&["field"]);
    let record = "#!/usr/bin/env bash\nset -euo pipefail\nenv -0 > \"$RECORD_DIR/$(date +%s%N).env\"\n";
    rec.hook("field/data.a", record);
    rec.hook("field/metadata.annotations[example.com~1tier]", record);
    rec.hook("field/data..bad", record);
    let op = Operator::watching(&rec, &["-o", "cm", "-n", &ns.name]);
    let fields = || -> Vec<(String, String, String)> {
        let runs = rec.runs_of("f");
        runs.iter()
            .map(|r| (r["EVENT_FIELD"].clone(), r["EVENT_FIELD_OLD"].clone(), r["EVENT_FIELD_NEW"].clone()))
            .collect()
    };
    let t = |f: &str, o: &str, n: &str| (f.to_string(), o.to_string(), n.to_string());
    c.apply(&ns.name, &configmap("f", "example.com/tier: web", "a: '1'"));
    op.wait_until("both field hooks on ADDED", secs(30), || fields().len() == 2);
    op.check(
        fields() == [t("data.a", "null", "\"1\""), t("metadata.annotations[example.com~1tier]", "null", "\"web\"")],
        &format!("{:?}", fields()),
    );
    c.apply(&ns.name, &configmap("f", "example.com/tier: web", "a: '1', b: '2'"));
    c.apply(&ns.name, &configmap("f", "example.com/tier: web", "a: '3', b: '2'"));
    op.wait_until("data.a's change", secs(30), || fields().len() == 3);
    c.apply(&ns.name, &configmap("f", "example.com/tier: db", "a: '3', b: '2'"));
    op.wait_until("the annotation's change", secs(30), || fields().len() == 4);
    std::thread::sleep(secs(2));
    op.check(fields().len() == 4, &format!("a hook fired for another field: {:?}", fields()));
    op.check(fields()[2] == t("data.a", "\"1\"", "\"3\""), &format!("{:?}", fields()[2]));
    op.check(fields()[3] == t("metadata.annotations[example.com~1tier]", "\"web\"", "\"db\""), "annotation change");
    op.check(op.log_text().contains("'data..bad' is not a field path"), "the bad field hook is named");
}

#[test]
fn a_startup_hook_that_keeps_failing_stops_the_runner_with_status_1() {
    let c = cluster();
    let ns = c.namespace("startup");
    let rec = Recorder::new(&["added"]);
    rec.hook("startup", "#!/bin/sh\necho not ready >&2\nexit 3\n");
    let mut op = Operator::start(&[
        "-o",
        "cm",
        "-n",
        &ns.name,
        "-h",
        &rec.hooks.path().display().to_string(),
        "--retries",
        "1",
        "--backoff-min",
        "100ms",
    ]);
    let status = op.wait_exit(secs(30));
    op.check(status.code() == Some(1), &format!("exit status {status:?}"));
    let log = op.log_text();
    op.check(log.contains("the startup hook failed") && log.contains("exited with status 3"), "names the hook");
    op.check(log.contains("retry 1 of 1"), "retried first");
}

#[test]
fn shutdown_runs_once_after_the_last_event_hook_on_sigterm() {
    let c = cluster();
    let ns = c.namespace("shutdown");
    let rec = Recorder::new(&[]);
    let line = |what: &str| format!("#!/usr/bin/env bash\nset -euo pipefail\n{what}\n");
    rec.hook("startup", &line("echo \"startup ${EVENT_TYPE:-none}\" >> \"$RECORD_DIR/order\""));
    rec.hook("added", &line("touch \"$RECORD_DIR/running\"; sleep 1; echo added >> \"$RECORD_DIR/order\""));
    rec.hook(
        "shutdown",
        &line("echo \"shutdown ${EVENT_TYPE:-none} ${KUBECONFIG:+kubeconfig}\" >> \"$RECORD_DIR/order\""),
    );
    let args = ["-o", "cm", "-n", &ns.name, "--grace-period", "5s", "--field-selector", "metadata.name=s"];
    let mut op = Operator::watching(&rec, &args);
    c.apply(&ns.name, &configmap("s", "", ""));
    op.wait_until("the added hook running", secs(30), || rec.out.path().join("running").exists());
    let status = op.stop();
    op.check(status.success(), &format!("exit status {status:?}"));
    let lines = std::fs::read_to_string(rec.out.path().join("order")).unwrap_or_default();
    op.check(
        lines == "startup none\nadded\nshutdown none \n" || lines == "startup none\nadded\nshutdown none kubeconfig\n",
        &format!("order: {lines:?}"),
    );
}

#[test]
fn filters_add_objects_that_start_matching_and_delete_those_that_stop() {
    let c = cluster();
    let ns = c.namespace("filters");
    let rec = Recorder::new(&["added", "modified", "deleted"]);
    let args = [
        "-o",
        "cm",
        "-n",
        &ns.name,
        "--annotation-selector",
        "example.com/managed=yes",
        "--filter",
        r#".data.mode != "off""#,
    ];
    let op = Operator::watching(&rec, &args);
    c.apply(&ns.name, &configmap("in", "example.com/managed: 'yes'", "mode: 'on'"));
    c.apply(&ns.name, &configmap("out", "", "mode: 'on'"));
    op.wait_until("ADDED for the matching object", secs(30), || rec.types_of("in") == ["ADDED"]);
    c.apply(&ns.name, &configmap("out", "example.com/managed: 'yes'", "mode: 'on'"));
    op.wait_until("ADDED once it matches", secs(30), || rec.types_of("out") == ["ADDED"]);
    c.apply(&ns.name, &configmap("in", "example.com/managed: 'yes'", "mode: 'off'"));
    op.wait_until("DELETED once the filter fails", secs(30), || rec.types_of("in") == ["ADDED", "DELETED"]);
    c.apply(&ns.name, &configmap("in", "example.com/managed: 'yes'", "mode: 'off', x: '1'"));
    c.apply(&ns.name, &configmap("in", "example.com/managed: 'yes'", "mode: 'on'"));
    op.wait_until("ADDED again", secs(30), || rec.types_of("in") == ["ADDED", "DELETED", "ADDED"]);
    c.ok(&["annotate", "cm", "out", "-n", &ns.name, "example.com/managed-"]);
    op.wait_until("DELETED when the annotation goes", secs(30), || rec.types_of("out") == ["ADDED", "DELETED"]);
    c.ok(&["get", "cm", "out", "-n", &ns.name]);
}

#[test]
fn an_invalid_filter_is_a_usage_error_naming_its_position() {
    let rec = Recorder::new(&[]);
    let mut op =
        Operator::start(&["-o", "cm", "-h", &rec.hooks.path().display().to_string(), "--filter", ".spec | (.a =="]);
    let status = op.wait_exit(secs(20));
    op.check(status.code() == Some(2), &format!("exit status {status:?}"));
    op.check(
        op.report().contains("invalid value '.spec | (.a ==' for '--filter': at position 15"),
        "names the position",
    );
}
