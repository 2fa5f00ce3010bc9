#!/usr/bin/env python3
"""End-to-end figures of issue 7 against the local control plane (started with --no-simulator).

  bench/e2e.py --kubeconfig K --operator target/release/operator --kopf /tmp/kopf-venv/bin/python \
               --work DIR --out results.json [--phases latency,mem1k,throughput,mem10k,mem50k]

Pods are created straight through the API (POST, several keep-alive connections),
in namespace `bench`, and stay Pending (no simulator). Figures:

- latency: 100 pods created at 10/s in a namespace of their own while the tool
  is idle; the hook (bash) appends "name $EPOCHREALTIME". Latency = the hook's
  first line minus the moment the client had the API server's answer to the
  create (the change is committed by then); the client's request round trip is
  reported too, so the true change->hook time lies between the two figures.
- throughput / start-up: with N pods existing, the tool starts with a hook that
  appends one byte to a file; the file's size is polled every 5 ms.
  start-up = process start -> first byte; total = process start -> N bytes.
- memory: VmHWM (/proc/PID/status) of the tool watching N pods, with no hook
  (nothing spawned), read once every object was seen and the process went idle;
  next to the pods' JSON size (compact, as the runner keeps them, and as
  `kubectl get pods -A -o json | wc -c` prints it).
"""

import argparse
import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

NS = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Kube:
    """A minimal API client: bearer token from the kubeconfig, one keep-alive connection per thread."""

    def __init__(self, kubeconfig):
        out = subprocess.check_output(
            ["kubectl", "--kubeconfig", kubeconfig, "config", "view", "--raw", "--minify", "-o", "json"])
        cfg = json.loads(out)
        cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
        url = urllib.parse.urlsplit(cluster["server"])
        self.host, self.port = url.hostname, url.port or 443
        self.ctx = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        self.token = user["token"]
        self.local = threading.local()

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": "Bearer " + self.token, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/merge-patch+json" if method == "PATCH" else "application/json"
        for attempt in range(5):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPSConnection(
                    self.host, self.port, context=self.ctx, timeout=120)
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 4:
                    raise
                time.sleep(0.2)
                continue
            if resp.status in (429, 500, 503, 504) and attempt < 4:
                time.sleep(0.5)
                continue
            return resp.status, raw
        raise RuntimeError("unreachable")


def pod(name):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["true"]}]},
    }


def ensure_namespace(kube, ns):
    status, raw = kube.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                            "metadata": {"name": ns}})
    if status not in (201, 409):
        raise RuntimeError(f"namespace {ns}: {status} {raw[:200]!r}")
    # Pods are refused until the service-account controller made `default`.
    deadline = time.monotonic() + 60
    while kube.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no default service account in {ns}")
        time.sleep(0.2)


