#!/usr/bin/env python3
"""Turns one benchmark run into the table: prints it and writes it into bench/RESULTS.md.

  bench/report.py --criterion target/criterion --e2e e2e.json --spawn spawn.json \
                  --machine machine.txt --cpus 2 --results bench/RESULTS.md

Only the part of RESULTS.md between the `results:begin` and `results:end` markers
is replaced; the analysis around it is kept.
"""

import argparse
import glob
import json
import os
import re

BEGIN, END = "<!-- results:begin (written by bench/run.sh) -->", "<!-- results:end -->"
MIB = 1024 * 1024


def criterion_means(root):
    """full id -> (mean ns, lower ns, upper ns)."""
    out = {}
    for path in glob.glob(os.path.join(root, "**", "new", "benchmark.json"), recursive=True):
        with open(path) as f:
            full_id = json.load(f)["full_id"]
        with open(os.path.join(os.path.dirname(path), "estimates.json")) as f:
            mean = json.load(f)["mean"]
        ci = mean["confidence_interval"]
        out[full_id] = (mean["point_estimate"], ci["lower_bound"], ci["upper_bound"])
    return out


def fmt_time(ns):
    if ns is None:
        return "n/a"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e3:.1f} µs"


def rate(ns):
    return 1e9 / ns if ns else None


def num(x, digits=0, unit=""):
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}{unit}"


def verdict(ok, text):
    return ("met" if ok else "**missed**") + (f": {text}" if text else "")


def kopf_mem_cell(kp):
    if not kp:
        return "n/a"
    cell = num(kp["hwm_kib"] / 1024, 1, " MiB")
    if kp.get("timed_out"):
        cell += f" (had seen only {kp.get('seen') or 0:,} after 240 s)"
    return cell


