//! `operator event` and `operator owner-ref` on the local control plane: Events created
//! and deduplicated, objects found by kind, children garbage-collected with their owner.

mod support;

use serde_json::Value;
use std::process::{Command, Output};
use support::{Operator, Recorder, cluster, repo, secs};

/// Runs the binary like a hook would, with the cluster's credentials and these variables.
fn operator(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(support::OPERATOR)
        .args(args)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env_remove("EVENT_FILE")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The Events in namespace `ns` about the object `name` with this reason.
fn events(ns: &str, name: &str, reason: &str) -> Vec<Value> {
    let selector = format!("reason={reason},involvedObject.name={name}");
    let out = cluster().ok(&["get", "events", "-n", ns, "--field-selector", &selector, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().unwrap().clone()
}

fn uid(ns: &str, what: &str) -> String {
    cluster().ok(&["get", what, "-n", ns, "-o", "jsonpath={.metadata.uid}"])
}

const HOOK_POSTING: &str = r#"#!/usr/bin/env bash
set -euo pipefail
source "$LIB/events.sh"
event_warning Overheated "too hot: $EVENT_OBJECT_METADATA_NAME"
event_warning Overheated "too hot: $EVENT_OBJECT_METADATA_NAME"
event_normal Cooled "back to normal"
touch "$RECORD_DIR/done-$EVENT_OBJECT_METADATA_NAME"
"#;

#[test]
fn events_posted_from_a_hook_are_deduplicated_and_point_at_its_object() {
    let ns = cluster().namespace("ev-hook");
    let rec = Recorder::new(&[]);
    rec.hook("added", HOOK_POSTING);
    let lib = repo().join("hooks/lib").display().to_string();
    let op = Operator::watching(&rec, &["-o", "configmaps", "-n", &ns.name, "-E", &format!("LIB={lib}")]);
    cluster().ok(&["create", "configmap", "hot", "-n", &ns.name]);
    op.wait_until("the hook to finish", secs(60), || rec.out.path().join("done-hot").exists());

    let warnings = events(&ns.name, "hot", "Overheated");
    op.check(warnings.len() == 1, &format!("one Overheated Event, got {warnings:#?}"));
    let w = &warnings[0];
    op.check(w["count"] == 2, &format!("the repeat counts on the first Event: {w:#}"));
    op.check(w["type"] == "Warning" && w["message"] == "too hot: hot", &format!("{w:#}"));
    op.check(w["involvedObject"]["kind"] == "ConfigMap", &format!("{w:#}"));
    op.check(w["involvedObject"]["uid"] == uid(&ns.name, "configmap/hot").as_str(), &format!("{w:#}"));
    op.check(w["firstTimestamp"] != Value::Null && w["lastTimestamp"] != Value::Null, &format!("{w:#}"));
    let normal = events(&ns.name, "hot", "Cooled");
    op.check(normal.len() == 1 && normal[0]["count"] == 1 && normal[0]["type"] == "Normal", &format!("{normal:#?}"));
}

#[test]
fn concurrent_repeats_lose_no_count() {
    let ns = cluster().namespace("ev-race");
    cluster().ok(&["create", "configmap", "busy", "-n", &ns.name]);
    let object = format!("cm/{}/busy", ns.name);
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(support::OPERATOR)
                .args(["event", "--reason", "Ping", "--message", "same", "--object", &object])
                .env("KUBECONFIG", &cluster().kubeconfig)
                .env_remove("EVENT_FILE")
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let pings = events(&ns.name, "busy", "Ping");
    assert_eq!(pings.len(), 1, "{pings:#?}");
    assert_eq!(pings[0]["count"], 4, "{:#}", pings[0]);
}

#[test]
fn object_names_its_target_by_kind_as_o_does() {
    let ns = cluster().namespace("ev-object");
    cluster().ok(&["create", "configmap", "target", "-n", &ns.name]);
    let out = operator(
        &[
            "event",
            "--reason",
            "Checked",
            "--message",
            "by hand",
            "--type",
            "Warning",
            "--component",
            "tester",
            "--object",
            &format!("ConfigMap/{}/target", ns.name),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let found = events(&ns.name, "target", "Checked");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["involvedObject"]["uid"], uid(&ns.name, "configmap/target").as_str());
    assert_eq!(found[0]["involvedObject"]["apiVersion"], "v1");
    assert_eq!(found[0]["source"]["component"], "tester");
    assert_eq!(found[0]["type"], "Warning");

    let node = operator(&["event", "--reason", "Seen", "--message", "m", "--object", "nodes/kind-worker"], &[]);
    assert!(node.status.success(), "{}", text(&node));
    let on_node = events("default", "kind-worker", "Seen");
    assert!(on_node.iter().any(|e| e["involvedObject"]["name"] == "kind-worker"), "{on_node:#?}");
}

#[test]
fn a_missing_object_or_a_wrong_scope_is_an_error_naming_it() {
    let ns = cluster().namespace("ev-missing");
    let missing =
        operator(&["event", "--reason", "R", "--message", "m", "--object", &format!("pods/{}/ghost", ns.name)], &[]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("pods") && err.contains("ghost") && err.contains("not found"), "{err}");
    assert!(!err.contains("ErrorResponse"), "no debug dump: {err}");

    let scope = operator(&["event", "--reason", "R", "--message", "m", "--object", "configmaps/x"], &[]);
    assert_eq!(scope.status.code(), Some(2), "{}", text(&scope));
    assert!(String::from_utf8_lossy(&scope.stderr).contains("configmaps is namespaced"), "{}", text(&scope));

    let kind = operator(&["event", "--reason", "R", "--message", "m", "--object", "frobs/a/b"], &[]);
    assert_eq!(kind.status.code(), Some(1), "{}", text(&kind));
    assert!(String::from_utf8_lossy(&kind.stderr).contains("\"frobs\""), "{}", text(&kind));
}

#[test]
fn outside_a_hook_both_subcommands_are_usage_errors() {
    let event = operator(&["event", "--reason", "R", "--message", "m"], &[]);
    assert_eq!(event.status.code(), Some(2), "{}", text(&event));
    assert!(String::from_utf8_lossy(&event.stderr).contains("--object KIND/NAMESPACE/NAME"), "{}", text(&event));
    let owner = operator(&["owner-ref"], &[]);
    assert_eq!(owner.status.code(), Some(2), "{}", text(&owner));
    assert!(String::from_utf8_lossy(&owner.stderr).contains("EVENT_FILE"), "{}", text(&owner));
}

#[test]
fn owner_ref_prints_the_reference_to_the_event_files_object() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event.json");
    std::fs::write(
        &file,
        r#"{"type":"ADDED","object":{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"n","uid":"u-7"}}}"#,
    )
    .unwrap();
    let out = operator(&["owner-ref"], &[("EVENT_FILE", file.to_str().unwrap())]);
    assert!(out.status.success(), "{}", text(&out));
    let refs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        refs,
        serde_json::json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u-7",
                            "controller": true, "blockOwnerDeletion": true}])
    );
}