def create_pods(kube, ns, names, threads=16):
    errors = []

    def work(chunk):
        for name in chunk:
            status, raw = kube.request("POST", f"/api/v1/namespaces/{ns}/pods", pod(name))
            if status not in (201, 409):
                errors.append(f"{name}: {status} {raw[:200]!r}")
                return

    chunks = [names[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=work, args=(c,)) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise RuntimeError("; ".join(errors[:3]))


def list_pods(kube):
    """Every pod as the runner keeps it: compact JSON, without managedFields, with apiVersion/kind."""
    items, cont = [], ""
    while True:
        q = "limit=500" + (f"&continue={urllib.parse.quote(cont)}" if cont else "")
        status, raw = kube.request("GET", f"/api/v1/pods?{q}")
        if status != 200:
            raise RuntimeError(f"list pods: {status}")
        page = json.loads(raw)
        items.extend(page["items"])
        cont = page["metadata"].get("continue")
        if not cont:
            return items


def compact_size(items):
    total = 0
    for item in items:
        item["metadata"].pop("managedFields", None)
        item = {"apiVersion": "v1", "kind": "Pod", **item}
        total += len(json.dumps(item, separators=(",", ":")))
    return total


def kubectl_json_size(kubeconfig):
    p = subprocess.Popen(["kubectl", "--kubeconfig", kubeconfig, "get", "pods", "-A", "-o", "json"],
                         stdout=subprocess.PIPE)
    size = 0
    while chunk := p.stdout.read(1 << 20):
        size += len(chunk)
    if p.wait() != 0:
        raise RuntimeError("kubectl get pods failed")
    return size


def top_up(kube, total):
    """Creates pods in NS until the cluster holds `total` pods."""
    have = len(list_pods(kube))
    if have >= total:
        return
    ensure_namespace(kube, NS)
    start = time.monotonic()
    names = [f"p-{i:05d}" for i in range(have, total)]
    create_pods(kube, NS, names)
    took = time.monotonic() - start
    log(f"created {len(names)} pods in {took:.1f} s ({len(names) / took:.0f}/s)")
    have = len(list_pods(kube))
    if have < total:
        raise RuntimeError(f"only {have} pods after creating; wanted {total}")


RUNNING = []


class Tool:
    """The runner or the kopf peer, started on a hooks directory."""

    def __init__(self, args, name, hooks, logfile, workers=None, env_extra=None):
        self.name = name
        env = dict(os.environ, KUBECONFIG=args.kubeconfig)
        env.update(env_extra or {})
        if name == "operator":
            argv = [args.operator, "-o", "pods", "-A", "-h", hooks, "-l", logfile]
            if workers:
                argv += ["--workers", str(workers)]
            out = subprocess.DEVNULL
        else:
            env["BENCH_HOOKS"] = hooks
            argv = [args.kopf, "-m", "kopf", "run", "--standalone", "-A",
                    os.path.join(os.path.dirname(os.path.abspath(__file__)), "kopf_peer.py")]
            out = open(logfile, "wb")
        self.logfile = logfile
        if os.path.exists(logfile):
            os.remove(logfile)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        RUNNING.append(self)

    def status(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field}")

    def cpu(self):
        """(own CPU seconds, CPU seconds of reaped children)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / CLK_TCK
        children = (int(fields[13]) + int(fields[14])) / CLK_TCK
        return own, children

    def alive(self):
        return self.proc.poll() is None

    def settle(self, quiet=1.0, timeout=300):
        """Waits until the process used (almost) no CPU for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        last, since = self.cpu()[0], time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            now = self.cpu()[0]
            if now - last > 0.02:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
        raise RuntimeError(f"{self.name} did not go idle in {timeout} s")

    def stop(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def write_hook(path, body):
    with open(path, "w") as f:
        f.write(body)
    os.chmod(path, 0o755)


def hooks_dir(work, label, added=None):
    d = os.path.join(work, f"hooks-{label}")
    os.makedirs(d, exist_ok=True)
    if added is not None:
        write_hook(os.path.join(d, "added"), added)
    return d


def wait_count(tool, path, n, timeout):
    """Polls the size of `path` every 5 ms: (seconds to first byte, seconds to n bytes, bytes seen)."""
    first = None
    deadline = tool.t0 + timeout
    size = 0
    while True:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = 0
        now = time.monotonic()
        if size and first is None:
            first = now - tool.t0
        if size >= n:
            return first, now - tool.t0, size
        if now > deadline or not tool.alive():
            return first, None, size
        time.sleep(0.005)


def machine_cpu():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def throughput(args, kube, tool_name, workers, n, timeout):
    label = f"tp-{tool_name}-{workers or 'default'}"
    count = os.path.join(args.work, f"{label}.count")
    if os.path.exists(count):
        os.remove(count)
    hooks = hooks_dir(args.work, label, f"#!/bin/sh\nprintf . >>'{count}'\n")
    env = {"BENCH_KOPF_WORKERS": str(workers)} if tool_name == "kopf" and workers else None
    busy0, total0 = machine_cpu()
    tool = Tool(args, tool_name, hooks, os.path.join(args.work, f"{label}.log"),
                workers=workers if tool_name == "operator" else None, env_extra=env)
    first, last, seen = wait_count(tool, count, n, timeout)
    busy1, total1 = machine_cpu()
    own, children = tool.cpu()
    hwm = tool.status("VmHWM")
    tool.stop()
    r = {"tool": tool_name, "workers": workers, "objects": n, "hooks_run": seen, "startup_s": first,
         "total_s": last, "hwm_kib": hwm, "cpu_own_s": own, "cpu_hooks_s": children,
         "machine_busy": (busy1 - busy0) / max(1, total1 - total0)}
    if last is not None:
        r["rate_total"] = n / last
        r["rate_steady"] = (n - 1) / (last - first) if last > first else None
    else:
        r["rate_total"] = seen / timeout
        r["rate_steady"] = None
        r["timed_out"] = True
    log(f"throughput {json.dumps(r)}")
    return r


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def latency(args, kube, tool_name, changes=100, rate=10.0):
    ns = f"lat-{tool_name}"
    ensure_namespace(kube, ns)
    out = os.path.join(args.work, f"lat-{tool_name}.times")
    if os.path.exists(out):
        os.remove(out)
    hook = ("#!/bin/bash\n"
            f"[[ $EVENT_OBJECT_METADATA_NAMESPACE == {ns} ]] || exit 0\n"
            f"printf '%s %s\\n' \"$EVENT_OBJECT_METADATA_NAME\" \"$EPOCHREALTIME\" >>'{out}'\n")
    hooks = hooks_dir(args.work, f"lat-{tool_name}", hook)
    tool = Tool(args, tool_name, hooks, os.path.join(args.work, f"lat-{tool_name}.log"))
    time.sleep(1.0)
    tool.settle(quiet=1.0, timeout=120)
    sent = {}
    start = time.monotonic()
    for i in range(changes):
        target = start + i / rate
        time.sleep(max(0.0, target - time.monotonic()))
        name = f"l-{i:03d}"
        t_send = time.time()
        status, raw = kube.request("POST", f"/api/v1/namespaces/{ns}/pods", pod(name))
        t_resp = time.time()
        if status != 201:
            raise RuntimeError(f"latency pod {name}: {status} {raw[:200]!r}")
        sent[name] = (t_send, t_resp)
    deadline = time.monotonic() + 30
    seen = {}
    while time.monotonic() < deadline:
        if os.path.exists(out):
            with open(out) as f:
                seen = dict(line.split() for line in f if line.strip())
        if len(seen) >= changes:
            break
        time.sleep(0.1)
    hwm = tool.status("VmHWM")
    tool.stop()
    from_resp = [(float(seen[n]) - sent[n][1]) * 1000 for n in sent if n in seen]
    from_send = [(float(seen[n]) - sent[n][0]) * 1000 for n in sent if n in seen]
    rtt = [(r - s) * 1000 for s, r in sent.values()]
    r = {"tool": tool_name, "changes": changes, "rate": rate, "hooks_seen": len(from_resp),
         "p50_ms": percentile(from_resp, 0.5), "p99_ms": percentile(from_resp, 0.99),
         "max_ms": max(from_resp),
         "p50_from_send_ms": percentile(from_send, 0.5), "p99_from_send_ms": percentile(from_send, 0.99),
         "rtt_p50_ms": percentile(rtt, 0.5), "rtt_p99_ms": percentile(rtt, 0.99), "hwm_kib": hwm}
    log(f"latency {json.dumps(r)}")
    return r


def memory(args, kube, tool_name, n, timeout=240):
    label = f"mem-{tool_name}-{n}"
    count = os.path.join(args.work, f"{label}.count")
    if os.path.exists(count):
        os.remove(count)
    hooks = hooks_dir(args.work, "none")
    logfile = os.path.join(args.work, f"{label}.log")
    tool = Tool(args, tool_name, hooks, logfile, env_extra={"BENCH_COUNT": count})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tool_name == "operator":
            if os.path.exists(logfile) and f" listed {n} pods" in open(logfile, errors="replace").read():
                break
        elif os.path.exists(count) and os.stat(count).st_size >= n:
            break
        if not tool.alive():
            raise RuntimeError(f"{tool_name} exited")
        time.sleep(0.05)
    else:
        # Too slow to see them all: the figure is kept, marked with how many it had seen.
        seen = os.stat(count).st_size if os.path.exists(count) else None
        r = {"tool": tool_name, "objects": n, "hwm_kib": tool.status("VmHWM"), "rss_kib": tool.status("VmRSS"),
             "seen_all_s": None, "seen": seen, "timed_out": True}
        tool.stop()
        log(f"memory {json.dumps(r)}")
        return r
    seen_s = time.monotonic() - tool.t0
    tool.settle(quiet=1.0, timeout=60)
    r = {"tool": tool_name, "objects": n, "hwm_kib": tool.status("VmHWM"), "rss_kib": tool.status("VmRSS"),
         "rss_anon_kib": tool.status("RssAnon"), "rss_file_kib": tool.status("RssFile"), "seen_all_s": seen_s}
    tool.stop()
    log(f"memory {json.dumps(r)}")
    return r


def sizes(args, kube, n):
    items = list_pods(kube)
    if len(items) != n:
        raise RuntimeError(f"{len(items)} pods, expected {n}")
    t = time.monotonic()
    r = {"objects": n, "compact_bytes": compact_size(items), "kubectl_json_bytes": kubectl_json_size(args.kubeconfig)}
    log(f"sizes {json.dumps(r)} (kubectl took {time.monotonic() - t:.1f} s)")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--operator", required=True)
    ap.add_argument("--kopf", required=True, help="python of the kopf virtualenv")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--phases", default="latency,mem1k,throughput,mem10k,mem50k")
    ap.add_argument("--kopf-timeout", type=float, default=240)
    ap.add_argument("--ceiling", metavar="REPO", help="measure the spawn ceiling (criterion) again before throughput")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    kube = Kube(args.kubeconfig)
    phases = args.phases.split(",")
    res = {"latency": [], "throughput": [], "memory": [], "sizes": []}

    def save():
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)

    if "latency" in phases:
        for t in ("operator", "kopf"):
            res["latency"].append(latency(args, kube, t))
            save()
    existing = len(list_pods(kube))
    for n, phase in ((1000, "mem1k"), (10000, "mem10k"), (50000, "mem50k")):
        if phase == "mem10k" and "throughput" in phases:
            top_up(kube, n)
            if args.ceiling:
                # The ceiling again, in the conditions the throughput runs meet (cluster up, idle).
                log("spawn ceiling again (criterion, true/*)")
                subprocess.run(["cargo", "bench", "--locked", "--quiet", "--bench", "spawn", "--", "^true/"],
                               cwd=args.ceiling, check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            for t, w, limit in (("operator", 1, 120), ("operator", args.cpus, 120),
                                ("kopf", None, args.kopf_timeout)):
                res["throughput"].append(throughput(args, kube, t, w, n, limit))
                save()
        if phase not in phases or n < existing:
            continue
        top_up(kube, n)
        res["sizes"].append(sizes(args, kube, n))
        for t in ("operator", "kopf"):
            res["memory"].append(memory(args, kube, t, n))
            save()
    save()


if __name__ == "__main__":
    try:
        main()
    finally:
        # A failed phase must not leave a runner or kopf behind (they run in sessions of their own).
        for t in RUNNING:
            t.stop()
