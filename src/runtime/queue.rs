//! Per-object ordering with parallelism: one FIFO per object key, at most one running job per key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A unit of work for one object.
pub trait Job: Send + 'static {
    fn key(&self) -> &Arc<str>;
    /// A job that may be dropped when an equal one is already waiting (SYNC).
    fn coalesces_with(&self, _waiting: &Self) -> bool {
        false
    }
}

/// Jobs waiting, per key, in arrival order; keys ready to run in arrival order.
pub struct KeyedQueue<J> {
    pending: HashMap<Arc<str>, VecDeque<J>>,
    ready: VecDeque<Arc<str>>,
    busy: HashSet<Arc<str>>,
    len: usize,
}

impl<J: Job> Default for KeyedQueue<J> {
    fn default() -> Self {
        KeyedQueue { pending: HashMap::new(), ready: VecDeque::new(), busy: HashSet::new(), len: 0 }
    }
}

impl<J: Job> KeyedQueue<J> {
    /// Jobs waiting (not running).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, job: J) {
        let key = job.key().clone();
        let queue = self.pending.entry(key.clone()).or_default();
        if queue.iter().any(|w| job.coalesces_with(w)) {
            return;
        }
        if queue.is_empty() && !self.busy.contains(&key) {
            self.ready.push_back(key);
        }
        queue.push_back(job);
        self.len += 1;
    }

    /// The next job whose key is idle; its key becomes busy until `done`.
    pub fn take(&mut self) -> Option<J> {
        let key = self.ready.pop_front()?;
        let queue = self.pending.get_mut(&key)?;
        let job = queue.pop_front()?;
        if queue.is_empty() {
            self.pending.remove(&key);
        }
        self.len -= 1;
        self.busy.insert(key);
        Some(job)
    }

    /// The job of `key` finished: its next job (if any) may run.
    pub fn done(&mut self, key: &Arc<str>) {
        self.busy.remove(key);
        if self.pending.contains_key(key) {
            self.ready.push_back(key.clone());
        }
    }
}

/// How many jobs may wait before the producer is slowed down.
const MAX_WAITING: usize = 10_000;

/// Runs `handle` for every job from `rx`: up to `workers` at once, one at a time per key,
/// in order per key. Returns when `rx` closes and everything ran, or when `stop` is
/// cancelled and the running jobs have returned (jobs still waiting are dropped).
pub async fn dispatch<J, F, Fut>(mut rx: mpsc::Receiver<J>, workers: usize, handle: F, stop: CancellationToken)
where
    J: Job,
    F: Fn(J) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut queue: KeyedQueue<J> = KeyedQueue::default();
    let mut running: JoinSet<Arc<str>> = JoinSet::new();
    let mut open = true;
    loop {
        crate::runtime::metrics::queue_depth(queue.len() + rx.len());
        while running.len() < workers && !stop.is_cancelled() {
            let Some(job) = queue.take() else { break };
            let key = job.key().clone();
            let fut = handle(job);
            running.spawn(async move {
                fut.await;
                key
            });
        }
        if (!open || stop.is_cancelled()) && running.is_empty() && (queue.is_empty() || stop.is_cancelled()) {
            return;
        }
        tokio::select! {
            job = rx.recv(), if open && queue.len() < MAX_WAITING && !stop.is_cancelled() => match job {
                Some(job) => {
                    let key = job.key().clone();
                    queue.push(job);
                    tracing::debug!("queue: {key} in; {} waiting, {} running", queue.len(), running.len());
                }
                None => open = false,
            },
            Some(finished) = running.join_next(), if !running.is_empty() => match finished {
                Ok(key) => queue.done(&key),
                Err(e) => tracing::error!("a hook task failed: {e}"),
            },
            _ = stop.cancelled(), if running.is_empty() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Debug, Clone, PartialEq)]
    struct J(Arc<str>, u32, bool);

    impl Job for J {
        fn key(&self) -> &Arc<str> {
            &self.0
        }
        fn coalesces_with(&self, waiting: &Self) -> bool {
            self.2 && waiting.2
        }
    }

    fn j(key: &str, n: u32) -> J {
        J(key.into(), n, false)
    }

    #[test]
    fn one_key_runs_one_job_at_a_time_in_order() {
        let mut q = KeyedQueue::default();
        q.push(j("a", 1));
        q.push(j("a", 2));
        assert_eq!(q.take(), Some(j("a", 1)));
        assert_eq!(q.take(), None, "second job of a busy key must wait");
        q.done(&"a".into());
        assert_eq!(q.take(), Some(j("a", 2)));
    }

    #[test]
    fn other_keys_do_not_wait_for_a_busy_key() {
        let mut q = KeyedQueue::default();
        q.push(j("a", 1));
        q.push(j("a", 2));
        q.push(j("b", 1));
        assert_eq!(q.take(), Some(j("a", 1)));
        assert_eq!(q.take(), Some(j("b", 1)));
    }

    #[test]
    fn waiting_syncs_coalesce() {
        let mut q = KeyedQueue::default();
        q.push(J("a".into(), 1, true));
        q.push(J("a".into(), 2, true));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn done_requeues_a_key_behind_keys_already_ready() {
        let mut q = KeyedQueue::default();
        q.push(j("a", 1));
        q.push(j("a", 2));
        q.push(j("b", 1));
        let _ = q.take();
        q.done(&"a".into());
        assert_eq!(q.take(), Some(j("b", 1)));
        assert_eq!(q.take(), Some(j("a", 2)));
    }

    #[tokio::test]
    async fn dispatch_keeps_per_key_order_and_runs_keys_in_parallel() {
        let (tx, rx) = mpsc::channel(100);
        let log = Arc::new(Mutex::new(Vec::new()));
        let active = Arc::new(Mutex::new(HashSet::<Arc<str>>::new()));
        for n in 0..20 {
            tx.send(j(if n % 2 == 0 { "a" } else { "b" }, n)).await.unwrap();
        }
        drop(tx);
        let (log2, active2) = (log.clone(), active.clone());
        let handle = move |job: J| {
            let (log, active) = (log2.clone(), active2.clone());
            async move {
                assert!(active.lock().unwrap().insert(job.0.clone()), "key ran twice at once");
                tokio::time::sleep(Duration::from_millis(2)).await;
                active.lock().unwrap().remove(&job.0);
                log.lock().unwrap().push(job);
            }
        };
        dispatch(rx, 4, handle, CancellationToken::new()).await;
        let log = log.lock().unwrap();
        let order = |k: &str| log.iter().filter(|x| &*x.0 == k).map(|x| x.1).collect::<Vec<_>>();
        assert_eq!(order("a"), (0..20).step_by(2).collect::<Vec<_>>());
        assert_eq!(order("b"), (1..20).step_by(2).collect::<Vec<_>>());
    }
}
