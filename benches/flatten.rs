//! Flattening time per event, environment building included (issue 7, figure 1).
//!
//! Uses the runner's own code through the library target: src/flatten.rs (object ->
//! EVENT_* variables) and src/hooks/env.rs (the hook's environment, with ARG_MAX
//! fitting). What one delivery does before spawning (src/deliver.rs: `deliver`) is
//! measured: parse the object's text once, flatten it, fit its variables beside the
//! runner's part (built once at start); `+file` also writes and removes the event file,
//! in the directory the runner uses (tmpfs when there is one). `flatten/` (parse,
//! flatten) and `env/` (fitting and the command, from the flattened variables, their
//! clone included) split the first figure.

use operator::model::flatten;
use operator::runtime::hooks::env;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;
use std::path::{Path, PathBuf};

/// The shared fixture, beside the checkout; never copied into the repository.
const POD_EVENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/operator-sh-pod-event.json");

/// A ConfigMap of about 100 KiB: 100 keys of 1,000 bytes each, plus ordinary metadata.
fn configmap_object() -> Value {
    let data: serde_json::Map<String, Value> =
        (0..100).map(|i| (format!("key-{i:03}.conf"), Value::String(format!("{i:03}").repeat(333) + "x"))).collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "big", "namespace": "bench", "uid": "5f1d3e9c-0000-4000-8000-000000000001",
            "resourceVersion": "123456", "creationTimestamp": "2026-11-23T12:00:00Z",
            "labels": {"app": "bench", "app.kubernetes.io/part-of": "operator"},
            "annotations": {"example.com/owner": "bench"}
        },
        "data": data
    })
}

/// The runner's own environment as run.rs builds it: inherited variables without EVENT_*.
fn settings() -> env::Settings {
    let inherited = std::env::vars_os().filter(|(k, _)| !k.to_string_lossy().starts_with("EVENT_")).collect();
    env::Settings {
        inherited,
        log_file: Some("/var/log/operator.log".into()),
        log_level: 1,
        kubeconfig: Some("/root/.kube/config".into()),
        hook_env: vec![],
        arg_max: 2 * 1024 * 1024,
    }
}

/// What deliver.rs does for one event before the hook is spawned: parse the object
/// once, flatten it, fit the event's variables beside the runner's part (built once).
fn prepare(kind: &str, object: &str, e: &env::Environment, opts: &flatten::Options, file: &Path) -> env::HookCommand {
    let value: Value = serde_json::from_str(object).expect("object JSON");
    let vars = flatten::flatten_object(kind, &value, opts).expect("flattens").vars;
    let (vars, _) = e.event_vars(vars, 4096);
    e.command(PathBuf::from("/hooks/added"), vars, vec![("EVENT_FILE".into(), file.into())])
}

fn write_event_file(dir: &Path, n: u64, text: &str) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!("event-{n}.json"));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).expect("event file");
    f.write_all(text.as_bytes()).expect("write");
    path
}

fn bench_object(c: &mut Criterion, name: &str, object: &str) {
    let s = env::Environment::new(&settings());
    let opts = flatten::Options::default();
    let file = PathBuf::from("/tmp/event-0.json");
    let vars = prepare("ADDED", object, &s, &opts, &file).event.len();
    eprintln!("{name}: {} bytes of JSON, {vars} variables besides the inherited ones", object.len());
    c.bench_function(&format!("flatten/{name}"), |b| {
        b.iter(|| {
            let value: Value = serde_json::from_str(black_box(object)).expect("object JSON");
            flatten::flatten_object("ADDED", &value, &opts).expect("flattens")
        })
    });
    let value: Value = serde_json::from_str(object).expect("object JSON");
    let flat = flatten::flatten_object("ADDED", &value, &opts).expect("flattens").vars;
    c.bench_function(&format!("env/{name}"), |b| {
        b.iter(|| {
            let (vars, _) = s.event_vars(black_box(flat.clone()), 4096);
            s.command(PathBuf::from("/hooks/added"), vars, vec![("EVENT_FILE".into(), file.clone().into())])
        })
    });
    c.bench_function(&format!("flatten+env/{name}"), |b| {
        b.iter(|| prepare("ADDED", black_box(object), &s, &opts, &file))
    });
    // Where the runner writes them: tmpfs when there is one (src/run.rs, EventDir).
    let dir = operator::commands::run::EventDir::create().expect("event directory");
    let mut n = 0u64;
    c.bench_function(&format!("flatten+env+file/{name}"), |b| {
        b.iter(|| {
            n += 1;
            let text = format!("{{\"type\":\"ADDED\",\"object\":{object}}}");
            let path = write_event_file(&dir.0, n, &text);
            let cmd = prepare("ADDED", black_box(object), &s, &opts, &path);
            std::fs::remove_file(&path).expect("remove");
            cmd
        })
    });
}

fn benches(c: &mut Criterion) {
    let fixture = std::fs::read_to_string(POD_EVENT).unwrap_or_else(|e| panic!("{POD_EVENT}: {e}"));
    let event: Value = serde_json::from_str(&fixture).expect("fixture JSON");
    let pod = serde_json::to_string(&event["object"]).expect("pod JSON");
    bench_object(c, "pod-event", &pod);
    let cm = serde_json::to_string(&configmap_object()).expect("configmap JSON");
    bench_object(c, "configmap-100k", &cm);
}

criterion_group! {
    name = flattening;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2)).sample_size(30);
    targets = benches
}
criterion_main!(flattening);