const HOOK_ADOPTING: &str = r#"#!/usr/bin/env bash
set -euo pipefail
source "$LIB/children.sh"
# YAML on purpose (adopt converts it); no values pasted into it.
adopt <<'YAML' | kubectl apply -f -
apiVersion: v1
kind: ConfigMap
metadata:
  name: child
data:
  from: parent
YAML
"#;

#[test]
fn a_child_made_with_adopt_is_garbage_collected_with_its_parent() {
    let ns = cluster().namespace("ev-child");
    let rec = Recorder::new(&[]);
    rec.hook("added", HOOK_ADOPTING);
    let lib = repo().join("hooks/lib").display().to_string();
    let op = Operator::watching(
        &rec,
        &["-o", "secrets", "-n", &ns.name, "--field-selector", "type=Opaque", "-E", &format!("LIB={lib}")],
    );
    cluster().ok(&["create", "secret", "generic", "parent", "-n", &ns.name]);
    let child_json = || cluster().kubectl(&["get", "configmap", "child", "-n", &ns.name, "-o", "json"]);
    op.wait_until("the adopted child", secs(60), || child_json().status.success());
    let child: Value = serde_json::from_slice(&child_json().stdout).unwrap();
    let refs = &child["metadata"]["ownerReferences"];
    op.check(refs[0]["uid"] == uid(&ns.name, "secret/parent").as_str(), &format!("owner reference: {refs:#}"));
    op.check(refs[0]["controller"] == true && refs[0]["blockOwnerDeletion"] == true, &format!("{refs:#}"));

    cluster().ok(&["delete", "secret", "parent", "-n", &ns.name, "--wait=false"]);
    op.wait_until("the garbage collector to delete the child", secs(90), || {
        let out = child_json();
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound")
    });
}

