//! The only place that starts processes: runs a HookCommand in its own process group,
//! logs its output line by line, and ends it on timeout or shutdown.

use super::env::HookCommand;
use crate::model::outcome::Outcome;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub grace: Duration,
}

/// Process groups of the hooks running now, for `abort_all`.
static RUNNING: Mutex<Vec<Pid>> = Mutex::new(Vec::new());
static ABORTED: AtomicBool = AtomicBool::new(false);

/// Ends every running hook at once (SIGKILL to its group) and starts no more: for a
/// leader that lost its Lease, as another instance may already be running hooks.
pub fn abort_all() {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    ABORTED.store(true, Ordering::SeqCst);
    for pgid in running.iter() {
        let _ = killpg(*pgid, Signal::SIGKILL);
    }
}

/// `--shards`: hooks start only before this instant, the member's renew deadline, judged
/// by this process's monotonic clock right before each start (None: no limit).
static FENCE: Mutex<Option<std::time::Instant>> = Mutex::new(None);

/// Sets the instant after which no hook starts (a shard member's renew deadline).
pub fn fence(until: Option<std::time::Instant>) {
    *FENCE.lock().unwrap_or_else(|e| e.into_inner()) = until;
}

/// Bumped by `end_running`: work begun before it starts no hook after it.
static EPOCH: AtomicU64 = AtomicU64::new(0);

tokio::task_local! {
    /// The epoch the current event's work began in (see `within_epoch`).
    static BEGUN_IN: u64;
}

/// Past the fence, or inside work begun before the last `end_running`.
fn fenced() -> bool {
    let stale = BEGUN_IN.try_with(|e| *e != EPOCH.load(Ordering::SeqCst)).unwrap_or(false);
    stale || FENCE.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|until| std::time::Instant::now() >= until)
}

/// The current epoch, to be taken before deciding that some work may run.
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::SeqCst)
}

/// Runs `work`, whose hooks (retries included) start only while no `end_running`
/// happened since `epoch`.
pub async fn within_epoch<F: std::future::Future>(epoch: u64, work: F) -> F::Output {
    BEGUN_IN.scope(epoch, work).await
}

/// Ends every running hook at once (SIGKILL to its group), and every piece of work
/// begun before starts no more: for a shard member past its renew deadline, whose
/// objects others may take now. Work begun later runs.
pub fn end_running() {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    EPOCH.fetch_add(1, Ordering::SeqCst);
    for pgid in running.iter() {
        let _ = killpg(*pgid, Signal::SIGKILL);
    }
}

/// Registers a running hook's group until dropped; after `abort_all` it is ended at once.
struct Registered(Option<Pid>);

impl Registered {
    fn new(pgid: Option<Pid>) -> Registered {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pgid) = pgid {
            running.push(pgid);
            if ABORTED.load(Ordering::SeqCst) || fenced() {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        }
        Registered(pgid)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|p| Some(*p) != self.0);
    }
}

/// Runs the hook; `label` tags its output lines (`added ns/name`).
pub async fn run(cmd: &HookCommand, label: &str, limits: Limits, stop: &CancellationToken) -> Outcome {
    if ABORTED.load(Ordering::SeqCst) || fenced() {
        return Outcome::Interrupted;
    }
    let (mut child, output) = match start(cmd) {
        Ok(started) => started,
        Err(e) => return Outcome::NotStarted(e),
    };
    tracing::debug!("[{label}] started {} (pid {})", cmd.program.display(), child.id().unwrap_or_default());
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let registered = Registered::new(pgid);
    // Output is read in this task, beside the wait: no task and no second pipe per hook.
    let mut output = std::pin::pin!(forward(output, label));
    let mut supervised = std::pin::pin!(supervise(&mut child, pgid, limits, stop));
    let mut read_all = false;
    let outcome = tokio::select! {
        outcome = &mut supervised => outcome,
        () = &mut output => {
            read_all = true;
            supervised.await
        }
    };
    drop(registered);
    if ABORTED.load(Ordering::SeqCst) {
        return Outcome::Interrupted;
    }
    // Output written just before exit is still in the pipe; a background process that
    // keeps it open must not hold the runner, hence the bound.
    if !read_all {
        let _ = tokio::time::timeout(Duration::from_secs(2), output).await;
    }
    outcome
}

