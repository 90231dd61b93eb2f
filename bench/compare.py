"""Compare two results directories run by run: the regression gate for CI.

Runs are matched by spec (``spec_id``: the hash of the spec, seed included; where a
directory holds a spec on several devices, the same device is preferred), so every check is
one run against the same run, never a mean over seeds. A difference in runtime (device,
key package versions) is noted. Every record kind is compared the
same way: a surrogate job's metrics are its student's, a timing job has timings only. Accuracy metrics (lower is better)
regress when ``candidate > baseline * (1 + rel) + abs``; timings are divided by each
record's ``timing.reference_workload_s`` (a fixed torch workload timed by the worker just
before training) so that a slower or busier machine is not a regression, and regress when
the normalised ratio exceeds ``timing_ratio``. Without that reference on both sides the raw
ratio can only warn. Peak memory does not scale with machine speed: raw ratio against
``memory_ratio``.

Example (forces RMSE 20 % worse, epoch 1.7x slower, records without the reference workload):
    $ python -m bench compare reports/main reports/pr --json compare.json
    | run                                  | metric                  | baseline | candidate | change          | ...
    | m3gnet finetune n=15 seed=0 ad9731f9 | status                  | ok       | ok        |                 | ok
    |                                      | forces_rmse_mev_per_ang | 340.4    | 408.5     | +68.09 (+20.0%) | REGR...
    |                                      | s_per_epoch             | 2.49     | 4.234     | x1.70           | warn
    ...
    compare: 36 runs matched, 265 checks: 1 REGRESSION, 0 improved, 1 warn; 0 missing in candidate, ... -> FAIL

Exit status 0: no regression, 1: regression, 2: unusable input (the message names the path).
Settings can also come from a TOML file (``--config``; a ``[compare]`` table or top level):
    [compare]
    timing_ratio = 1.5
    memory_ratio = 1.3
    [compare.tolerances]
    forces_rmse_mev_per_ang = 0.1                         # relative
    energy_rmse_mev_per_atom = { rel = 0.05, abs = 1.0 }  # relative and absolute (meV/atom)
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

from bench.core.contract import Record
from bench.store import Store, StoreError

# metric -> (relative, absolute in the metric's unit); absolute terms absorb float noise
# on near-perfect metrics where 5 % of a tiny number would flag jitter.
DEFAULT_TOLERANCES = {
    "energy_rmse_mev_per_atom": (0.05, 0.5),
    "energy_mae_mev_per_atom": (0.05, 0.5),
    "forces_rmse_mev_per_ang": (0.05, 2.0),
    "forces_mae_mev_per_ang": (0.05, 2.0),
    "stress_rmse_gpa": (0.05, 0.01),
}
DEFAULT_TIMING_RATIO = 1.5
DEFAULT_MEMORY_RATIO = 1.3


def _us_per_atom(atoms_per_s):
    return 1e6 / atoms_per_s if atoms_per_s else None


# compared name -> (timing key, transform); all "lower is better" after the transform.
TIMINGS = {
    "step_s_per_structure": ("step_s_per_structure", None),
    "s_per_epoch": ("s_per_epoch", None),
    "inference_us_per_atom": ("inference_atoms_per_s", _us_per_atom),
}
MEMORY = "peak_rss_mb"
SETTINGS = {"tolerances": dict, "timing_ratio": (int, float), "memory_ratio": (int, float), "timing": bool,
            "allow_missing": bool}


class CompareError(ValueError):
    """Input the comparison cannot use; the message names the path."""


def load_records(path: Path) -> list[Record]:
    path = Path(path)
    if not path.is_dir():
        raise CompareError(f"{path}: no such results directory")
    try:
        records = Store(path).all()
    except StoreError as exc:
        raise CompareError(str(exc)) from exc
    if not records:
        raise CompareError(f"{path / 'records'}: no records")
    return records


def load_settings(path: Path) -> dict:
    """Keyword arguments for :func:`compare` from a TOML file; unknown keys are errors (typos)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CompareError(f"{path}: {exc}") from exc
    data = data.get("compare", data)
    unknown = set(data) - set(SETTINGS)
    if unknown:
        raise CompareError(f"{path}: unknown compare settings {sorted(unknown)}; known: {', '.join(SETTINGS)}")
    wrong = [f"{k} = {v!r}" for k, v in data.items() if not isinstance(v, SETTINGS[k])]
    if wrong:
        raise CompareError(f"{path}: wrong type for {', '.join(wrong)}")
    return data


