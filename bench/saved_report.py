"""The report's section on saved models and their MD stability (``bench.saved``,
``adapters.md``), placed beside the physical properties: a low test error does not prove a
model usable, so each saved model gets its file and how it was chosen, and each MD run its
verdict per temperature, its NVE drift and closest approach, and its dimer curves, under
the criteria the runs used.
"""

from __future__ import annotations

from bench.core.contract import MDSpec, Record, TrainSpec
from bench.saved import validation_forces
from bench.sections import Section, fmt

MAX_ROWS = 60


def _capped(rows: list[list[str]]) -> list[list[str]]:
    if len(rows) <= MAX_ROWS:
        return rows
    return [*rows[:MAX_ROWS], [f"… {len(rows) - MAX_ROWS} more rows (in the records)"] + [""] * (len(rows[0]) - 1)]


def _run(spec) -> list[str]:
    return [spec.dataset, f"{spec.model} ({spec.checkpoint})", spec.strategy, str(spec.train_size), str(spec.seed)]


def _order(r: Record) -> tuple:
    s = r.spec
    return s.dataset, s.model, s.checkpoint, s.strategy, s.train_size, s.seed, r.run_id


def _models_table(records: list[Record]) -> tuple[list[str], list[list[str]], int]:
    rows, pruned = [], 0
    for r in sorted(records, key=_order):
        art = r.artefacts.model
        if art.pruned:
            pruned += 1
            continue
        state = f"export failed: {art.error}" if art.error else art.path
        rows.append([*_run(r.spec), fmt(validation_forces(r)),
                     fmt(r.metrics.forces_rmse_mev_per_ang if r.metrics else None), art.format,
                     fmt(art.bytes / 1e6 if art.bytes else None, 2), (art.sha256 or "–")[:12], state])
    header = ["dataset", "model", "strategy", "train size", "seed", "val F RMSE (meV/Å)", "test F RMSE (meV/Å)",
              "format", "size (MB)", "sha256", "file"]
    return header, rows, pruned


def _criteria(spec: MDSpec, d_data: float | None) -> str:
    c = spec.criteria
    closest = f"{d_data:.2f} Å" if d_data else "?"
    temperatures = " and ".join(f"{t:g} K" for t in spec.temperatures_k)
    return (f"{spec.dataset}: from the {spec.cell_group} test frame with the lowest energy per atom, Langevin "
            f"dynamics (friction {spec.friction_per_fs:g}/fs, time step {spec.timestep_fs:g} fs) for "
            f"{spec.langevin_ps:g} ps at {temperatures}, each followed by {spec.nve_ps:g} ps of NVE. Blew up: a pair "
            f"closer than {c['min_distance_fraction']:g} × the closest pair in the DFT data ({closest}), the "
            f"temperature above {c['max_temperature_factor']:g} × the target, non-finite energy or forces, or an "
            f"error of the calculator; drifts: NVE total energy drifting by more than "
            f"{c['max_drift_mev_per_atom_per_ps']:g} meV/atom/ps (slope of a line fit). Dimer: two atoms in a "
            f"{spec.dimer['box_ang']:g} Å box, {spec.dimer['points']} distances from "
            f"{spec.dimer['r_min_fraction']:g} to {spec.dimer['r_max_fraction']:g} × that closest pair, energies "
            "relative to the atoms half a box apart; repulsive when the energy falls all the way from the "
            "shortest distance to the minimum and starts above the separate atoms.")


def _md_tables(records: list[Record]) -> tuple[list[str], list[list[str]], list[list[str]], dict[str, None]]:
    runs, dimers, criteria = [], [], {}
    for r in sorted(records, key=_order):
        lead = _run(r.spec)
        if not r.ok:
            runs.append([*lead, "–", "–", "–", "–", "–", "–", f"{r.status}: {(r.reason or '')[:200]}", "–"])
            continue
        md = r.md or {}
        criteria.setdefault(_criteria(r.spec, md.get("d_data_ang")), None)
        for t, run in md.get("runs", {}).items():
            planned = (run["langevin_steps"] + run["nve_steps"]) * r.spec.timestep_fs / 1000
            temps = " / ".join(fmt(run.get(k), 0) for k in ("langevin_mean_temperature_k", "nve_mean_temperature_k"))
            runs.append([*lead, t, f"{run['ps_run']:.2f} / {planned:.2f}", temps,
                         fmt(run.get("nve_drift_mev_per_atom_per_ps"), 2),
                         fmt(run.get("nve_max_deviation_mev_per_atom"), 1), fmt(run.get("min_distance_ang"), 2),
                         run["verdict"], f"{run['wall_s']:.0f} ({fmt(run.get('s_per_step'), 3)})"])
        for symbol, d in md.get("dimers", {}).items():
            if d.get("error"):
                dimers.append([*lead, symbol, f"error: {d['error']}", "–", "–", "–"])
                continue
            dimers.append([*lead, symbol, "yes" if d["repulsive"] else f"no: {d['why_not']}", fmt(d["r_min_ang"], 2),
                           fmt(d["well_depth_ev"], 2), fmt(d["energy_at_shortest_ev"], 2)])
    return runs, dimers, criteria


def saved_models_section(records: list[Record]) -> Section | None:
    """Rows per saved model and per MD run, or None when the sweep saved nothing."""
    saved = [r for r in records if isinstance(r.spec, TrainSpec) and r.artefacts and r.artefacts.model]
    md = [r for r in records if isinstance(r.spec, MDSpec)]
    if not saved and not md:
        return None
    sec = Section("Saved models and MD stability", (
        "Trained models saved in their library's own format, with everything baked in (trained weights, refit "
        "reference energies, merged LoRA): `python -m bench export DIR best|RUN_ID` copies them out, and the "
        "README's 'Use the fine-tuned model' says how each family loads them. 'best' is, per model, the run "
        "with the lowest validation force RMSE (never the test set)."))
    header, rows, pruned = _models_table(saved)
    if pruned:
        sec.text(f"{pruned} other saved model(s) were removed after the sweep (--save-models best keeps the best "
                 "of each model; their records say so).")
    sec.table(header, _capped(rows))
    if not md:
        return sec
    runs, dimers, criteria = _md_tables(md)
    sec.text("MD stability: whether each saved model, loaded by its library's own loader, runs dynamics. "
             "One row per model and temperature; simulated ps: run / planned; temperatures: mean over the second "
             "half of the Langevin run / over the NVE run.")
    for text in criteria:
        sec.text(text)
    sec.table(["dataset", "model", "strategy", "train size", "seed", "T (K)", "simulated ps", "mean T (K)",
               "NVE drift (meV/atom/ps)", "NVE max |ΔE| (meV/atom)", "closest pair (Å)", "verdict",
               "wall s (s/step)"], _capped(runs))
    sec.table(["dataset", "model", "strategy", "train size", "seed", "dimer", "repulsive at short range",
               "r at minimum (Å)", "well depth (eV)", "E at shortest (eV)"], _capped(dimers))
    return sec
