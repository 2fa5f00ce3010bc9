//! The spawn ceiling (issue 7, figure 2): how many processes per second this machine
//! can start and reap, one at a time and N (= CPUs) at a time. Criterion reports the
//! time per process; processes/s = N_in_flight-independent 1 / that time.
//!
//! - `true/...`: `/bin/true`, stdio to /dev/null: the ceiling the targets refer to.
//! - `sh-hook/...`: the benchmark's trivial hook (`#!/bin/sh`, `exit 0`): what a
//!   hook costs over `/bin/true` (the kernel runs /bin/sh for it).
//! - `runner-like/...`: that hook started as src/hooks/spawn.rs starts hooks: an
//!   explicit environment of ~120 variables (the pod fixture's 74 plus this
//!   process's), stdout and stderr on one pipe read to EOF, own process group.
//!
//! Afterwards (not criterion): the start delay of a bash hook, from the spawn call
//! to the hook's first line reading $EPOCHREALTIME, which the latency figure includes.
//! `SPAWN_BENCH_OUT=path` writes it as JSON.

use criterion::{Criterion, criterion_group, criterion_main};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One way of starting a process, run once per call.
type Case<'a> = (&'static str, Box<dyn Fn() + Sync + 'a>);

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write hook");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn run_plain(program: &Path) {
    let status =
        Command::new(program).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().expect("spawn");
    assert!(status.success());
}

/// 74 variables like the pod fixture's, plus this process's environment.
fn runner_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.extend((0..74).map(|i| (format!("EVENT_OBJECT_SPEC_FIELD_{i}"), format!("value-number-{i}-of-the-pod"))));
    env.push(("EVENT_FILE".into(), "/tmp/operator-1-0/event-1.json".into()));
    env
}

fn run_runner_like(program: &Path, env: &[(String, String)]) {
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let mut child = Command::new(program)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("pipe"))
        .stderr(writer)
        .process_group(0)
        .spawn()
        .expect("spawn");
    let mut sink = Vec::new();
    reader.read_to_end(&mut sink).expect("read");
    assert!(child.wait().expect("wait").success());
}

/// Runs `one` `iters` times spread over `n` threads; the elapsed wall time.
fn parallel(iters: u64, n: usize, one: &(dyn Fn() + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..n as u64 {
            let share = iters / n as u64 + u64::from(t < iters % n as u64);
            s.spawn(move || (0..share).for_each(|_| one()));
        }
    });
    start.elapsed()
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = script(dir.path(), "added", "#!/bin/sh\nexit 0\n");
    let env = runner_env();
    let n = cpus();
    let truth = PathBuf::from("/bin/true");
    let cases: [Case; 3] = [
        ("true", Box::new(|| run_plain(&truth))),
        ("sh-hook", Box::new(|| run_plain(&hook))),
        ("runner-like", Box::new(|| run_runner_like(&hook, &env))),
    ];
    for (name, one) in &cases {
        c.bench_function(&format!("{name}/1"), |b| b.iter_custom(|iters| parallel(iters, 1, one.as_ref())));
        c.bench_function(&format!("{name}/{n}"), |b| b.iter_custom(|iters| parallel(iters, n, one.as_ref())));
    }
    start_delay(dir.path());
}

fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_micros()
}

/// From the spawn call to a bash hook's first line, 300 times, one at a time.
fn start_delay(dir: &Path) {
    let hook = script(dir, "latency", "#!/bin/bash\nprintf '%s\\n' \"${EPOCHREALTIME/./}\"\n");
    let mut delays: Vec<u128> = (0..300)
        .map(|_| {
            let before = now_us();
            let out = Command::new(&hook).stdin(Stdio::null()).output().expect("spawn");
            let started: u128 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("EPOCHREALTIME");
            started.saturating_sub(before)
        })
        .collect();
    delays.sort();
    let p = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    let (p50, p99) = (p(0.5), p(0.99));
    println!("bash hook start delay (spawn call -> first line): p50 {p50:.2} ms, p99 {p99:.2} ms");
    if let Some(out) = std::env::var_os("SPAWN_BENCH_OUT") {
        let json = format!("{{\"bash_start_p50_ms\": {p50:.3}, \"bash_start_p99_ms\": {p99:.3}}}\n");
        std::fs::write(out, json).expect("write SPAWN_BENCH_OUT");
    }
}

criterion_group! {
    name = spawning;
    config = Criterion::default().warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3)).sample_size(20);
    targets = benches
}
criterion_main!(spawning);