def resolve_tolerances(overrides: dict | None) -> dict[str, tuple[float, float]]:
    """Defaults updated by ``{metric: rel | (rel, abs) | {"rel": .., "abs": ..}}``."""
    out = dict(DEFAULT_TOLERANCES)
    for name, value in (overrides or {}).items():
        if name not in out:
            raise CompareError(f"unknown metric {name!r} in tolerances; known: {', '.join(out)}")
        rel, abs_ = out[name]
        try:
            if isinstance(value, dict):
                rel, abs_ = value.get("rel", rel), value.get("abs", abs_)
            elif isinstance(value, (tuple, list)):
                rel, abs_ = value
            else:
                rel = value
            out[name] = (float(rel), float(abs_))
        except (TypeError, ValueError) as exc:
            raise CompareError(f"tolerance {name}={value!r}: expected a relative number, (rel, abs) "
                               "or {rel, abs}") from exc
    return out


def parse_tolerances(items: list[str] | None) -> dict[str, float]:
    """``["forces_rmse_mev_per_ang=0.1,energy_rmse_mev_per_atom=10%"]`` -> relative tolerances."""
    out = {}
    for item in filter(None, (x.strip() for text in items or () for x in text.split(","))):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value[:-1]) / 100 if value.endswith("%") else float(value)
        except ValueError as exc:
            raise CompareError(f"--tolerance {item!r}: expected metric=relative, "
                               "e.g. forces_rmse_mev_per_ang=0.1") from exc
    return out


def label(record: Record) -> str:
    """The run's label and the start of its spec id."""
    return f"{record.spec.label} {record.spec_id[:8]}"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _accuracy(name: str, b, c, rel: float, abs_: float) -> dict | None:
    if not _finite(b):
        return None
    row = {"metric": name, "kind": "accuracy", "baseline": b, "candidate": c if _finite(c) else None}
    if not _finite(c):
        return row | {"change": "", "verdict": "REGRESSION", "note": "missing or not finite in candidate"}
    rel_change = (c - b) / b if b else math.inf if c > b else 0.0
    row["change"] = f"{c - b:+.4g} ({rel_change:+.1%})"
    tol = f"tolerance {rel:.0%} + {abs_:g}"
    if c > b * (1 + rel) + abs_:
        return row | {"verdict": "REGRESSION", "note": f"worse beyond {tol}"}
    if c < b * (1 - rel) - abs_:
        return row | {"verdict": "improved", "note": f"better beyond {tol}"}
    return row | {"verdict": "ok", "note": ""}


def _ratio_row(name: str, kind: str, b, c, threshold: float, caveat: str | None,
               ref: tuple[float, float] | None = None) -> dict:
    """Candidate/baseline ratio (divided by the reference workloads ``ref`` when given) against
    ``threshold``; a caveat turns a failure into a warning."""
    raw = c / b if b else math.inf
    ratio = raw * ref[0] / ref[1] if ref else raw
    change = f"x{ratio:.2f} (raw x{raw:.2f})" if ref else f"x{raw:.2f}"
    row = {"metric": name, "kind": kind, "baseline": b, "candidate": c, "change": change, "ratio": ratio}
    if ratio > threshold:
        verdict = "warn" if caveat else "REGRESSION"
        return row | {"verdict": verdict, "note": "; ".join(filter(None, [f"> x{threshold:g}", caveat]))}
    if ratio < 1 / threshold:
        return row | {"verdict": "improved", "note": caveat or ""}
    return row | {"verdict": "ok", "note": ""}