/// Starts the hook with stdout and stderr on one pipe: both are logged alike, and a
/// pipe is an fd pair and an epoll registration per hook.
fn start(cmd: &HookCommand) -> std::io::Result<(Child, Option<pipe::Receiver>)> {
    let (reader, writer) = std::io::pipe()?;
    let child = Command::new(&cmd.program)
        .env_clear()
        .envs(cmd.layers().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    // The Command (and the runner's copies of the write end) is gone: EOF comes when the hook's side closes.
    let reader = OwnedFd::from(reader);
    Ok((child, pipe::Receiver::from_owned_fd(reader).ok()))
}

async fn supervise(child: &mut Child, pgid: Option<Pid>, limits: Limits, stop: &CancellationToken) -> Outcome {
    tokio::select! {
        status = child.wait() => return status_outcome(status),
        _ = tokio::time::sleep(limits.timeout) => {}
        _ = stop.cancelled() => {
            if let Ok(Ok(status)) = tokio::time::timeout(limits.grace, child.wait()).await {
                return status_outcome(Ok(status));
            }
            end_group(child, pgid, limits.grace).await;
            return Outcome::Interrupted;
        }
    }
    end_group(child, pgid, limits.grace).await;
    Outcome::TimedOut
}

/// SIGTERM to the whole group, SIGKILL after the grace period.
async fn end_group(child: &mut Child, pgid: Option<Pid>, grace: Duration) {
    let Some(pgid) = pgid else { return };
    let _ = killpg(pgid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Children of the hook that ignored SIGTERM go too.
    let _ = killpg(pgid, Signal::SIGKILL);
}

fn status_outcome(status: std::io::Result<ExitStatus>) -> Outcome {
    match status {
        Ok(s) if s.success() => Outcome::Succeeded,
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => Outcome::Failed(code),
            (None, Some(sig)) => Outcome::Killed(sig),
            (None, None) => Outcome::Failed(-1),
        },
        Err(e) => Outcome::NotStarted(e),
    }
}

/// Logs every line, whole; lines hooks/lib/log.sh formatted keep their level.
async fn forward<R: AsyncRead + Unpin>(pipe: Option<R>, label: &str) {
    let Some(pipe) = pipe else { return };
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                log_line(label, line.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

fn log_line(label: &str, line: &str) {
    use tracing::Level;
    match crate::model::hook_line::parse(line) {
        Some((Level::ERROR, msg)) => tracing::error!("[{label}] {msg}"),
        Some((Level::WARN, msg)) => tracing::warn!("[{label}] {msg}"),
        Some((Level::DEBUG, msg)) => tracing::debug!("[{label}] {msg}"),
        Some((Level::TRACE, msg)) => tracing::trace!("[{label}] {msg}"),
        Some((_, msg)) => tracing::info!("[{label}] {msg}"),
        None => tracing::info!("[{label}] {line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(body: &str) -> (tempfile::TempDir, HookCommand) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let base: Vec<_> = vec![("PATH".into(), std::env::var_os("PATH").unwrap())];
        (dir, HookCommand { program: path, base: base.into(), event: Vec::new().into(), extra: vec![] })
    }

    fn limits(ms: u64) -> Limits {
        Limits { timeout: Duration::from_millis(ms), grace: Duration::from_millis(200) }
    }

    #[tokio::test]
    async fn exit_status_is_reported() {
        let (_d, cmd) = script("exit 3");
        assert!(matches!(run(&cmd, "t", limits(5000), &CancellationToken::new()).await, Outcome::Failed(3)));
    }

    #[tokio::test]
    async fn a_hanging_hook_and_its_children_are_ended_at_the_timeout() {
        let (d, cmd) = script("sleep 30 & echo $! > \"$0.child\"; wait");
        let started = std::time::Instant::now();
        assert!(matches!(run(&cmd, "t", limits(300), &CancellationToken::new()).await, Outcome::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(5));
        let child: i32 = std::fs::read_to_string(d.path().join("hook.child")).unwrap().trim().parse().unwrap();
        // Gone, or a zombie waiting for init to reap it: either way no longer running.
        let running = || {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).map(str::to_string);
            !matches!(state.as_deref(), None | Some("Z") | Some("X"))
        };
        for _ in 0..50 {
            if !running() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        panic!("the hook's child survived the timeout");
    }

    #[tokio::test]
    async fn a_timed_out_hook_is_reported_as_timed_out_when_its_output_closes_as_it_ends() {
        // SIGTERM ends `sleep`, which closes the output pipe while the runner waits for the exit.
        for _ in 0..3 {
            let (_d, cmd) = script("echo started; exec sleep 30");
            assert!(matches!(run(&cmd, "t", limits(300), &CancellationToken::new()).await, Outcome::TimedOut));
        }
    }

    #[tokio::test]
    async fn shutdown_lets_a_hook_finish_within_the_grace_period() {
        let (_d, cmd) = script("sleep 0.1; exit 0");
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(matches!(run(&cmd, "t", limits(5000), &stop).await, Outcome::Succeeded));
    }

    #[tokio::test]
    async fn missing_program_is_not_started() {
        let cmd = HookCommand {
            program: "/no/such/hook".into(),
            base: Vec::new().into(),
            event: Vec::new().into(),
            extra: vec![],
        };
        assert!(matches!(run(&cmd, "t", limits(1000), &CancellationToken::new()).await, Outcome::NotStarted(_)));
    }
}
