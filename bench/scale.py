#!/usr/bin/env python3
"""The shipped hook directories at scale (issue 14, targets 4 and 5), against the local control plane.

  bench/scale.py --kubeconfig K --operator target/release/operator --repo . --work DIR \
                 --out scale.json --phase pvc|evc [--repeat N]

- pvc (cluster WITH the pod simulator, which acts out the Jobs): `operator -o pvc -n NS -h
  hooks/pvc` with --workers left at its default (a namespace per round); 200 claims of class local-storage are
  created at once (16 connections), spread over the three nodes. Per claim: creation
  (the API's answer) -> first poll (every 0.25 s) that sees it Bound; all Bound (all_bound_s:
  from the first creation to the last claim seen Bound); CPU of the runner and of its hooks
  (their children included) from /proc, and of the pod simulator (the cluster's own operator)
  over the same time. From the runner's log: the mkdir Jobs the hooks created (jobs; the
  snapshot hook makes one per node per run) and the snapshot runs that had claims to
  provision (runs: its "need a volume" lines). --runner-arg adds runner arguments and
  --hooks another hooks directory (e.g. a copy with `sync-all -> snapshot` and
  `--runner-arg=--resync=2s` on a runner without the snapshot hook).
- evc (cluster WITHOUT the simulator: pod phases are set through the API): 5,000 pods
  and 1,000 EVCs in one namespace, each EVC with its PVC and status.size as the added
  hook leaves them. A third of the claims have Running pods (InUse), a third Succeeded
  pods (Released), a third none (Pending); periods of a day, so none is deleted.
  `operator -o evc -n NS -h hooks/evc --resync 10s`: first the start (every claim gets
  a phase), 30 s to settle, then a steady window: CPU of runner + hooks,
  the hook's passes (its `pass over N claims` lines: interval between passes = how often
  every claim is reconciled), and kube-apiserver's apiserver_request_total per pass
  (hook verbs on pods, PVCs, EVCs, Events), with an equal window before the operator
  started as the baseline (controllers, heartbeat).
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import CLK_TCK, Kube, ensure_namespace, percentile  # noqa: E402

NODES = ["kind-worker", "kind-worker2", "kind-control-plane"]


def log(msg):
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def kubectl(kubeconfig, *args, stdin=None):
    return subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args], input=stdin, text=True,
                          check=True, capture_output=True).stdout


def proc_cpu(pid):
    """(own CPU s, reaped children's CPU s) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, (int(fields[13]) + int(fields[14])) / CLK_TCK


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def parallel(items, fn, threads=16):
    errors = []

    def work(chunk):
        for item in chunk:
            try:
                fn(item)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"{item}: {e}")

    ts = [threading.Thread(target=work, args=(items[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors[:3]))


def must(status, raw, what, ok=(200, 201)):
    if status not in ok:
        raise RuntimeError(f"{what}: {status} {raw[:300]!r}")


class Runner:
    """The operator on a hooks directory, in its own session; CPU read from /proc."""

    def __init__(self, args, argv, name):
        self.log = os.path.join(args.work, f"{name}.log")
        if os.path.exists(self.log):
            os.remove(self.log)
        env = dict(os.environ, KUBECONFIG=args.kubeconfig, KUBECACHEDIR=os.path.join(args.work, "kube-cache"))
        self.proc = subprocess.Popen([args.operator, *argv, "-l", self.log], env=env, cwd=args.repo,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.t0 = time.monotonic()

    def cpu(self):
        return proc_cpu(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()


def simulator_pid(cluster_dir):
    try:
        with open(os.path.join(cluster_dir, "pids", "kubelet")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def simulator_cpu(pid):
    if pid is None:
        return 0.0
    own, children = proc_cpu(pid)
    return own + children


# --- pvc -----------------------------------------------------------------------------------

def pvc_phase(args, kube, claims=200, timeout=300):
    # A namespace per round: the claims of earlier rounds (Bound) are not replayed.
    ns = f"pvc-scale-{args.round}"
    kubectl(args.kubeconfig, "apply", "-f", os.path.join(args.repo, "storageclass.yaml"))
    ensure_namespace(kube, ns)
    sim = simulator_pid(args.cluster_dir)
    extra = ["--workers", str(args.workers)] if args.workers else []
    hooks = args.hooks or os.path.join(args.repo, "hooks/pvc")
    runner = Runner(args, ["-o", "pvc", "-n", ns, "-h", hooks, *extra, *args.runner_arg],
                    f"pvc-{args.round}")
    deadline = time.monotonic() + 60
    while " listed " not in (runner.text() if os.path.exists(runner.log) else ""):
        if time.monotonic() > deadline:
            raise RuntimeError("the pvc runner did not list claims")
        time.sleep(0.1)
    load0 = loadavg()
    cpu0, sim0 = runner.cpu(), simulator_cpu(sim)
    created = {}
    names = [f"c-{args.round}-{i:03d}" for i in range(claims)]

    def create(name):
        i = int(name.rsplit("-", 1)[1])
        body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-storage",
                         "resources": {"requests": {"storage": "1Gi"}},
                         "selector": {"matchLabels": {"kubernetes.io/hostname": NODES[i % len(NODES)]}}}}
        status, raw = kube.request("POST", f"/api/v1/namespaces/{ns}/persistentvolumeclaims", body)
        created[name] = time.monotonic()
        must(status, raw, f"claim {name}")

    t_start = time.monotonic()
    parallel(names, create)
    log(f"pvc: {claims} claims created in {time.monotonic() - t_start:.1f} s")
    bound = {}
    while len(bound) < claims and time.monotonic() - t_start < timeout:
        status, raw = kube.request("GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims")
        now = time.monotonic()
        if status == 200:
            for item in json.loads(raw)["items"]:
                name = item["metadata"]["name"]
                if item.get("status", {}).get("phase") == "Bound" and name not in bound and name in created:
                    bound[name] = now
        time.sleep(0.25)
    t_end = time.monotonic()
    cpu1, sim1 = runner.cpu(), simulator_cpu(sim)
    load1 = loadavg()
    text = runner.text()
    runner.stop()
    lat = [bound[n] - created[n] for n in bound]
    r = {"phase": "pvc", "round": args.round, "claims": claims, "bound": len(bound),
         "all_bound_s": (max(bound.values()) - t_start) if len(bound) == claims else None,
         "p50_s": percentile(lat, 0.5) if lat else None, "p99_s": percentile(lat, 0.99) if lat else None,
         "max_s": max(lat) if lat else None,
         "runner_cpu_s": cpu1[0] - cpu0[0], "hooks_cpu_s": cpu1[1] - cpu0[1], "simulator_cpu_s": sim1 - sim0,
         "window_s": t_end - t_start, "hook_errors": text.count(" ERROR "),
         "jobs": text.count(" INFO pvc: created Job ") - text.count("-rm on node "),
         "runs": text.count(" need a volume"),
         "workers": args.workers or "default", "load_before": load0, "load_after": load1}
    log(f"pvc {json.dumps(r)}")
    return r


# --- evc -----------------------------------------------------------------------------------

DAY = 86400


def evc_setup(args, kube, ns, evcs, pods):
    kubectl(args.kubeconfig, "apply", "-f", os.path.join(args.repo, "hooks/evc/crd.yaml"))
    kubectl(args.kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/ephemeralvolumeclaims.zalando.org")
    ensure_namespace(kube, ns)
    third = evcs // 3
    users = 2 * third                      # claims 0..users-1 have pods; the rest none
    spare = pods // 5                      # pods that mount no claim at all
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def pod(i):
        name = f"p-{i:05d}"
        claim = None if i < spare else f"e-{(i - spare) % users:04d}"
        spec = {"restartPolicy": "Never", "nodeName": "kind-worker",
                "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}
        if claim:
            spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
            spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        status, raw = kube.request("POST", f"/api/v1/namespaces/{ns}/pods",
                                   {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
        must(status, raw, f"pod {name}", ok=(201, 409))
        used = claim is not None and int(claim[2:]) < third
        phase = "Running" if used or claim is None else "Succeeded"
        state = ({"running": {"startedAt": now}} if phase == "Running"
                 else {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}})
        patch = {"status": {"phase": phase, "containerStatuses": [
            {"name": "c", "image": "busybox", "imageID": "", "ready": phase == "Running", "restartCount": 0,
             "state": state}]}}
        status, raw = kube.request("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", patch)
        must(status, raw, f"pod status {name}")

    # Each claim as the added hook leaves it (its PVC, status.size): the measurement is the
    # steady state of the passes, not 1,000 added hooks at once.
    def evc(i):
        name = f"e-{i:04d}"
        body = {"apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
                "metadata": {"name": name, "labels": {"bench": "evc"}},
                "spec": {"size": "1Gi", "expiryPeriod": DAY, "gracePeriod": DAY}}
        status, raw = kube.request("POST", f"/apis/zalando.org/v1/namespaces/{ns}/ephemeralvolumeclaims", body)
        must(status, raw, f"evc {i}", ok=(201,))
        uid = json.loads(raw)["metadata"]["uid"]
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": name, "labels": {"bench": "evc"},
                            "annotations": {"ephemeralvolumeclaims.zalando.org/copied-labels": '["bench"]'},
                            "ownerReferences": [{"apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
                                                 "name": name, "uid": uid, "controller": True,
                                                 "blockOwnerDeletion": True}]},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
        status, raw = kube.request("POST", f"/api/v1/namespaces/{ns}/persistentvolumeclaims", pvc)
        must(status, raw, f"pvc {name}")
        status, raw = kube.request("PATCH", f"/apis/zalando.org/v1/namespaces/{ns}/ephemeralvolumeclaims/{name}/status",
                                   {"status": {"size": "1Gi"}})
        must(status, raw, f"evc status {name}")

    t = time.monotonic()
    parallel(list(range(pods)), pod)
    log(f"evc: {pods} pods created and given a phase in {time.monotonic() - t:.0f} s")
    t = time.monotonic()
    parallel(list(range(evcs)), evc)
    log(f"evc: {evcs} EVCs created in {time.monotonic() - t:.0f} s")


def evcs_with_status(kube, ns):
    status, raw = kube.request("GET", f"/apis/zalando.org/v1/namespaces/{ns}/ephemeralvolumeclaims")
    if status != 200:
        return {}
    phases = {}
    for item in json.loads(raw)["items"]:
        p = (item.get("status") or {}).get("phase")
        phases[p] = phases.get(p, 0) + 1
    return phases


HOOK_RESOURCES = ("pods", "persistentvolumeclaims", "ephemeralvolumeclaims", "events")


def request_counts(kube):
    """apiserver_request_total summed per (verb, resource, subresource) for what the hooks touch."""
    status, raw = kube.request("GET", "/metrics")
    must(status, raw, "/metrics", ok=(200,))
    out = {}
    for line in raw.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("resource") not in HOOK_RESOURCES:
            continue
        key = f"{labels.get('verb')} {labels['resource']}" + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        out[key] = out.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return out


def diff(a, b):
    return {k: b.get(k, 0) - a.get(k, 0) for k in sorted(set(a) | set(b)) if b.get(k, 0) - a.get(k, 0)}


PASS_RE = re.compile(r"^(\S+ \S+) INFO .*evc: pass over (\d+) claims: (\d+) statuses written, (\d+) deleted, "
                     r"(\d+) PVCs created, (\d+) not, (\d+) one by one, in ([0-9.]+)s")


def passes(text):
    out = []
    for line in text.splitlines():
        m = PASS_RE.match(line)
        if m:
            t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
            out.append({"t": t, "claims": int(m.group(2)), "written": int(m.group(3)),
                        "one_by_one": int(m.group(7)), "took_s": float(m.group(8))})
    return out


def evc_phase(args, kube, evcs=1000, pods=5000, window=120, resync="10s"):
    ns = args.evc_namespace
    if args.round == 0:
        evc_setup(args, kube, ns, evcs, pods)
    base0 = request_counts(kube)
    time.sleep(30)
    base1 = request_counts(kube)
    baseline = {k: v * 10 / 30 for k, v in diff(base0, base1).items()}  # per 10 s
    load0 = loadavg()
    runner = Runner(args, ["-o", "evc", "-n", ns, "-h", os.path.join(args.repo, "hooks/evc"), "--resync", resync],
                    f"evc-{args.round}")
    # Start: every claim gets its PVC and a status (a restart: only the passes work).
    deadline = time.monotonic() + 900
    while True:
        phases = evcs_with_status(kube, ns)
        if sum(v for k, v in phases.items() if k) >= evcs and phases.get("Pending", 0) <= evcs - 2 * (evcs // 3):
            break
        if time.monotonic() > deadline or runner.proc.poll() is not None:
            raise RuntimeError(f"evc: claims never all got a status: {phases}")
        time.sleep(1)
    start_s = time.monotonic() - runner.t0
    cpu_start = runner.cpu()
    log(f"evc: all {evcs} claims have a status after {start_s:.0f} s: {phases}; {args.settle} s to settle")
    # The start's replayed ADDED events are still being delivered: not the steady state.
    time.sleep(args.settle)
    # Steady state.
    req0, cpu0, t0 = request_counts(kube), runner.cpu(), time.monotonic()
    time.sleep(window)
    req1, cpu1, t1 = request_counts(kube), runner.cpu(), time.monotonic()
    load1 = loadavg()
    text = runner.text()
    runner.stop()
    ps = [p for p in passes(text) if p["claims"] == evcs]
    start_wall = time.time() - (time.monotonic() - t0)
    in_window = [p for p in ps if start_wall - 1 <= p["t"] <= start_wall + (t1 - t0) + 1]
    # Steady state: between passes that ended in the window (the start's first pass is slower).
    gaps = [b["t"] - a["t"] for a, b in zip(in_window, in_window[1:])]
    n_passes = max(1, len(in_window))
    reqs = diff(req0, req1)
    cpu_s = (cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1])
    r = {"phase": "evc", "round": args.round, "evcs": evcs, "pods": pods, "resync": resync, "phases": phases,
         "start_s": start_s, "start_cpu_s": cpu_start[0] + cpu_start[1],
         "window_s": t1 - t0, "cpu_runner_s": cpu1[0] - cpu0[0], "cpu_hooks_s": cpu1[1] - cpu0[1],
         "cores": cpu_s / (t1 - t0), "passes": len(in_window),
         "pass_took_p50_s": percentile([p["took_s"] for p in in_window], 0.5) if in_window else None,
         "pass_took_max_s": max((p["took_s"] for p in in_window), default=None),
         "max_gap_s": max(gaps, default=None), "writes_per_pass": (sum(p["written"] for p in in_window) / n_passes),
         "requests_per_pass": {k: v / n_passes for k, v in reqs.items()},
         "requests_total_per_pass": sum(reqs.values()) / n_passes,
         "baseline_per_10s": baseline, "baseline_total_per_10s": sum(baseline.values()),
         "hook_errors": text.count(" ERROR "), "load_before": load0, "load_after": load1}
    log(f"evc {json.dumps(r)}")
    return r


# --- bursts (issue 19) ---------------------------------------------------------------------

class Watch:
    """`kubectl get KIND -n NS --watch`: each event's (type, name, phase) stamped on arrival. A
    kubectl that ends (a loaded API server can drop it) is started again and counted in
    `restarts`: its new list re-sends the objects that exist, a deletion in the gap is missed."""

    def __init__(self, args, kind, ns, template):
        self.events, self.restarts, self.stopped = [], 0, False
        self.argv = ["kubectl", "--kubeconfig", args.kubeconfig, "get", kind, "-n", ns, "--watch",
                     "--output-watch-events", "-o", f"jsonpath={template}" + '{"\\n"}']
        self.proc = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self.stopped:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for line in self.proc.stdout:
                self.events.append((time.monotonic(), line.split()))
            self.proc.wait()
            if not self.stopped:
                self.restarts += 1
                time.sleep(0.5)

    def stop(self):
        self.stopped = True
        if self.proc:
            self.proc.terminate()
            self.proc.wait()


def burst_pods(args, kube, ns, count, prefix, claim=None, phase="Running"):
    """COUNT pods named PREFIX-i, with phase PHASE; claim(i) names the EVC pod i mounts (or None)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def one(i):
        name = f"{prefix}-{i:05d}"
        spec = {"restartPolicy": "Never", "nodeName": "kind-worker",
                "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}
        c = claim(i) if claim else None
        if c:
            spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": c}}]
            spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        status, raw = kube.request("POST", f"/api/v1/namespaces/{ns}/pods",
                                   {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
        must(status, raw, f"pod {name}", ok=(201, 409))
        pod_phase(kube, ns, name, phase, now)

    parallel(list(range(count)), one)


def pod_phase(kube, ns, name, phase, at):
    """Reports the pod's phase as a kubelet would (there is none: the cluster runs no simulator)."""
    state = ({"running": {"startedAt": at}} if phase == "Running"
             else {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": at, "finishedAt": at}})
    patch = {"status": {"phase": phase, "containerStatuses": [
        {"name": "c", "image": "busybox", "imageID": "", "ready": phase == "Running", "restartCount": 0,
         "state": state}]}}
    status, raw = kube.request("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", patch)
    must(status, raw, f"pod status {name}")


def stats(values):
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99), "max": max(values)} if values else None


def evc_burst_round(args, kube, ns, used, expiry=40, grace=20, bad=1):
    """One burst: args.evcs EVCs created at once (`used` of them mounted by Running pods made just
    before), plus `bad` with an invalid size. Watches EVCs and PVCs; finishes the used pods once
    every unused claim is gone (or 120 s after the last creation)."""
    tag = f"{'u' if used else 'a'}{args.round}"
    names = [f"{tag}-{i:04d}" for i in range(args.evcs)]
    if used:
        burst_pods(args, kube, ns, used, f"user-{tag}", claim=lambda i: names[i])
    runner = Runner(args, ["-o", "evc", "-A", "-h", os.path.join(args.repo, "hooks/evc"), "--resync", "10s"],
                    f"evc-burst-{tag}")
    deadline = time.monotonic() + 120
    while " listed " not in (runner.text() if os.path.exists(runner.log) else ""):
        if time.monotonic() > deadline:
            raise RuntimeError("the evc runner did not list claims")
        time.sleep(0.2)
    time.sleep(2)
    evw = Watch(args, "ephemeralvolumeclaims.zalando.org", ns, "{.type} {.object.metadata.name} {.object.status.phase}")
    pvw = Watch(args, "persistentvolumeclaims", ns, "{.type} {.object.metadata.name}")
    time.sleep(2)
    load0, cpu0 = loadavg(), runner.cpu()
    created = {}

    def create(name):
        size = "1Gi" if not name.startswith("bad") else "lots"
        body = {"apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
                "metadata": {"name": name, "labels": {"bench": "burst"}},
                "spec": {"size": size, "expiryPeriod": expiry, "gracePeriod": grace}}
        status, raw = kube.request("POST", f"/apis/zalando.org/v1/namespaces/{ns}/ephemeralvolumeclaims", body)
        created[name] = time.monotonic()
        must(status, raw, f"evc {name}", ok=(201,))

    bads = [f"bad-{tag}-{i}" for i in range(bad)]
    allnames = names[:args.evcs // 2] + bads + names[args.evcs // 2:]
    t0 = time.monotonic()
    parallel(allnames, create)
    t_last = max(created.values())
    log(f"evc-burst {tag}: {len(allnames)} EVCs created in {t_last - t0:.1f} s")
    user_set = set(names[:used])
    unused = [n for n in names if n not in user_set]

    def first(events, kind, name_ok, typ=None, want_phase=False):
        out = {}
        for t, f in events:
            if len(f) < 2 or (typ and f[0] != typ) or not name_ok(f[1]):
                continue
            if want_phase and len(f) < 3:
                continue
            out.setdefault(f[1], t)
        return out

    finished_at = None
    stop_at = t_last + 300
    while time.monotonic() < stop_at:
        gone = first(evw.events, "evc", lambda n: True, typ="DELETED")
        if not finished_at and used and (all(n in gone for n in unused) or time.monotonic() > t_last + 120):
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            kept = sum(1 for n in names[:used] if n not in gone)
            finished_at = time.monotonic()
            parallel([f"user-{tag}-{i:05d}" for i in range(used)], lambda p: pod_phase(kube, ns, p, "Succeeded", at))
            log(f"evc-burst {tag}: {kept} of {used} used claims still there; their pods finished")
        if all(n in gone for n in names) and (finished_at or not used):
            break
        time.sleep(0.5)
    t_end = time.monotonic()
    cpu1, load1 = runner.cpu(), loadavg()
    # The run that deleted the last claims logs its summary line after them.
    quiet = time.monotonic() + 30
    while time.monotonic() < quiet and runner.text().count("reached! Deleting the EVC.") < len(names):
        time.sleep(0.5)
    time.sleep(1)
    evw.stop()
    pvw.stop()
    text = runner.text()
    runner.stop()
    status_at = first(evw.events, "evc", lambda n: True, want_phase=True)
    pvc_at = first(pvw.events, "pvc", lambda n: True, typ="ADDED")
    gone = first(evw.events, "evc", lambda n: True, typ="DELETED")
    ready = [max(status_at[n], pvc_at[n]) - created[n] for n in names if n in status_at and n in pvc_at]
    # Deletions of unused claims against their deadline (creation + expiry; the API's creation
    # time is in whole seconds, the client's answer is within the second after it).
    late = [gone[n] - (created[n] + expiry) for n in unused if n in gone]
    used_gone = [gone[n] for n in names[:used] if n in gone]
    early = sum(1 for n in names[:used] if n in gone and (finished_at is None or gone[n] < finished_at))
    bad_status = {n: (status_at[n] - created[n]) if n in status_at else None for n in bads}
    bad_phase = [f[2] for _, f in evw.events if len(f) > 2 and f[1] in bads]
    runs = re.findall(r"evc: snapshot of \d+ claims: (\d+) new", text)
    passes_ = re.findall(r"evc: pass over \d+ claims: (\d+) statuses written, (\d+) deleted", text)
    r = {"phase": "evc-burst", "round": args.round, "evcs": args.evcs, "used": used, "bad": bad,
         "pods": args.pods + used, "expiry_s": expiry, "grace_s": grace, "create_s": t_last - t0,
         "ready": len(ready), "ready_s": stats(ready), "ready_within_30": sum(1 for x in ready if x <= 30),
         "unused": len(unused), "unused_gone": len(late),
         "all_unused_gone_after_last_s": (max(gone[n] for n in unused) - t_last) if len(late) == len(unused) else None,
         "late_s": stats(late),
         "used_deleted_before_finish": early,
         "used_gone_after_finish_s": (max(used_gone) - finished_at) if used and finished_at and len(used_gone) == used
         else None,
         "used_gone": len(used_gone),
         "bad_status_s": bad_status, "bad_phases": sorted(set(bad_phase)),
         "snapshot_runs": len(runs), "snapshot_new": sum(int(x) for x in runs),
         "passes": len(passes_), "deleted_by_passes": sum(int(d) for _, d in passes_),
         "runner_cpu_s": cpu1[0] - cpu0[0], "hooks_cpu_s": cpu1[1] - cpu0[1], "window_s": t_end - t0,
         "hook_errors": text.count(" ERROR "), "load_before": load0, "load_after": load1,
         "watch_restarts": evw.restarts + pvw.restarts}
    log(f"evc-burst {json.dumps(r)}")
    for n in bads:
        kube.request("DELETE", f"/apis/zalando.org/v1/namespaces/{ns}/ephemeralvolumeclaims/{n}")
    return r


def evc_burst_phase(args, kube):
    """Issue 19, target 1: args.pods pods in the namespace, the runner as hooks/evc/README.md runs
    it, then args.evcs EVCs at once: unused (a), then with args.used of them used (b)."""
    ns = "evc-burst"
    if args.round == args.first_round:
        kubectl(args.kubeconfig, "apply", "-f", os.path.join(args.repo, "hooks/evc/crd.yaml"))
        kubectl(args.kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
                "crd/ephemeralvolumeclaims.zalando.org")
        ensure_namespace(kube, ns)
        t = time.monotonic()
        burst_pods(args, kube, ns, args.pods, "p")
        log(f"evc-burst: {args.pods} Running pods created in {time.monotonic() - t:.0f} s")
    out = [evc_burst_round(args, kube, ns, 0)]
    if args.used:
        out.append(evc_burst_round(args, kube, ns, args.used))
    return out


def ticks_phase(args, kube, objects=1000, hook_s=0.1, workers=2):
    """Issue 19, target 4: a burst of ConfigMaps for a directory whose `added` takes 100 ms, with a
    1 s --resync sync-all beside it. The drain rate of the backlog, and whether a sync-all pass
    starts at every tick that no other pass occupies."""
    ns = f"ticks-{args.round}"
    ensure_namespace(kube, ns)
    hooks = os.path.join(args.work, f"ticks-hooks-{args.round}")
    os.makedirs(hooks, exist_ok=True)
    added_out, sync_out = os.path.join(hooks, "added.out"), os.path.join(hooks, "sync.out")
    for f in (added_out, sync_out):
        if os.path.exists(f):
            os.remove(f)
    with open(os.path.join(hooks, "added"), "w") as f:
        f.write(f"#!/bin/sh\nsleep {hook_s}\necho \"$EVENT_OBJECT_METADATA_NAME $(date +%s.%N)\" >> '{added_out}'\n")
    with open(os.path.join(hooks, "sync-all"), "w") as f:
        f.write(f"#!/bin/sh\necho \"start $(date +%s.%N)\" >> '{sync_out}'\n")
    for h in ("added", "sync-all"):
        os.chmod(os.path.join(hooks, h), 0o755)
    runner = Runner(args, ["-o", "configmaps", "-n", ns, "-h", hooks, "--resync", "1s", "--workers", str(workers)],
                    f"ticks-{args.round}")
    deadline = time.monotonic() + 60
    while " listed " not in (runner.text() if os.path.exists(runner.log) else ""):
        if time.monotonic() > deadline:
            raise RuntimeError("the ticks runner did not list")
        time.sleep(0.1)
    time.sleep(3)
    load0, cpu0 = loadavg(), runner.cpu()
    names = [f"cm-{i:04d}" for i in range(objects)]
    t0w = time.time()

    def create(name):
        status, raw = kube.request("POST", f"/api/v1/namespaces/{ns}/configmaps",
                                   {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                                    "data": {"k": "v"}})
        must(status, raw, f"configmap {name}")

    parallel(names, create)
    t_created = time.time()
    expect = objects / (workers / hook_s)
    deadline = time.monotonic() + 3 * expect + 60
    done = []
    while time.monotonic() < deadline:
        with open(added_out) if os.path.exists(added_out) else open(os.devnull) as f:
            done = [line.split() for line in f if line.startswith("cm-")]
        if len(done) >= objects:
            break
        time.sleep(0.5)
    time.sleep(3)
    cpu1, load1 = runner.cpu(), loadavg()
    runner.stop()
    # What the hooks themselves allow: --workers over their mean run time (the runner's lines).
    took = [float(m) for m in re.findall(r"INFO hook added for \S+ succeeded in ([0-9.]+) ms", runner.text())]
    times = sorted(float(x[1]) for x in done)
    with open(sync_out) as f:
        starts = [float(line.split()[1]) for line in f if line.startswith("start")]
    t_first, t_last = (times[0], times[-1]) if times else (t0w, t0w)
    during = [s for s in starts if t0w <= s <= t_last]
    gaps = [b - a for a, b in zip([t0w] + during, during + [t_last])]
    r = {"phase": "ticks", "round": args.round, "objects": objects, "hook_s": hook_s, "workers": workers,
         "create_s": t_created - t0w, "handled": len(times),
         "drain_s": t_last - t0w, "rate_per_s": (len(times) - 1) / (t_last - t_first) if len(times) > 1 else None,
         "target_rate_per_s": workers / hook_s, "ticks_in_drain": t_last - t0w,
         "hook_ms_mean": sum(took) / len(took) * 1 if took else None,
         "hooks_allow_per_s": workers * 1000 / (sum(took) / len(took)) if took else None,
         "sync_all_starts_in_drain": len(during), "max_gap_s": max(gaps) if gaps else None,
         "gaps_over_2s": sum(1 for g in gaps if g > 2),
         "runner_cpu_s": cpu1[0] - cpu0[0], "hooks_cpu_s": cpu1[1] - cpu0[1],
         "load_before": load0, "load_after": load1}
    log(f"ticks {json.dumps(r)}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--operator", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--phase", required=True, choices=["pvc", "pvc-burst", "evc", "evc-burst", "ticks"])
    ap.add_argument("--repeat", type=int, default=1, help="rounds, to measure the noise")
    ap.add_argument("--window", type=int, default=120, help="evc: seconds of steady state measured")
    ap.add_argument("--settle", type=int, default=30, help="evc: seconds between the start and the window")
    ap.add_argument("--evcs", type=int, default=1000)
    ap.add_argument("--evc-namespace", default="evc-scale")
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--claims", type=int, default=200, help="pvc: claims created at once")
    ap.add_argument("--workers", type=int, help="pvc: --workers for the runner (default: its default)")
    ap.add_argument("--hooks", help="pvc: hooks directory (default: REPO/hooks/pvc)")
    ap.add_argument("--pvc-timeout", type=int, default=300, help="pvc: seconds to poll for Bound claims")
    ap.add_argument("--runner-arg", action="append", default=[], help="pvc: one more runner argument")
    ap.add_argument("--first-round", type=int, default=0, help="number of the first round (names, namespaces)")
    ap.add_argument("--used", type=int, default=300, help="evc-burst: claims used by Running pods in the second burst")
    ap.add_argument("--workers-ticks", type=int, default=2, help="ticks: --workers of the runner")
    args = ap.parse_args()
    args.cluster_dir = os.path.dirname(os.path.abspath(args.kubeconfig))
    os.makedirs(args.work, exist_ok=True)
    kube = Kube(args.kubeconfig)
    results = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)
    for rnd in range(args.first_round, args.first_round + args.repeat):
        args.round = rnd
        if args.phase in ("pvc", "pvc-burst"):
            r = [pvc_phase(args, kube, claims=args.claims, timeout=args.pvc_timeout)]
            r[0]["phase"] = args.phase
        elif args.phase == "evc":
            r = [evc_phase(args, kube, evcs=args.evcs, pods=args.pods, window=args.window)]
        elif args.phase == "evc-burst":
            r = evc_burst_phase(args, kube)
        else:
            r = [ticks_phase(args, kube, workers=args.workers_ticks)]
        results.extend(r)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