def _timing_rows(base: Record, cand: Record, timing_ratio: float, memory_ratio: float) -> list[dict]:
    bt, ct = base.timing.to_dict() if base.timing else {}, cand.timing.to_dict() if cand.timing else {}
    b_dev, c_dev = base.runtime.device, cand.runtime.device
    device_caveat = f"device {b_dev} vs {c_dev}" if b_dev != c_dev else None
    b_ref, c_ref = bt.get("reference_workload_s"), ct.get("reference_workload_s")
    lacking = [side for side, ref in (("baseline", b_ref), ("candidate", c_ref)) if not (_finite(ref) and ref > 0)]
    normalised = not lacking
    ref_caveat = f"raw ratio: no reference_workload_s in {' and '.join(lacking)}" if lacking else None
    rows = []
    for name, (key, transform) in TIMINGS.items():
        b, c = bt.get(key), ct.get(key)
        if transform:
            b, c = (transform(b) if _finite(b) else None), (transform(c) if _finite(c) else None)
        if not (_finite(b) and b > 0):
            continue
        if not _finite(c):
            rows.append({"metric": name, "kind": "timing", "baseline": b, "candidate": None, "change": "",
                         "verdict": "warn", "note": "missing in candidate"})
            continue
        caveat = "; ".join(filter(None, [ref_caveat, device_caveat])) or None
        rows.append(_ratio_row(name, "timing", b, c, timing_ratio, caveat, (b_ref, c_ref) if normalised else None))
    if _finite(bt.get(MEMORY)) and _finite(ct.get(MEMORY)):
        rows.append(_ratio_row(MEMORY, "memory", bt[MEMORY], ct[MEMORY], memory_ratio, device_caveat))
    return rows


def _status_row(base: Record, cand: Record) -> dict:
    b, c = base.status, cand.status
    row = {"metric": "status", "kind": "status", "baseline": b, "candidate": c, "change": ""}
    reason = (cand.reason or "").strip().splitlines()
    reason = reason[-1][:100] if reason else ""
    if b == "ok" and c != "ok":
        return row | {"verdict": "REGRESSION", "note": reason}
    if b != "ok" and c == "ok":
        return row | {"verdict": "improved", "note": ""}
    if b == c == "skipped" or b == c == "ok":
        differs = sorted(k for k in {*base.runtime.packages, *cand.runtime.packages}
                         if base.runtime.packages.get(k) != cand.runtime.packages.get(k))
        note = "packages differ: " + ", ".join(
            f"{k} {base.runtime.packages.get(k)} vs {cand.runtime.packages.get(k)}" for k in differs) if differs else ""
        return row | {"verdict": "ok", "note": note}
    return row | {"verdict": "warn", "note": f"not ok on both sides; {reason}"}