def rows(crit, e2e, spawn, cpus):
    r = []
    add = lambda *cells: r.append(cells)  # noqa: E731
    get = lambda key: crit.get(key, (None, None, None))[0]  # noqa: E731

    add("**1. Flattening** (per event, environment included; criterion means)", "", "", "", "")
    for obj, label in (("pod-event", "pod fixture (74 variables)"), ("configmap-100k", "ConfigMap, 100 KiB")):
        add(f"flatten + env, {label}", fmt_time(get(f"flatten+env/{obj}")), "", "", "")
        add(f"… measured apart: text + parse + flatten / environment (with a clone of the variables), {label}",
            f"{fmt_time(get(f'flatten/{obj}'))} / {fmt_time(get(f'env/{obj}'))}", "", "", "")
        add(f"… + write/remove event file, {label}", fmt_time(get(f"flatten+env+file/{obj}")), "", "", "")

    add("**2. Spawn ceiling** (started and reaped per second; criterion mean time per process)", "", "", "", "")
    ceiling = {}
    for case, label in (("true", "`/bin/true`"), ("sh-hook", "trivial `#!/bin/sh` hook"),
                        ("runner-like", "that hook as spawn.rs starts it (env, pipes, pgroup)")):
        for n in (1, cpus):
            ns = get(f"{case}/{n}")
            if case == "true":
                ceiling[n] = rate(ns)
            add(f"{label}, {n} at a time", f"{num(rate(ns))}/s ({fmt_time(ns)})", "",
                "the ceiling" if case == "true" else "", "")
    if spawn:
        add("bash hook start delay (spawn call → first line), p50 / p99",
            f"{spawn['bash_start_p50_ms']:.2f} / {spawn['bash_start_p99_ms']:.2f} ms", "", "", "")

    tp = {(t["tool"], t["workers"]): t for t in e2e.get("throughput", [])}
    kopf_tp = tp.get(("kopf", None))
    n_obj = next(iter(tp.values()))["objects"] if tp else 10000
    add(f"**3. Throughput** ({n_obj:,} existing pods, trivial hook; hooks/s from process start, "
        "and from first to last hook)", "", "", "", "")
    for w in (1, cpus):
        t = tp.get(("operator", w))
        if not t:
            continue
        steady = t.get("rate_steady")
        ratio = steady / ceiling[w] if steady and ceiling.get(w) else None
        kopf_rate = kopf_tp.get("rate_steady") if kopf_tp else None
        kopf_cell = (f"{num(kopf_tp['rate_total'])} / {num(kopf_rate)}" if kopf_tp else "n/a") if w == cpus else ""
        tgt = f"≥ 70% of ceiling ({num(0.7 * ceiling[w])}/s)" if w == cpus and ceiling.get(w) else ""
        ok = ratio is not None and ratio >= 0.7
        ahead = kopf_rate is None or (steady or 0) > kopf_rate
        ver = ""
        if w == cpus:
            ver = verdict(ok and ahead, f"{ratio:.0%} of ceiling" if ratio else "")
            if ok and not ahead:
                ver += " (behind kopf)"
        add(f"--workers {w}: total / steady hooks/s ({ratio:.0%} of the {w}-at-a-time ceiling)"
            if ratio else f"--workers {w}", f"{num(t['rate_total'])} / {num(steady)}", kopf_cell, tgt, ver)
    for w in (1, cpus):
        t = tp.get(("operator", w))
        if t:
            add(f"--workers {w}: CPU of the runner itself / of its hooks / machine busy",
                f"{t['cpu_own_s']:.1f} s / {t['cpu_hooks_s']:.1f} s / {t['machine_busy']:.0%}",
                (f"{kopf_tp['cpu_own_s']:.1f} s / {kopf_tp['cpu_hooks_s']:.1f} s / {kopf_tp['machine_busy']:.0%}"
                 if kopf_tp and w == cpus else ""), "", "")
    if kopf_tp and kopf_tp.get("timed_out"):
        add("kopf did not finish", f"{kopf_tp['hooks_run']} hooks in the time limit", "", "", "")

    lat = {x["tool"]: x for x in e2e.get("latency", [])}
    if lat:
        op, kp = lat.get("operator"), lat.get("kopf")
        add(f"**4. Latency** ({op['changes']} pod creations at {op['rate']:.0f}/s, idle; API answer → hook's first line)",
            "", "", "", "")
        p99_ok = op["p99_ms"] < 10
        ahead = not kp or (op["p99_ms"] < kp["p99_ms"] and op["p50_ms"] < kp["p50_ms"])
        add("p50 / p99", f"{op['p50_ms']:.1f} / {op['p99_ms']:.1f} ms",
            f"{kp['p50_ms']:.1f} / {kp['p99_ms']:.1f} ms" if kp else "n/a", "p99 < 10 ms",
            verdict(p99_ok and ahead, "" if ahead else "behind kopf"))
        add("p50 / p99 from the client's send (upper bound)",
            f"{op['p50_from_send_ms']:.1f} / {op['p99_from_send_ms']:.1f} ms",
            f"{kp['p50_from_send_ms']:.1f} / {kp['p99_from_send_ms']:.1f} ms" if kp else "", "", "")
        add("create request round trip p50 / p99", f"{op['rtt_p50_ms']:.1f} / {op['rtt_p99_ms']:.1f} ms",
            f"{kp['rtt_p50_ms']:.1f} / {kp['rtt_p99_ms']:.1f} ms" if kp else "", "", "")

    sizes = {s["objects"]: s for s in e2e.get("sizes", [])}
    mem = {(m["tool"], m["objects"]): m for m in e2e.get("memory", [])}
    if mem:
        add("**5. Peak RSS** (VmHWM, watching N pods, no hook)", "", "", "", "")
    for n in sorted(sizes):
        s, op, kp = sizes[n], mem.get(("operator", n)), mem.get(("kopf", n))
        limit = 1.5 * s["compact_bytes"] + 20 * MIB
        op_b = op["hwm_kib"] * 1024 if op else None
        kp_b = kp["hwm_kib"] * 1024 if kp else None
        ok = op_b is not None and op_b < limit
        ahead = kp_b is None or kp.get("timed_out") or (op_b or 0) < kp_b
        add(f"{n:,} pods: JSON {s['compact_bytes'] / MIB:.1f} MiB compact, {s['kubectl_json_bytes'] / MIB:.1f} MiB "
            f"as kubectl -o json", num(op_b / MIB if op_b else None, 1, " MiB"),
            kopf_mem_cell(kp), f"< {limit / MIB:.1f} MiB",
            verdict(ok and ahead, f"{op_b / limit:.0%} of the limit" if op_b else ""))
    for w in (cpus,):
        t = tp.get(("operator", w))
        if t:
            add(f"{n_obj:,} pods with the hook running (throughput run, --workers {w})",
                num(t["hwm_kib"] / 1024, 1, " MiB"), num(kopf_tp["hwm_kib"] / 1024, 1, " MiB") if kopf_tp else "",
                "", "")

    if tp.get(("operator", cpus)):
        t = tp[("operator", cpus)]
        add(f"**6. Start-up** ({n_obj:,} existing pods: process start → first hook)", "", "", "", "")
        ok = t["startup_s"] is not None and t["startup_s"] < 2
        ahead = not kopf_tp or kopf_tp["startup_s"] is None or t["startup_s"] < kopf_tp["startup_s"]
        t1 = tp.get(("operator", 1))
        add(f"--workers {cpus}" + (f" (--workers 1: {t1['startup_s']:.2f} s)" if t1 else ""),
            f"{t['startup_s']:.2f} s", f"{kopf_tp['startup_s']:.2f} s" if kopf_tp and kopf_tp["startup_s"] else "",
            "< 2 s", verdict(ok and ahead, "" if ahead else "behind kopf"))
    return r