const HOOK_FAILING: &str = "#!/usr/bin/env bash\nexit 100\n";

#[test]
fn repeated_hook_failures_count_on_one_hook_failed_event() {
    let ns = cluster().namespace("ev-failed");
    let rec = Recorder::new(&[]);
    rec.hook("modified", HOOK_FAILING);
    let op = Operator::watching(&rec, &["-o", "configmaps", "-n", &ns.name]);
    cluster().ok(&["create", "configmap", "flaky", "-n", &ns.name]);
    for v in ["1", "2"] {
        cluster().ok(&["label", "configmap", "flaky", "-n", &ns.name, &format!("v={v}"), "--overwrite"]);
        op.wait_until("the failure", secs(60), || {
            events(&ns.name, "flaky", "HookFailed").first().is_some_and(|e| e["count"].as_i64() >= v.parse().ok())
        });
    }
    let failed = events(&ns.name, "flaky", "HookFailed");
    op.check(failed.len() == 1 && failed[0]["count"] == 2, &format!("one Event, counted twice: {failed:#?}"));
    op.check(failed[0]["message"].as_str().is_some_and(|m| m.contains("status 100")), &format!("{failed:#?}"));
}

/// A kubeconfig for service account `sa` of `ns` (its token secret, as 1.20 makes them).
fn service_account_kubeconfig(ns: &str, sa: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let mut secret = String::new();
    let start = std::time::Instant::now();
    while secret.is_empty() {
        assert!(start.elapsed() < secs(30), "no token secret for {ns}/{sa}");
        secret = cluster().ok(&["get", "sa", sa, "-n", ns, "-o", "jsonpath={.secrets[0].name}"]);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let token = cluster().ok(&["get", "secret", &secret, "-n", ns, "-o", "go-template={{.data.token | base64decode}}"]);
    let admin: Value =
        serde_json::from_str(&cluster().ok(&["config", "view", "--raw", "--minify", "-o", "json"])).unwrap();
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": ns}}],
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[test]
fn with_only_create_on_events_every_post_is_an_event_of_its_own() {
    let ns = cluster().namespace("ev-rbac");
    cluster().ok(&["create", "serviceaccount", "poster", "-n", &ns.name]);
    cluster().ok(&["create", "role", "post-events", "-n", &ns.name, "--verb=create", "--resource=events"]);
    cluster().ok(&[
        "create",
        "rolebinding",
        "post-events",
        "-n",
        &ns.name,
        "--role=post-events",
        &format!("--serviceaccount={}:poster", ns.name),
    ]);
    cluster().ok(&["create", "configmap", "watched", "-n", &ns.name]);
    let object = cluster().ok(&["get", "configmap", "watched", "-n", &ns.name, "-o", "json"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event.json");
    std::fs::write(&file, format!(r#"{{"type":"ADDED","object":{object}}}"#)).unwrap();
    let kubeconfig = service_account_kubeconfig(&ns.name, "poster", dir.path());
    for _ in 0..2 {
        let out = operator(
            &["event", "--reason", "Limited", "--message", "create only"],
            &[("EVENT_FILE", file.to_str().unwrap()), ("KUBECONFIG", kubeconfig.to_str().unwrap())],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let posted = events(&ns.name, "watched", "Limited");
    assert_eq!(posted.len(), 2, "{posted:#?}");
    assert!(posted.iter().all(|e| e["count"] == 1), "{posted:#?}");
}

/// Runs `adopt` from hooks/lib/children.sh on `stdin`, as a hook of the owner
/// ns1/parent (uid u-1) would: (status, stdout, stderr).
fn adopt(stdin: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event.json");
    std::fs::write(
        &file,
        r#"{"type":"ADDED","object":{"apiVersion":"zalando.org/v1","kind":"KopfExample","metadata":{"name":"parent","namespace":"ns1","uid":"u-1"}}}"#,
    )
    .unwrap();
    let lib = repo().join("hooks/lib/children.sh");
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "set -euo pipefail; source \"$1\"; adopt", "adopt", lib.to_str().unwrap()])
        .env("EVENT_FILE", &file)
        .env("OPERATOR_BIN", support::OPERATOR);
    support::status_and_text(support::output_with_stdin(cmd, stdin.as_bytes()))
}

#[test]
fn adopt_sets_the_owner_the_namespace_and_a_generated_name() {
    let (code, out, err) = adopt(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#);
    assert_eq!(code, 0, "{err}");
    let child: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(child["metadata"]["namespace"], "ns1");
    assert_eq!(child["metadata"]["generateName"], "parent-");
    let refs = child["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!((&refs[0]["uid"], &refs[0]["controller"]), (&Value::from("u-1"), &Value::from(true)));
}

#[test]
fn adopting_twice_gives_the_same_child() {
    let (_, once, _) = adopt(
        r#"{"kind":"ConfigMap","metadata":{"name":"c","ownerReferences":[{"uid":"u-9","kind":"X","name":"other"}]}}"#,
    );
    let (code, twice, err) = adopt(&once);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&once).unwrap(), serde_json::from_str::<Value>(&twice).unwrap());
    let child: Value = serde_json::from_str(&twice).unwrap();
    let uids: Vec<&str> =
        child["metadata"]["ownerReferences"].as_array().unwrap().iter().map(|r| r["uid"].as_str().unwrap()).collect();
    assert_eq!(uids, ["u-9", "u-1"], "a non-controller owner stays");
}

#[test]
fn adopt_handles_lists_and_streams_of_objects() {
    let (code, out, err) = adopt(
        r#"{"kind":"List","items":[{"kind":"ConfigMap","metadata":{"name":"a"}},{"kind":"Secret","metadata":{"name":"b"}}]}"#,
    );
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert!(list["items"].as_array().unwrap().iter().all(|i| i["metadata"]["ownerReferences"][0]["uid"] == "u-1"));
    let (code, out, err) =
        adopt(r#"{"kind":"ConfigMap","metadata":{"name":"a"}} {"kind":"ConfigMap","metadata":{"name":"b"}}"#);
    assert_eq!(code, 0, "{err}");
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&out).into_iter().map(Result::unwrap).collect();
    assert_eq!(docs.len(), 2);
}

#[test]
fn adopt_refuses_another_namespace_and_another_controller_naming_the_child() {
    let (code, _, err) = adopt(r#"{"kind":"ConfigMap","metadata":{"name":"far","namespace":"ns2"}}"#);
    assert_ne!(code, 0);
    assert!(err.contains("ConfigMap far is in namespace ns2, its owner in ns1"), "{err}");
    let (code, _, err) = adopt(
        r#"{"kind":"ConfigMap","metadata":{"name":"taken","ownerReferences":[{"uid":"u-9","kind":"Deployment","name":"web","controller":true}]}}"#,
    );
    assert_ne!(code, 0);
    assert!(err.contains("ConfigMap taken already has a controller: Deployment web"), "{err}");
}