def _by_spec(records: list[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(r.spec_id, []).append(r)
    return out


def _pair(base: list[Record], cand: list[Record]) -> tuple[Record, Record]:
    """One record of a spec from each side, on the same device where both have one."""
    for b in base:
        for c in cand:
            if b.runtime.device == c.runtime.device:
                return b, c
    return base[0], cand[0]


def compare(baseline: list[Record], candidate: list[Record], tolerances: dict | None = None,
            timing_ratio: float = DEFAULT_TIMING_RATIO, memory_ratio: float = DEFAULT_MEMORY_RATIO,
            timing: bool = True, allow_missing: bool = False) -> dict:
    """Every check of candidate against baseline records.

    Returns ``{"settings", "summary", "rows"}``; each row has spec_id, run, metric, kind,
    baseline, candidate, change, verdict (ok | improved | REGRESSION | warn | info), note.
    """
    tols = resolve_tolerances(tolerances)
    base, cand = _by_spec(baseline), _by_spec(candidate)
    common = sorted(set(base) & set(cand), key=lambda k: label(base[k][0]))
    if not common:
        b_keys = set().union(*(r.spec.to_dict() for rs in base.values() for r in rs))
        c_keys = set().union(*(r.spec.to_dict() for rs in cand.values() for r in rs))
        hint = (f"; spec fields only in baseline {sorted(b_keys - c_keys)}, only in candidate "
                f"{sorted(c_keys - b_keys)}" if b_keys != c_keys else "")
        raise CompareError(f"no run in common (runs are matched by the hash of their spec){hint}")
    rows = []

    def add(record: Record, row: dict | None) -> None:
        if row:
            rows.append({"spec_id": record.spec_id, "run": label(record)} | row)

    for key in common:
        b, c = _pair(base[key], cand[key])
        add(b, _status_row(b, c))
        if not (b.ok and c.ok):
            continue
        for name, (rel, abs_) in tols.items():
            add(b, _accuracy(name, b.metrics.value(name) if b.metrics else None,
                             c.metrics.value(name) if c.metrics else None, rel, abs_))
        if timing:
            for row in _timing_rows(b, c, timing_ratio, memory_ratio):
                add(b, row)
    for key in sorted(set(base) - set(cand)):
        b = base[key][0]
        add(b, {"metric": "run", "kind": "presence", "baseline": b.status, "candidate": None, "change": "",
                "verdict": "warn" if allow_missing else "REGRESSION", "note": "missing in candidate"})
    for key in sorted(set(cand) - set(base)):
        c = cand[key][0]
        add(c, {"metric": "run", "kind": "presence", "baseline": None, "candidate": c.status, "change": "",
                "verdict": "info", "note": "new in candidate"})
    count = {v: sum(r["verdict"] == v for r in rows) for v in ("REGRESSION", "improved", "warn")}
    summary = {"runs_matched": len(common), "checks": len(rows), "regressions": count["REGRESSION"],
               "improvements": count["improved"], "warnings": count["warn"],
               "missing_in_candidate": len(set(base) - set(cand)), "new_in_candidate": len(set(cand) - set(base)),
               "passed": count["REGRESSION"] == 0}
    settings = {"tolerances": {k: {"rel": r, "abs": a} for k, (r, a) in tols.items()},
                "timing_ratio": timing_ratio, "memory_ratio": memory_ratio, "timing": timing,
                "allow_missing": allow_missing}
    return {"settings": settings, "summary": summary, "rows": rows}


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def render(result: dict) -> str:
    """Markdown-ish table of every check, then the warnings and regressions again (the end of a
    long CI log is what gets read), and a summary line."""
    head = ("run", "metric", "baseline", "candidate", "change", "verdict", "note")
    body, last = [], None
    for r in result["rows"]:
        run = r["run"] if r["run"] != last else ""
        last = r["run"]
        body.append((run, r["metric"], _fmt(r["baseline"]), _fmt(r["candidate"]), r["change"], r["verdict"], r["note"]))
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
             for row in [head, *body]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for verdict, title in (("warn", "warnings"), ("REGRESSION", "regressions")):
        picked = [r for r in result["rows"] if r["verdict"] == verdict]
        if picked:
            lines += ["", f"{title}:"]
            lines += [f"  {r['run']}  {r['metric']}: {_fmt(r['baseline'])} -> {_fmt(r['candidate'])} "
                      f"{r['change']} {r['note']}".rstrip() for r in picked]
    s = result["summary"]
    lines += ["", f"compare: {s['runs_matched']} runs matched, {s['checks']} checks: {s['regressions']} REGRESSION, "
                  f"{s['improvements']} improved, {s['warnings']} warn; {s['missing_in_candidate']} missing in "
                  f"candidate, {s['new_in_candidate']} new in candidate -> {'PASS' if s['passed'] else 'FAIL'}"]
    return "\n".join(lines)


def run_compare(baseline: Path, candidate: Path, json_path: Path | None = None, **settings) -> tuple[int, str]:
    """Load both directories, compare, optionally write JSON; returns (exit code, text)."""
    result = compare(load_records(baseline), load_records(candidate), **settings)
    if json_path:
        Path(json_path).write_text(json.dumps({"baseline": str(baseline), "candidate": str(candidate)} | result,
                                              indent=1))
    return (0 if result["summary"]["passed"] else 1), render(result)


def cmd_compare(args) -> int:
    """The ``compare`` subcommand: a TOML file's settings, then the command line's on top."""
    settings = load_settings(args.config) if args.config else {}
    settings["tolerances"] = {**settings.get("tolerances", {}), **parse_tolerances(args.tolerance)}
    for key in ("timing_ratio", "memory_ratio"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.no_timing:
        settings["timing"] = False
    if args.allow_missing:
        settings["allow_missing"] = True
    code, text = run_compare(args.baseline, args.candidate, args.json, **settings)
    print(text)
    return code