def spread(values, fmt):
    """'a / b (spread x)' over the rounds: the noise of the figure."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    cell = " / ".join(fmt(v) for v in vals)
    if len(vals) > 1:
        cell += f" (spread {fmt(max(vals) - min(vals))})"
    return cell


def scale_rows(scale):
    """Sections 7 and 8: hooks/pvc and hooks/evc at scale (bench/scale.py), one value per round."""
    r = []
    add = lambda *cells: r.append(cells)  # noqa: E731
    secs = lambda v: f"{v:.1f} s"  # noqa: E731
    pvc = [x for x in scale if x["phase"] == "pvc" and x["workers"] == "default"]
    more = [x for x in scale if x["phase"] == "pvc" and x["workers"] != "default"]
    if pvc:
        n = pvc[0]["claims"]
        add(f"**7. hooks/pvc at scale** ({n} claims created at once on 3 nodes, `--workers` default; "
            f"{len(pvc)} rounds, values per round)", "", "", "", "")
        done = [x["all_bound_s"] for x in pvc]
        ok = all(d is not None and d <= 60 for d in done)
        add("all claims Bound after", spread(done, secs) if all(d is not None for d in done)
            else " / ".join(secs(d) if d is not None else f"{x['bound']} of {n} in {x['window_s']:.0f} s"
                            for d, x in zip(done, pvc)), "", "≤ 60 s", verdict(ok, ""))
        add("claim created → Bound, p50", spread([x["p50_s"] for x in pvc], secs), "", "", "")
        add("claim created → Bound, p99", spread([x["p99_s"] for x in pvc], secs), "", "", "")
        add("CPU: runner / its hooks / pod simulator (the cluster's)",
            " · ".join(f"{x['runner_cpu_s']:.1f} s / {x['hooks_cpu_s']:.1f} s / {x['simulator_cpu_s']:.1f} s"
                       for x in pvc), "", "", "")
        add("load average before → after", " · ".join(f"{x['load_before']} → {x['load_after']}" for x in pvc),
            "", "", "")
        if all("jobs" in x for x in pvc):
            add("mkdir Jobs / snapshot runs that had claims to provision",
                " · ".join(f"{x['jobs']} / {x['runs']}" for x in pvc), "", "", "")
    for x in more:
        done = f"{x['all_bound_s']:.1f} s" if x["all_bound_s"] is not None else f"{x['bound']} of {x['claims']}"
        add(f"with --workers {x['workers']}: all Bound / p50 / p99 / CPU runner, hooks, simulator",
            f"{done} / {x['p50_s']:.1f} s / {x['p99_s']:.1f} s / {x['runner_cpu_s']:.1f}, "
            f"{x['hooks_cpu_s']:.1f}, {x['simulator_cpu_s']:.1f} s", "", "", "")
    evc = [x for x in scale if x["phase"] == "evc"]
    if evc:
        e = evc[0]
        add(f"**8. hooks/evc at scale** ({e['evcs']:,} EVCs, {e['pods']:,} pods in one namespace, "
            f"`--resync {e['resync']}`; steady state over {e['window_s']:.0f} s; {len(evc)} rounds)", "", "", "", "")
        cores = [x["cores"] for x in evc]
        add("CPU of runner + hooks, in cores", spread(cores, lambda v: f"{v:.2f}"), "", "< 1 core",
            verdict(all(c < 1 for c in cores), ""))
        gaps = [x["max_gap_s"] for x in evc]
        add("longest time between two passes over every claim", spread(gaps, secs), "", "≤ 30 s",
            verdict(all(g is not None and g <= 30 for g in gaps), ""))
        add("one pass (sync-all run), p50 / max",
            " · ".join(f"{x['pass_took_p50_s']:.1f} / {x['pass_took_max_s']:.1f} s" for x in evc
                       if x["pass_took_p50_s"] is not None), "", "", "")
        add("status writes per pass", spread([x["writes_per_pass"] for x in evc], lambda v: f"{v:.0f}"), "", "", "")
        add("API requests per pass (apiserver_request_total on pods, PVCs, EVCs, Events)",
            spread([x["requests_total_per_pass"] for x in evc], lambda v: f"{v:.0f}"), "", "counted", "")
        add("… without Events (those are the PV controller's, about the unbound PVCs: see the baseline)",
            spread([sum(v for k, v in x["requests_per_pass"].items() if not k.endswith(" events"))
                    for x in evc], lambda v: f"{v:.0f}"), "", "", "")
        top = sorted(e["requests_per_pass"].items(), key=lambda kv: -kv[1])[:6]
        add("… by verb (round 1)", ", ".join(f"{k} {v:.0f}" for k, v in top), "", "", "")
        add("… the same resources with no operator running (controllers), per 10 s",
            spread([x["baseline_total_per_10s"] for x in evc], lambda v: f"{v:.0f}"), "", "", "")
        add("start: every claim has a PVC and a status after (round 1: creation; then: a restart)",
            spread([x["start_s"] for x in evc], secs), "", "", "")
        add("load average before → after", " · ".join(f"{x['load_before']} → {x['load_after']}" for x in evc),
            "", "", "")
    r += burst_rows(scale)
    return r


def burst_rows(scale):
    """Section 9: issue 19's bursts (bench/scale.py evc-burst, pvc-burst, ticks), one value per round."""
    r = []
    add = lambda *cells: r.append(cells)  # noqa: E731
    secs = lambda v: f"{v:.1f} s" if v is not None else "-"  # noqa: E731
    rounds = lambda xs, f: " · ".join(f(x) for x in xs)  # noqa: E731
    for used in (0, 300):
        ev = [x for x in scale if x["phase"] == "evc-burst" and bool(x["used"]) == bool(used)]
        if not ev:
            continue
        e = ev[0]
        what = "unused" if not e["used"] else f"{e['used']} of them used by Running pods"
        add(f"**9{'a' if not used else 'b'}. hooks/evc, a burst** ({e['evcs']:,} EVCs at once, {what}, "
            f"+{e['bad']} with a bad size; {e['pods']:,} pods; expiry {e['expiry_s']} s, grace {e['grace_s']} s; "
            f"`--resync 10s`; {len(ev)} rounds)", "", "", "", "")
        add("created in", rounds(ev, lambda x: secs(x["create_s"])), "", "", "")
        add("created → PVC and status, p50 / p99 / max",
            rounds(ev, lambda x: " / ".join(secs(x["ready_s"][k]) for k in ("p50", "p99", "max"))
                   if x["ready_s"] else "-"), "", "≤ 30 s each",
            verdict(all(x["ready_within_30"] == x["evcs"] for x in ev), ""))
        add("unused claims: deleted after their deadline, p50 / max",
            rounds(ev, lambda x: " / ".join(secs(x["late_s"][k]) for k in ("p50", "max")) if x["late_s"] else "-"),
            "", "", "")
        add("last unused claim deleted, after the last creation",
            rounds(ev, lambda x: secs(x["all_unused_gone_after_last_s"])
                   if x["all_unused_gone_after_last_s"] is not None else f"{x['unused_gone']} of {x['unused']}"),
            "", f"≤ {e['expiry_s'] + 30} s",
            verdict(all(x["all_unused_gone_after_last_s"] is not None
                        and x["all_unused_gone_after_last_s"] <= x["expiry_s"] + 30 for x in ev), ""))
        if used:
            add("used claims deleted before their pods finished", rounds(ev, lambda x: str(x["used_deleted_before_finish"])),
                "", "0", verdict(all(x["used_deleted_before_finish"] == 0 for x in ev), ""))
            add("last used claim deleted, after its pods finished",
                rounds(ev, lambda x: secs(x["used_gone_after_finish_s"]) if x["used_gone_after_finish_s"] is not None
                       else f"{x['used_gone']} of {x['used']}"), "", f"≤ grace + 30 s = {e['grace_s'] + 30} s",
                verdict(all(x["used_gone_after_finish_s"] is not None
                            and x["used_gone_after_finish_s"] <= x["grace_s"] + 30 for x in ev), ""))
        add("the bad claim: created → status (phases seen)",
            rounds(ev, lambda x: ", ".join(f"{secs(v)}" for v in x["bad_status_s"].values()) + f" ({'/'.join(x['bad_phases'])})"),
            "", "Failed, an Event", "")
        add("snapshot runs with new claims / sync-all passes",
            rounds(ev, lambda x: f"{x['snapshot_runs']} / {x['passes']}"), "", "", "")
        add("CPU: runner / hooks, over the window",
            rounds(ev, lambda x: f"{x['runner_cpu_s']:.1f} s / {x['hooks_cpu_s']:.1f} s in {x['window_s']:.0f} s"),
            "", "", "")
        add("load average before → after", rounds(ev, lambda x: f"{x['load_before']} → {x['load_after']}"), "", "", "")
    pb = [x for x in scale if x["phase"] == "pvc-burst"]
    if pb:
        n = pb[0]["claims"]
        add(f"**9c. hooks/pvc, a burst** ({n:,} claims at once on 3 nodes; {len(pb)} rounds)", "", "", "", "")
        add("all claims Bound after",
            rounds(pb, lambda x: secs(x["all_bound_s"]) if x["all_bound_s"] is not None
                   else f"{x['bound']} of {n} in {x['window_s']:.0f} s"), "", "≤ 90 s",
            verdict(all(x["all_bound_s"] is not None and x["all_bound_s"] <= 90 for x in pb), ""))
        add("claim created → Bound, p50 / p99", rounds(pb, lambda x: f"{secs(x['p50_s'])} / {secs(x['p99_s'])}"),
            "", "", "")
        add("CPU: runner / its hooks / pod simulator",
            rounds(pb, lambda x: f"{x['runner_cpu_s']:.1f} s / {x['hooks_cpu_s']:.1f} s / {x['simulator_cpu_s']:.1f} s"),
            "", "", "")
        add("mkdir Jobs / snapshot runs that had claims to provision", rounds(pb, lambda x: f"{x['jobs']} / {x['runs']}"),
            "", "", "")
        add("load average before → after", rounds(pb, lambda x: f"{x['load_before']} → {x['load_after']}"), "", "", "")
    tk = [x for x in scale if x["phase"] == "ticks"]
    if tk:
        t = tk[0]
        add(f"**9d. a burst while a hook is slow** ({t['objects']:,} ConfigMaps at once, `added` sleeps "
            f"{t['hook_s'] * 1000:.0f} ms, `--workers {t['workers']}`, `sync-all` with `--resync 1s`; {len(tk)} rounds)",
            "", "", "", "")
        # The target is --workers x 10/s for a hook of 100 ms; a hook that takes longer (process
        # start, a loaded machine) allows less, and that is what the runner is held to.
        allow = lambda x: x.get("hooks_allow_per_s") or x["target_rate_per_s"]  # noqa: E731
        add("backlog drained at", rounds(tk, lambda x: f"{x['rate_per_s']:.1f}/s in {x['drain_s']:.1f} s"
                                         if x["rate_per_s"] else "-"),
            "", f"{t['target_rate_per_s']:.0f}/s with 100 ms hooks; --workers / the hooks' own time",
            verdict(all((x["rate_per_s"] or 0) >= 0.95 * allow(x) for x in tk),
                    " / ".join(f"{100 * (x['rate_per_s'] or 0) / allow(x):.0f}% of what the hooks allow" for x in tk)))
        if all(x.get("hook_ms_mean") for x in tk):
            add("… the hook's own run time (runner's log), and the rate it allows",
                rounds(tk, lambda x: f"{x['hook_ms_mean']:.1f} ms, {x['hooks_allow_per_s']:.1f}/s"), "", "", "")
        add("sync-all passes started during the drain / 1 s ticks in it",
            rounds(tk, lambda x: f"{x['sync_all_starts_in_drain']} / {x['ticks_in_drain']:.0f}"), "", "one per tick",
            verdict(all(x["sync_all_starts_in_drain"] >= x["ticks_in_drain"] - 2 for x in tk), ""))
        add("longest time without a sync-all pass during the drain", rounds(tk, lambda x: secs(x["max_gap_s"])),
            "", "", "")
        add("load average before → after", rounds(tk, lambda x: f"{x['load_before']} → {x['load_after']}"), "", "", "")
    return r


