#!/usr/bin/env python3
"""Run every benchmark in scripts/bench/ at one scale, then write the generated block of
docs/benchmarks.md (one table per benchmark: ours, the reference measured in the same run, the
ratio, the DESIGN §9 bar, PASS/FAIL) and its PNG charts in docs/img/.

    scripts/bench/all --scale small     # a few minutes on 2 cores
    scripts/bench/all --scale medium    # tens of minutes
    scripts/bench/all --scale full      # the issues' defaults (300,000 companies ...): hours

Each script runs as its own subprocess with ``--json``; its full output is kept in --work
(default /tmp/cocli-fs-bench-all/<scale>/<name>.log) together with results.json, so
``--render-only`` can rewrite the block and charts from the last run without measuring again.
A benchmark that crashes or times out gets a row saying so; the others still run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PY = ROOT / ".venv" / "bin" / "python"
DOC = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"
BEGIN, END = "<!-- bench/all:begin -->", "<!-- bench/all:end -->"
INTRO_LINE = (
    "`scripts/bench/all --scale small|medium|full` runs them all and rewrites the generated\n"
    "block just below (tables and charts in docs/img/); the sections after it are by hand."
)

# Per scale, each script's size flags. full = the scripts' own defaults (the issues' sizes).
SCALES: dict[str, dict[str, list[str]]] = {
    "small": {
        "replay": ["-n", "200000", "-m", "60000", "--repeat", "1"],
        "fs": ["--companies", "5000", "--samples", "1000", "--writes", "1000"],
        "gossip": ["-n", "200", "-b", "1000"],
        "compact": ["-n", "5000", "-m", "20000", "-s", "1000"],
        "s3sync": ["--companies", "2000", "--updates", "500", "--new", "10", "--notes", "20"],
    },
    "medium": {
        "replay": ["-n", "500000", "-m", "150000", "--repeat", "2"],
        "fs": ["--companies", "50000", "--samples", "5000", "--writes", "5000"],
        "gossip": ["-n", "500", "-b", "5000"],
        "compact": ["-n", "20000", "-m", "100000", "-s", "3000"],
        "s3sync": ["--companies", "30000", "--updates", "2000", "--new", "30", "--notes", "50"],
    },
    "full": {"replay": [], "fs": [], "gossip": [], "compact": [], "s3sync": []},
}
# Extra compaction tree sizes (same records) for the time-vs-companies chart.
COMPACT_EXTRA: dict[str, list[str]] = {"small": ["5000"], "medium": ["20000"], "full": ["30000"]}
TIMEOUT_S = {"small": 900, "medium": 3600, "full": 4 * 3600}
ORDER = ["replay", "fs", "gossip", "compact", "s3sync"]


# --- running ------------------------------------------------------------------------------------


def ensure_bench_deps() -> None:
    """matplotlib and the aws CLI come from the ``bench`` extra; install its requirements into
    .venv when missing (only those: reinstalling the project itself would rebuild its C code)."""
    have_mpl = subprocess.run([str(PY), "-c", "import matplotlib"], capture_output=True)
    if have_mpl.returncode == 0 and (ROOT / ".venv" / "bin" / "aws").exists():
        return
    with open(ROOT / "pyproject.toml", "rb") as f:
        reqs = tomllib.load(f)["project"]["optional-dependencies"]["bench"]
    print(f"bench/all: installing the bench extra into .venv: {' '.join(reqs)}", flush=True)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", *reqs], check=True)


def parse_json(out: str) -> Any:
    """The last JSON object printed at the start of a line (scripts print text around it)."""
    dec = json.JSONDecoder()
    found = None
    for m in re.finditer(r"^\{", out, re.M):
        try:
            found, _ = dec.raw_decode(out[m.start() :])
        except json.JSONDecodeError:
            continue
    if found is None:
        raise ValueError("no JSON object in the output")
    return found


def run_script(
    name: str, argv: list[str], work: Path, timeout: float, tag: str = ""
) -> dict[str, Any]:
    cmd = [str(PY.relative_to(ROOT)), "-u", f"scripts/bench/{name}.py", *argv, "--json"]
    log = work / f"{name}{'-' + tag if tag else ''}.log"
    print(f"bench/all: {shlex.join(cmd)}  (log: {log})", flush=True)
    load0 = os.getloadavg()
    t0 = time.monotonic()
    entry: dict[str, Any] = {"command": shlex.join(cmd), "load_before": load0, "log": str(log)}
    with open(log, "w") as f:
        # Its own process group: on a timeout the whole benchmark (mounts, nodes, servers) gets
        # SIGINT first, so the scripts' finally blocks unmount and stop what they started.
        p = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=f, text=True, start_new_session=True
        )
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGINT)
            try:
                out, _ = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                out, _ = p.communicate()
            entry["timed_out"] = True
    with open(log, "a") as f:
        f.write("\n--- stdout ---\n" + out)
    entry["rc"] = p.returncode
    if entry.get("timed_out"):
        entry["error"] = f"timed out after {timeout:.0f} s (see {log})"
    else:
        try:
            entry["result"] = parse_json(out)
        except ValueError as e:
            entry["error"] = f"exit {p.returncode}, {e} (see {log})"
    entry["wall_s"] = time.monotonic() - t0
    entry["load_after"] = os.getloadavg()
    state = entry.get("error") or f"exit {entry['rc']}"
    print(f"bench/all: {name} done in {entry['wall_s']:.0f} s ({state})", flush=True)
    return entry


def run_all(scale: str, only: list[str], work: Path) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for name in ORDER:
        if name not in only:
            continue
        argv = list(SCALES[scale][name])
        if name == "compact":
            argv += ["--dir", str(work / "compact-trees")]
            big = argv[argv.index("-m") + 1] if "-m" in argv else "300000"
            runs["compact"] = run_script(name, argv, work, TIMEOUT_S[scale], tag=big)
            extra = []
            small = argv[argv.index("-s") + 1] if "-s" in argv else "3000"
            for m in COMPACT_EXTRA[scale]:
                a2 = [*SCALES[scale][name], "--dir", str(work / "compact-trees")]
                a2 = _set_flag(a2, "-m", m)
                a2 = _set_flag(a2, "-s", small)
                extra.append(run_script(name, a2, work, TIMEOUT_S[scale], tag=m))
            runs["compact"]["extra"] = extra
        elif name == "s3sync":
            argv += ["--dir", str(work / "s3sync")]
            runs[name] = run_script(name, argv, work, TIMEOUT_S[scale])
        elif name == "fs":
            (work / "fs").mkdir(exist_ok=True)
            argv += ["--dir", str(work / "fs")]
            runs[name] = run_script(name, argv, work, TIMEOUT_S[scale])
        else:
            runs[name] = run_script(name, argv, work, TIMEOUT_S[scale])
    return runs


def _set_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


# --- formatting ---------------------------------------------------------------------------------


def num(x: float, unit: str = "") -> str:
    """Readable numbers: thousands separated, 3 significant digits for small ones."""
    if x is None:
        return "—"
    ax = abs(x)
    if ax >= 1000:
        s = f"{x:,.0f}"
    elif ax >= 100:
        s = f"{x:.0f}"
    elif ax >= 10:
        s = f"{x:.1f}"
    elif ax >= 1:
        s = f"{x:.2f}"
    else:
        s = f"{x:.3g}"
    return s + (f" {unit}" if unit else "")


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    r = a / b
    return f"{r:.3g}×" if r < 10 else f"{r:,.0f}×"


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**PASS**" if ok else "**FAIL**")


Row = tuple[str, str, str, str, str, str]  # metric, ours, reference, ratio, bar, result


def table(rows: list[Row]) -> list[str]:
    out = [
        "| metric | ours | reference | ratio (ours ÷ ref) | bar | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


# --- one section per benchmark ------------------------------------------------------------------


def sec_replay(r: dict[str, Any], charts: Charts) -> tuple[list[str], list[bool]]:
    load, split, cocli = r["load"], r["split"], r["cocli"]
    rate = load["records"] / load["seconds"]
    cpu_rate = load["records"] / load["cpu_seconds"]
    split_rate = split["records"] / split["seconds"]
    cocli_rate = cocli["records"] / cocli["seconds"]
    entries = max(load["entries"], 1)
    mib_per_m = load["rss_delta"] / entries * 1e6 / 2**20
    cocli_mib_per_m = cocli["rss_delta"] / max(cocli["records"], 1) * 1e6 / 2**20
    ok_rate, ok_mem = rate >= 200_000, mib_per_m <= 1024
    rows: list[Row] = [
        ("replay rate, wall (records/s)", num(rate), f"naive cocli reader {num(cocli_rate)}",
         ratio(rate, cocli_rate), "≥ 200,000", verdict(ok_rate)),
        ("replay rate, CPU time (records/s)", num(cpu_rate), "—", "—", "(wall is the bar)", "—"),
        ("replay time (s)", num(load["seconds"]), f"split only {num(split['seconds'])}",
         ratio(load["seconds"], split["seconds"]), "—", "—"),
        ("overlay memory per 1,000,000 entries (MiB)", num(mib_per_m),
         f"naive cocli reader {num(cocli_mib_per_m)}", ratio(mib_per_m, cocli_mib_per_m),
         "≤ 1,024", verdict(ok_mem)),
    ]
    head = (
        f"{r['records']:,} records over {r['companies']:,} companies "
        f"({r['bytes'] / 2**20:.0f} MiB of journals), {load['entries']:,} live entries, "
        f"{load['corrupt']} corrupt; memory is the RSS delta of a fresh process, scaled per 1M."
    )
    charts.bar_replay(rate, split_rate, cocli_rate)
    return [head, "", *table(rows)], [ok_rate, ok_mem]


FS_READS = ["ls -l cold", "ls -l warm", "stat", "stat warm", "cat warm", "find", "stat interleaved"]


def sec_fs(r: dict[str, Any], n: dict[str, str], charts: Charts) -> tuple[list[str], list[bool]]:
    ours, mfs = r.get("cocli-fs", {}), r.get("mergerfs", {})
    uni, nat = r.get("unionfs", {}), r.get("native", {})
    rows: list[Row] = []
    oks: list[bool] = []
    for op in FS_READS:
        ok = ours[op] <= mfs[op]
        oks.append(ok)
        extra = f"; unionfs {num(uni[op])}" if op in uni else ""
        extra += f"; native {num(nat[op])}" if op in nat else ""
        rows.append((f"`{op}` (s)", num(ours[op]), f"mergerfs {num(mfs[op])}{extra}",
                     ratio(ours[op], mfs[op]), "≤ mergerfs", verdict(ok)))
    ok = ours["cat overlay"] <= 1.5 * ours["cat plain"]
    oks.append(ok)
    rows.append(("`cat` warm, files with overlay (s)", num(ours["cat overlay"]),
                 f"same count without overlay {num(ours['cat plain'])}",
                 ratio(ours["cat overlay"], ours["cat plain"]), "≤ 1.5×", verdict(ok)))
    writes = int(n["writes"])
    wr = writes / ours["writes"]
    ref_wr = writes / mfs["writes"] if mfs.get("writes") else None
    ok = wr >= 2000
    oks.append(ok)
    rows.append((f"durable field writes/s, {n['writers']} threads", num(wr),
                 f"mergerfs plain note writes {num(ref_wr) if ref_wr else '—'}", ratio(wr, ref_wr),
                 "≥ 2,000/s", verdict(ok)))
    seq = ours["writes sequential/s"]
    ok = seq >= 2000
    oks.append(ok)
    rows.append(("durable field writes/s, one sequential writer", num(seq), "—", "—",
                 "≥ 2,000/s", verdict(ok)))
    head = (
        f"{int(n['companies']):,} companies (5 % with overlay fields); `stat`/`cat` of "
        f"{int(n['samples']):,} random `_index.md`; {writes:,} writes. Times in seconds per "
        "whole operation, each file system mounted fresh, page cache dropped before the cold step; "
        "`stat interleaved`: the first-pass `stat` again, all mounted at once and measured in "
        "turns (entities without overlay fields)."
    )
    charts.bars_fs(r)
    return [head, "", *table(rows)], oks


def sec_gossip(r: dict[str, Any], charts: Charts) -> tuple[list[str], list[bool]]:
    udp = r["udp_reference"]
    rows: list[Row] = []
    oks: list[bool] = []
    for key, what in (("latency_mount", "mount → peer mount"), ("latency_headless", "headless")):
        lat = r.get(key)
        if not lat:
            continue
        ok = lat["p99_ms"] <= 10
        oks.append(ok)
        nz = r["wakeup_noise_mount" if key == "latency_mount" else "wakeup_noise_headless"]
        rows.append((f"write visible, {what}: p50 (ms)", num(lat["p50_ms"]),
                     f"bare UDP one-way p50 {num(udp['p50_ms'])}",
                     ratio(lat["p50_ms"], udp["p50_ms"]), "—", "—"))
        rows.append((f"write visible, {what}: p99 (ms), {lat['samples']} samples",
                     num(lat["p99_ms"]), f"bare UDP one-way p99 {num(udp['p99_ms'])}",
                     ratio(lat["p99_ms"], udp["p99_ms"]), "≤ 10 ms", verdict(ok)))
        rows.append((f"write visible, {what}: max (ms)", num(lat["max_ms"]),
                     f"1 ms sleep woke late by p99 {num(nz['p99_ms'])}, max {num(nz['max_ms'])}",
                     "—", "—", "—"))
    b = r["batch"]
    ok = b["everywhere_after_durable_s"] <= 1.0
    oks.append(ok)
    rows.append((f"batch of {b['records']:,} everywhere after durable (s)",
                 num(b["everywhere_after_durable_s"]),
                 f"local durable write of the batch {num(b['local_durable_s'])}",
                 ratio(b["everywhere_after_durable_s"], b["local_durable_s"]), "≤ 1 s",
                 verdict(ok)))
    l20, l0 = r["converge_lossy"], r["converge_lossless"]
    ok = l20["converged_after_writes_s"] <= 5.0
    oks.append(ok)
    rows.append((f"all equal after writes stop, {l20['loss'] * 100:.0f} % loss (s)",
                 num(l20["converged_after_writes_s"]),
                 f"0 % loss {num(l0['converged_after_writes_s'])}",
                 ratio(l20["converged_after_writes_s"], l0["converged_after_writes_s"]),
                 "≤ 5 s", verdict(ok)))
    rl = l20["relay"]
    head = (
        f"Three nodes on loopback. Relay at {l20['loss'] * 100:.0f} % loss dropped "
        f"{rl.get('dropped', '?')} of {rl.get('in', '?')} datagrams ({l20['records']:,} records)."
    )
    charts.cdf_gossip(r)
    return [head, "", *table(rows)], oks


def sec_compact(entry: dict[str, Any], charts: Charts) -> tuple[list[str], list[bool]]:
    r = entry["result"]
    runs = r["runs"]
    small = runs["same/small"]
    rows: list[Row] = []
    oks: list[bool] = []
    for name, x in runs.items():
        big = x["companies"] == r["companies"]
        ok = x["seconds"] <= r["bar_seconds"] if big else None
        if ok is not None:
            oks.append(ok)
        rows.append((f"{name}: {x['records']:,} records, {x['entities']:,} entities, "
                     f"{x['companies']:,} companies (s)", num(x["seconds"]),
                     f"same/small {num(small['seconds'])}" if name != "same/small" else "—",
                     ratio(x["seconds"], small["seconds"]) if name != "same/small" else "—",
                     f"≤ {r['bar_seconds']:.0f} s" if big else "—", verdict(ok)))
    cpu_ratio = runs["same/big"]["cpu"] / max(small["cpu"], 1e-9)
    rows.append(("same records, CPU time big ÷ small tree (user + sys, with workers)",
                 f"{cpu_ratio:.2f}×", f"company ratio {r['companies'] / r['small']:,.0f}×",
                 ratio(cpu_ratio, r["companies"] / r["small"]), "—", "—"))
    flat = r["same_ratio"] <= 2.0
    oks.append(flat)
    comp_ratio = r["companies"] / r["small"]
    rows.append(("same records, time ratio big ÷ small tree", f"{r['same_ratio']:.2f}×",
                 f"company ratio {comp_ratio:,.0f}×", ratio(r["same_ratio"], comp_ratio),
                 "≤ 2× (time does not follow companies)", verdict(flat)))
    head = (
        f"{r['records']:,} records from three nodes compacted into trees of {r['small']:,} and "
        f"{r['companies']:,} companies (the §9 bar is for 50,000 records over 300,000)."
    )
    points = [(x["companies"], n, x["seconds"]) for n, x in runs.items()]
    for e in entry.get("extra", []):
        if "result" in e:
            points += [(x["companies"], n, x["seconds"]) for n, x in e["result"]["runs"].items()]
    charts.line_compact(points, r["records"], r["bar_seconds"])
    return [head, "", *table(rows)], oks


def sec_s3(r: dict[str, Any], charts: Charts) -> tuple[list[str], list[bool]]:
    rows: list[Row] = []
    oks: list[bool] = []
    first = r["rounds"][0]

    def total(rd: dict[str, Any], tool: str) -> tuple[float, dict[str, int]]:
        reqs: dict[str, int] = {}
        for step in ("push", "pull"):
            for k, v in rd[f"{tool}_{step}"]["requests"].items():
                reqs[k] = reqs.get(k, 0) + v
        return rd[f"{tool}_push"]["seconds"] + rd[f"{tool}_pull"]["seconds"], reqs

    for rd in r["rounds"]:
        t_us, q_us = total(rd, "ours")
        t_aws, q_aws = total(rd, "aws")
        bar = rd is first
        ok = t_aws / t_us >= 50 if bar else None
        if ok is not None:
            oks.append(ok)
        rows.append((f"push + pull, {rd['case']} (s)", num(t_us), f"aws s3 sync {num(t_aws)}",
                     ratio(t_us, t_aws) + f" ({t_aws / t_us:.0f}× faster)",
                     "≥ 50× faster" if bar else "—", verdict(ok)))
        lists_us, lists_aws = q_us.get("LIST", 0), q_aws.get("LIST", 0)
        ok = lists_us <= 5 if bar else None
        if ok is not None:
            oks.append(ok)
        rows.append((f"LIST requests, {rd['case']}", str(lists_us), f"aws s3 sync {lists_aws}",
                     ratio(lists_us, lists_aws), "≤ 5" if bar else "—", verdict(ok)))
        rows.append((f"all requests, {rd['case']}", f"{sum(q_us.values()):,}",
                     f"aws s3 sync {sum(q_aws.values()):,}",
                     ratio(sum(q_us.values()), sum(q_aws.values())), "—", "—"))
    same = r["peers_equal"]
    ok = all(same.values())
    oks.append(ok)
    rows.append(("peers equal the worker's files afterwards", str(same["cocli-fs"]),
                 f"aws {same['aws']}", "—", "both equal", verdict(ok)))
    head = (
        f"{r['companies']:,} companies ({2 * r['companies']:,} objects) in a local S3 server "
        f"(moto, loopback); one node changed {r['updates']:,} fields, added {r['new']} "
        f"companies and {r['notes']} notes; push on it, pull on a peer. Requests counted at "
        "the server."
    )
    charts.bars_s3(total(first, "ours")[1], total(first, "aws")[1], first["case"])
    return [head, "", *table(rows)], oks


# --- charts -------------------------------------------------------------------------------------


class Charts:
    """PNG charts into docs/img/; each method records the file it wrote."""

    def __init__(self, scale: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.scale = scale
        self.files: dict[str, str] = {}
        IMG.mkdir(parents=True, exist_ok=True)

    def _save(self, fig: Any, key: str, title: str) -> None:
        name = f"bench-{key}.png"
        fig.tight_layout()
        fig.savefig(IMG / name, dpi=110)
        self.plt.close(fig)
        self.files[key] = f"![{title}](img/{name})"

    def cdf_gossip(self, r: dict[str, Any]) -> None:
        fig, ax = self.plt.subplots(figsize=(7, 4))
        for key, label in (("latency_mount", "mount → peer mount"),
                           ("latency_headless", "headless (durable → applied)")):
            xs = sorted((r.get(key) or {}).get("samples_ms", []))
            if xs:
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.step(xs, ys, where="post", label=f"{label}, {len(xs)} samples")
        ax.axvline(10, color="red", ls="--", lw=1, label="bar: p99 ≤ 10 ms")
        ax.axhline(0.99, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("write visible on a peer (ms, log scale)")
        ax.set_ylabel("fraction of writes")
        ax.set_title(f"Gossip: write-to-peer latency CDF ({self.scale} scale)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        self._save(fig, "gossip-latency", "gossip latency CDF")

    def line_compact(self, points: list[tuple[int, str, float]], records: int, bar: float) -> None:
        fig, ax = self.plt.subplots(figsize=(7, 4))
        by: dict[str, list[tuple[int, float]]] = {}
        for m, name, s in points:
            kind = name.split("/")[0]
            by.setdefault(kind, []).append((m, s))
        labels = {
            "same": "same records (a fixed set of entities)",
            "spread": "spread: records/5 entities",
            "wide": "wide: records/2 entities",
        }
        for kind, pts in by.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=labels.get(kind, kind))
        same = sorted(by.get("same", []))
        if same:  # what a compaction that walked the tree would take: time ∝ companies
            m0, s0 = same[0]
            xs = [m0, max(p[0] for p in points)]
            ax.plot(xs, [s0 * x / m0 for x in xs], color="grey", ls=":",
                    label="if time followed company count")
        ax.axhline(bar, color="red", ls="--", lw=1, label=f"bar {bar:.0f} s (50,000 rec, 300k)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        from matplotlib.ticker import FuncFormatter

        plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 100 else f"{v:g}")
        # minor ticks labelled at 2 and 5 (× a power of ten) only: readable, not crowded
        some = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")
        ax.xaxis.set_major_formatter(plain)
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(some)
        ax.set_xlabel("companies in the tree (log)")
        ax.set_ylabel("compaction time (s, log)")
        ax.set_title(f"Compaction of {records:,} records vs tree size ({self.scale} scale)")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        self._save(fig, "compaction-vs-companies", "compaction time vs companies")

    def bars_fs(self, r: dict[str, dict[str, float]]) -> None:
        ops = [*FS_READS, "writes"]
        systems = [s for s in ("native", "mergerfs", "unionfs", "cocli-fs") if s in r]
        fig, ax = self.plt.subplots(figsize=(9, 4.5))
        w = 0.8 / max(len(systems), 1)
        for i, s in enumerate(systems):
            xs = [j + (i - (len(systems) - 1) / 2) * w for j in range(len(ops))]
            ax.bar(xs, [r[s].get(op, 0) for op in ops], w, label=s)
        ax.set_xticks(range(len(ops)), ops, rotation=15)
        ax.set_yscale("log")
        ax.set_ylabel("seconds per operation batch (log)")
        ax.set_title(f"Mount: time per operation batch ({self.scale} scale, lower is better)")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        self._save(fig, "mount-ops", "mount operation times")

    def bars_s3(self, ours: dict[str, int], aws: dict[str, int], case: str) -> None:
        kinds = [k for k in ("LIST", "GET", "HEAD", "PUT", "DELETE", "OTHER")
                 if ours.get(k) or aws.get(k)]
        fig, ax = self.plt.subplots(figsize=(7, 4))
        xs = range(len(kinds))
        for off, (label, c) in ((-0.2, ("cocli-fs sync", ours)), (0.2, ("aws s3 sync", aws))):
            vals = [c.get(k, 0) for k in kinds]
            bars = ax.bar([x + off for x in xs], vals, 0.4, label=label)
            for b, v in zip(bars, vals, strict=True):  # a zero has no bar on a log axis: say 0
                ax.annotate(f"{v:,}", (b.get_x() + b.get_width() / 2, max(v, 0.6)),
                            ha="center", va="bottom", fontsize=8)
        top = max([*ours.values(), *aws.values(), 1])
        ax.set_ylim(0.5, top * 3)
        ax.set_xticks(list(xs), kinds)
        ax.set_yscale("log")
        ax.set_ylabel("requests (log)")
        ax.set_title(f"S3 requests by kind, push + pull, {case} ({self.scale} scale)")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        self._save(fig, "s3-requests", "S3 requests by kind")

    def bar_replay(self, ours: float, split: float, cocli: float) -> None:
        fig, ax = self.plt.subplots(figsize=(7, 3.2))
        names = ["split only (C)", "cocli-fs NodeState.load", "naive cocli reader"]
        vals = [split, ours, cocli]
        ax.barh(names, vals, color=["#999999", "#1f77b4", "#ff7f0e"])
        for i, v in enumerate(vals):
            ax.annotate(f"{v:,.0f}/s", (v, i), va="center", fontsize=8)
        ax.axvline(200_000, color="red", ls="--", lw=1, label="bar 200,000/s")
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k"))
        ax.set_xlim(0, max(vals) * 1.2)
        ax.set_xlabel("journal records per second (wall)")
        ax.set_title(f"Start-up replay ({self.scale} scale)")
        ax.legend(fontsize=8)
        self._save(fig, "replay-rate", "replay rate")


# --- the generated block ------------------------------------------------------------------------


TITLES = {
    "replay": "Start-up replay (replay.py)",
    "fs": "Mount (fs.py)",
    "gossip": "Gossip (gossip.py)",
    "compact": "Compaction (compact.py)",
    "s3sync": "S3 sync (s3sync.py)",
}
CHART_OF = {"replay": "replay-rate", "fs": "mount-ops", "gossip": "gossip-latency",
            "compact": "compaction-vs-companies", "s3sync": "s3-requests"}


def flag_values(argv: list[str]) -> dict[str, str]:
    out = {}
    for i, a in enumerate(argv[:-1]):
        if a.startswith("-"):
            out[a.lstrip("-")] = argv[i + 1]
    return out


def render(data: dict[str, Any]) -> str:
    charts = Charts(data["scale"])
    m = data["machine"]
    lines = [
        BEGIN,
        "<!-- generated by scripts/bench/all: do not edit by hand, rerun it -->",
        "",
        f"## All benchmarks together: {data['scale']} scale (scripts/bench/all)",
        "",
        f"* **date**: {data['date']} (UTC); whole run {data['wall_s'] / 60:.1f} min",
        f"* **machine**: {m['nproc']} cores, Python {m['python']}, {m['system']}; load average "
        f"{fmt_load(m['load_before'])} before, {fmt_load(m['load_after'])} after (1/5/15 min)."
        + load_note(data),
        f"* **command**: `{data['command'].replace(' --no-doc', '')}`",
        f"* **scale**: {data['scale']} — the §9 bars are stated for the full sizes; at smaller "
        "scales a bar is still applied to the number measured, as is.",
        "",
    ]
    summary: list[str] = []
    sections: list[str] = []
    for name in ORDER:
        entry = data["runs"].get(name)
        if entry is None:
            continue
        sec = [f"### {TITLES[name]}", "", f"`{entry['command']}` — {entry['wall_s']:.0f} s, "
               f"load {fmt_load(entry['load_before'])} → {fmt_load(entry['load_after'])}", ""]
        oks: list[bool] = []
        if "result" not in entry:
            sec.append(f"**did not produce results**: {entry.get('error')}")
            summary.append(f"{TITLES[name]}: **ERROR**")
        else:
            try:
                body, oks = build_section(name, entry, charts)
                sec += body
            except (KeyError, TypeError, ZeroDivisionError) as e:
                sec.append(f"**could not read its results**: {type(e).__name__}: {e}")
                summary.append(f"{TITLES[name]}: **ERROR**")
            else:
                passed = sum(oks)
                word = "PASS" if passed == len(oks) else "FAIL"
                summary.append(f"{TITLES[name]}: **{word}** ({passed}/{len(oks)} bars)")
            if entry.get("rc") not in (0, None):
                sec += ["", f"(the script exited with {entry['rc']}: it reports a missed bar "
                        "or a failed check; its log has the details)"]
            chart = charts.files.get(CHART_OF[name])
            if chart:
                sec += ["", chart]
        sections += [*sec, ""]
    lines += ["Summary: " + "; ".join(summary) + ".", "", *sections, END]
    return "\n".join(lines)


def build_section(name: str, entry: dict[str, Any], charts: Charts) -> tuple[list[str], list[bool]]:
    r = entry["result"]
    if name == "replay":
        return sec_replay(r, charts)
    if name == "fs":
        argv = shlex.split(entry["command"])
        n = {"companies": "300000", "samples": "10000", "writes": "10000", "writers": "16"}
        n.update(flag_values(argv))
        return sec_fs(r, n, charts)
    if name == "gossip":
        return sec_gossip(r, charts)
    if name == "compact":
        return sec_compact(entry, charts)
    return sec_s3(r, charts)


def load_note(data: dict[str, Any]) -> str:
    """Say so when the machine was busy (the highest 1-minute load seen)."""
    nproc = data["machine"]["nproc"] or 1
    peak = max(
        [data["machine"]["load_before"][0], data["machine"]["load_after"][0]]
        + [e[k][0] for e in data["runs"].values() for k in ("load_before", "load_after")]
    )
    before = data["machine"]["load_before"][0]
    if before <= nproc / 2 and peak <= nproc:
        return ""
    return (
        f" The machine was busy: the 1-minute load was {before:.1f} on {nproc} cores "
        f"before this run started and up to {peak:.1f} during it (the figure counts this run's "
        "own processes as well as anything else running), so wall times may include waiting "
        "for a CPU; ratios within one run are the fairer numbers."
    )


def fmt_load(la: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in la)


def write_block(block: str) -> None:
    """Re-read the page just before writing; replace only our block (or insert it after the
    introduction, before the first section) and add the intro line once."""
    text = DOC.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + block + text[b:]
    else:
        first = text.find("\n## ")
        if first < 0:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        else:
            text = text[: first + 1] + block + "\n\n" + text[first + 1 :]
    if "scripts/bench/all" not in text.split(BEGIN)[0]:
        head, rest = text.split(BEGIN, 1)
        head = head.rstrip("\n") + "\n\n" + INTRO_LINE + "\n\n"
        text = head + BEGIN + rest
    DOC.write_text(text, encoding="utf-8")


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", choices=list(SCALES), default="small")
    ap.add_argument("--only", default=",".join(ORDER), help=f"subset of {','.join(ORDER)}")
    ap.add_argument("--work", type=Path, help="logs and results.json (default /tmp/...)")
    ap.add_argument("--render-only", action="store_true", help="rewrite from the last results")
    ap.add_argument("--no-doc", action="store_true", help="measure, but leave docs/ alone")
    args = ap.parse_args()
    work = args.work or Path("/tmp/cocli-fs-bench-all") / args.scale
    work.mkdir(parents=True, exist_ok=True)
    results = work / "results.json"
    ensure_bench_deps()
    if args.render_only:
        data = json.loads(results.read_text())
    else:
        only = [x for x in args.only.split(",") if x]
        unknown = set(only) - set(ORDER)
        if unknown:
            ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
        load0 = os.getloadavg()
        t0 = time.monotonic()
        start = dt.datetime.now(dt.UTC)
        runs = run_all(args.scale, only, work)
        data = {
            "scale": args.scale,
            "date": start.strftime("%Y-%m-%d %H:%M"),
            "command": "scripts/bench/all " + shlex.join(sys.argv[1:]),
            "wall_s": time.monotonic() - t0,
            "machine": {
                "nproc": os.cpu_count(),
                "python": platform.python_version(),
                "system": f"{platform.system()} {platform.release()}",
                "load_before": load0,
                "load_after": os.getloadavg(),
            },
            "runs": runs,
        }
        results.write_text(json.dumps(data, indent=1))
    if args.no_doc:
        print(f"bench/all: results in {results}")
        return 0
    block = render(data)
    write_block(block)
    print(f"bench/all: wrote the block of {DOC.relative_to(ROOT)} and charts in docs/img/")
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
