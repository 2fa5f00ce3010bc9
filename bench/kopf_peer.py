"""The kopf peer of issue 7: the same hooks directory, run as a subprocess per event.

Run by bench/e2e.py as `kopf run --standalone -A bench/kopf_peer.py` with
BENCH_HOOKS=<hooks dir>. Like the runner, it picks `<hooks>/<event type in lower
case>` (kopf gives the initial listing type None: that is ADDED), skips a
missing hook, and passes EVENT_TYPE, EVENT_OBJECT_METADATA_NAME and
EVENT_OBJECT_METADATA_NAMESPACE. It does not flatten the whole object nor write
an event file: less work than the runner does, in kopf's favour.
With no hook and BENCH_COUNT set it appends one byte to that file per event
(in-process), so the memory runs can tell when every object was seen.
"""

import asyncio
import os

import kopf

HOOKS = os.environ["BENCH_HOOKS"]
COUNT = os.environ.get("BENCH_COUNT")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    # Handlers of on.event post nothing; this keeps kopf from posting k8s Events at all.
    settings.posting.enabled = False
    limit = os.environ.get("BENCH_KOPF_WORKERS")
    if limit:
        settings.queueing.worker_limit = int(limit)


@kopf.on.event("pods")
async def run_hook(event, name, namespace, **_):
    kind = event["type"] or "ADDED"
    hook = os.path.join(HOOKS, kind.lower())
    if not os.access(hook, os.X_OK):
        if COUNT:
            with open(COUNT, "ab") as f:
                f.write(b".")
        return
    env = dict(os.environ)
    env.update(
        EVENT_TYPE=kind,
        EVENT_OBJECT_METADATA_NAME=name or "",
        EVENT_OBJECT_METADATA_NAMESPACE=namespace or "",
    )
    proc = await asyncio.create_subprocess_exec(hook, env=env, stdin=asyncio.subprocess.DEVNULL)
    code = await proc.wait()
    if code != 0:
        raise kopf.PermanentError(f"hook {hook} exited with status {code}")