def table(rs):
    lines = ["| figure | operator | kopf | target | verdict |", "|---|---|---|---|---|"]
    for cells in rs:
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--criterion", required=True)
    ap.add_argument("--e2e", required=True)
    ap.add_argument("--spawn")
    ap.add_argument("--machine", required=True)
    ap.add_argument("--cpus", type=int, required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--scale", help="bench/scale.py's output (pvc and evc at scale)")
    args = ap.parse_args()
    crit = criterion_means(args.criterion) if args.criterion else {}
    with open(args.e2e) as f:
        e2e = json.load(f)
    spawn = None
    if args.spawn and os.path.exists(args.spawn):
        with open(args.spawn) as f:
            spawn = json.load(f)
    with open(args.machine) as f:
        machine = f.read().rstrip()
    scale = []
    if args.scale and os.path.exists(args.scale):
        with open(args.scale) as f:
            scale = json.load(f)
    body = table((rows(crit, e2e, spawn, args.cpus) if crit or e2e else []) + scale_rows(scale))
    print(body)
    section = f"{BEGIN}\n\n## The run\n\n```\n{machine}\n```\n\n{body}\n\n{END}"
    text = ""
    if os.path.exists(args.results):
        with open(args.results) as f:
            text = f.read()
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = (text.rstrip() + "\n\n" if text else "# Benchmark results\n\n") + section + "\n"
    with open(args.results, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
