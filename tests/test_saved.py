"""Saved models on the orchestrator's side (bench/saved.py, the contract, settings, CLI and
report): the best run is chosen by validation, never by test error; pruning and exporting
keep what the records say; a run without its model says why and how to get it; MD runs are
planned for saved models only, with the catalog's temperatures."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench import cli
from bench.config import MD_DEFAULTS, SweepConfig
from bench.core.contract import Artefacts, Job, ModelArtefact, Record, spec_from_dict
from bench.core.util import file_sha256
from bench.plan import make_plan
from bench.report import build_sections
from bench.saved import ExportError, best_runs, export, md_specs, prune, saved_model, validation_forces
from bench.store import Store
from tests.conftest import SYNTH_D_DATA, edited


def by(records, model, strategy, size, seed):
    return next(r for r in records if r.spec.kind == "train" and (r.spec.model, r.spec.strategy, r.spec.train_size,
                                                                   r.spec.seed) == (model, strategy, size, seed))


def test_best_is_the_lowest_validation_force_error_not_the_test_error(saved_store):
    records = Store(saved_store).all()
    best = best_runs(records)
    assert set(best) == {("synth", "chgnet", "0.3.0"), ("synth", "m3gnet", "M3GNet-MatPES-PBE-v2025.1-PES")}
    assert best["synth", "chgnet", "0.3.0"] == by(records, "chgnet", "finetune", 100, 0)  # 93.1 meV/Å on validation
    # a run whose validation error is lowest wins even though its test error is far worse
    worse_on_test = by(records, "chgnet", "freeze-interactions", 20, 1)

    def low_validation(d):
        d["convergence"]["val_forces_best_mev_per_ang"] = 1.0

    records = [edited(r, low_validation) if r is worse_on_test else r for r in records]
    chosen = best_runs(records)["synth", "chgnet", "0.3.0"]
    assert chosen.run_id == worse_on_test.run_id and validation_forces(chosen) == 1.0
    assert chosen.metrics.forces_rmse_mev_per_ang > best["synth", "chgnet", "0.3.0"].metrics.forces_rmse_mev_per_ang
    assert all(r.spec.trains and r.spec.role == "curve" for r in best_runs(records).values())


def test_prune_removes_the_other_files_and_their_records_say_why(saved_store):
    store = Store(saved_store)
    records = store.all()
    keep = {r.run_id for r in best_runs(records).values()}
    assert prune(store, keep, records) == 6  # 8 saved, 2 kept; the failed export has no file
    after = Store(saved_store).all()
    for r in after:
        art = r.artefacts.model if r.artefacts else None
        if art is None or art.error:
            continue
        if r.run_id in keep:
            assert saved_model(r, saved_store) is not None and art.pruned is None
        else:
            assert saved_model(r, saved_store) is None and not (saved_store / "models" / r.run_id).exists()
            assert art.pruned.startswith("not the best of its model by validation force RMSE (kept: ")
            assert art.sha256 and art.bytes  # what it was stays on record
    assert prune(store, keep, after) == 0
    assert sorted(p.name for p in (saved_store / "models").iterdir()) == sorted(keep)


def test_export_copies_checked_files_and_says_how_to_load_them(saved_store, tmp_path, capsys):
    copies, problems = export(saved_store, "best", tmp_path / "out")
    assert not problems and len(copies) == 2
    by_format = {about["format"]: (path, about) for path, about in copies}
    path, about = by_format["chgnet-file"]
    assert path.name.startswith("chgnet-synth-finetune-n100-seed0-") and path.name.endswith(".pth.tar")
    assert file_sha256(path)[0] == about["sha256"] and about["bytes"] == path.stat().st_size
    assert about["load"] == f"chgnet.model.dynamics.CHGNetCalculator(model=chgnet.model.CHGNet.from_file({path.name}))"
    manifest = json.loads((path.parent / (path.name.removesuffix(".pth.tar") + ".json")).read_text())
    assert manifest["validation_forces_rmse_mev_per_ang"] == pytest.approx(93.1, abs=0.05)
    assert manifest["test_metrics"]["forces_rmse_mev_per_ang"] == pytest.approx(93.1, abs=0.05)
    m3gnet, _ = by_format["matgl-directory"]
    assert m3gnet.is_dir() and sorted(p.name for p in m3gnet.iterdir()) == ["model.json", "state.pt"]
    assert cli.main(["export", str(saved_store), "best", "--to", str(tmp_path / "cli")]) == 0
    assert "load: matgl.ext.ase.PESCalculator(matgl.load_model(" in capsys.readouterr().out


def test_a_run_without_its_model_says_why_and_how_to_get_it(saved_store, tmp_path, capsys):
    records = Store(saved_store).all()
    failed = by(records, "chgnet", "lora", 100, 0)
    _, problems = export(saved_store, failed.run_id[:10], tmp_path)
    assert problems == [f"{failed.spec.label} ({failed.run_id}) has no saved model: its export failed: OSError: "
                        "[Errno 28] No space left on device; rerun the sweep's `bench run` command with --save-models "
                        "all (and the same --out): stored runs that lack the model it asks for are trained again "
                        "and saved"]
    never = by(records, "chgnet", "finetune", 20, 0)
    assert cli.main(["export", str(saved_store), never.run_id, "--to", str(tmp_path)]) == 1
    assert "its sweep did not save it (--save-models none" in capsys.readouterr().err
    tampered = best_runs(records)["synth", "chgnet", "0.3.0"]
    (saved_store / tampered.artefacts.model.path).write_bytes(b"changed")
    _, problems = export(saved_store, tampered.run_id, tmp_path)
    assert problems[0].endswith(f"its sha256 is not the recorded {tampered.artefacts.model.sha256[:12]}; "
                                "it changed after the run")
    with pytest.raises(ExportError, match="no stored run.*match 'nope'"):
        export(saved_store, "nope", tmp_path)
    assert cli.main(["export", str(saved_store), "nope"]) == 2


def test_md_runs_are_planned_for_saved_models_with_the_catalog_s_temperature(saved_store):
    records = Store(saved_store).all()
    cfg = SweepConfig.from_preset("quick", save_models="all", md="all")
    specs, notes = md_specs(cfg, records, saved_store)
    assert specs == [] and notes == ["synth: no [synth.md] in datasets/catalog.toml, so no MD runs on it"]

    def on_mo(d):
        d["spec"]["dataset"] = "mlearn-Mo"

    mo = [edited(r, on_mo) for r in records if r.spec.kind == "train"]
    specs, notes = md_specs(cfg, mo, saved_store)
    assert len(specs) == 8 and not notes  # every saved model; not the failed export
    spec, path = next((s, p) for s, p in specs if (s.model, s.strategy, s.seed) == ("chgnet", "finetune", 0))
    source = by(mo, "chgnet", "finetune", 100, 0)
    assert (spec.model_run, spec.model_sha256, path) == (source.run_id, source.artefacts.model.sha256,
                                                        saved_store / source.artefacts.model.path)
    assert spec.temperatures_k == (300.0, 6000.0) and spec.timestep_fs == 2.0 and spec.cell_group == "AIMD-NVT"
    assert spec.criteria == MD_DEFAULTS["criteria"] and spec.langevin_ps >= 1.0
    assert spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    best_only, _ = md_specs(dataclasses.replace(cfg, md="best"), mo, saved_store)
    assert [s.model_run for s, _ in best_only] == [r.run_id for r in best_runs(mo).values()]
    longer = SweepConfig.from_preset("quick", save_models="best", md="best")
    assert dataclasses.replace(longer, md_settings={**longer.md_settings, "langevin_ps": 2.0}).md_settings != \
        longer.md_settings


def test_saving_is_no_part_of_a_run_s_identity_and_flags_the_runs_that_train():
    plans = {mode: make_plan(SweepConfig.from_preset("quick", models="chgnet", save_models=mode))
             for mode in ("none", "best", "all")}
    ids = {mode: [r.spec.spec_id for r in plan.runs] for mode, plan in plans.items()}
    assert ids["none"] == ids["best"] == ids["all"]
    for mode, plan in plans.items():
        for run in plan.runs:
            trains = run.spec.kind == "train" and run.spec.trains
            assert run.save_model == (trains and mode != "none")
            assert run.require_model == (trains and mode == "all")


def test_model_settings_are_checked_and_the_presets_choose_them():
    with pytest.raises(ValueError, match="md=best: MD runs on saved models; use --save-models best or all"):
        SweepConfig(md="best")
    with pytest.raises(ValueError, match="save_models='some'"):
        SweepConfig(save_models="some")
    quick, study, paper = (SweepConfig.from_preset(p) for p in ("quick", "study", "paper"))
    assert (quick.save_models, quick.md) == ("best", "none")  # MD would break quick's 20-minute budget
    assert (study.save_models, study.md) == (paper.save_models, paper.md) == ("best", "all")
    assert study.md_settings == MD_DEFAULTS


def test_unknown_md_settings_are_refused(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('[sweep]\nsave_models = "best"\nmd = "best"\n[md]\nlangevin_ps = 2.0\n[md.criteria]\n'
                      'max_drift = 1\n')
    with pytest.raises(ValueError, match=r"unknown \[md\] setting\(s\) \['criteria.max_drift'\]"):
        SweepConfig.from_preset(str(preset))
    preset.write_text('[sweep]\nsave_models = "best"\n[md]\nlangevin_ps = 2.0\n[md.criteria]\n'
                      'max_drift_mev_per_atom_per_ps = 1\n')
    cfg = SweepConfig.from_preset(str(preset))
    assert cfg.md_settings["langevin_ps"] == 2.0 and cfg.md_settings["nve_ps"] == MD_DEFAULTS["nve_ps"]
    assert cfg.md_settings["criteria"] == {**MD_DEFAULTS["criteria"], "max_drift_mev_per_atom_per_ps": 1}


def test_records_and_jobs_carry_the_model_additively(saved_store):
    rec = next(r for r in Store(saved_store).all() if r.artefacts and r.artefacts.model and r.artefacts.model.sha256)
    assert Record.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    assert rec.artefacts.model.available and rec.artefacts.model.format in ("chgnet-file", "matgl-directory")
    plain = dataclasses.replace(rec, artefacts=Artefacts(log="logs/x.log"))
    assert "model" not in plain.to_dict()["artefacts"]  # records without a model look as before
    assert not ModelArtefact(format="chgnet-file", error="boom").available
    job = Job.from_dict({"spec": rec.spec.to_dict(), "run_id": "r", "runtime": {"device": "cpu"}, "adapter": "a:B",
                         "packages": [], "data": {"pool": "p", "test": "t"},
                         "paths": {"result": "r", "progress": "p", "log": "l", "predictions": "n"}})
    assert job.save_model_to is None and "save_model_to" not in job.to_dict()


def test_the_report_shows_saved_models_and_md_rows_under_their_criteria(saved_store):
    records = Store(saved_store).all()
    sec = next(s for s in build_sections(records, saved_store) if s.title == "Saved models and MD stability")
    texts = [p for kind, p in sec.parts if kind == "text"]
    tables = [p for kind, p in sec.parts if kind == "table"]
    models, md, dimers = tables
    assert len(models[1]) == 9  # 8 saved models and the failed export
    failed_export = next(row for row in models[1] if row[2] == "lora")
    assert failed_export[-1] == "export failed: OSError: [Errno 28] No space left on device"
    assert any(f"0.6 × the closest pair in the DFT data ({SYNTH_D_DATA:.2f} Å)" in t for t in texts)
    assert any("at 300 K and 6000 K, each followed by 0.5 ps of NVE" in t for t in texts)
    rows = {(row[1], row[5]): row for row in md[1]}
    stable = rows["chgnet (0.3.0)", "300"]
    assert stable[6:] == ["1.50 / 1.50", "301 / 297", "0.42", "1.3", "2.31", "stable", "75 (0.100)"]
    assert rows["chgnet (0.3.0)", "6000"][11].startswith("blew up at 0.31 ps: atoms collapsed")
    assert rows["m3gnet (M3GNet-MatPES-PBE-v2025.1-PES)", "–"][11] == \
        "failed: RuntimeError: matgl could not build the graph"
    assert dimers[1] == [["synth", "chgnet (0.3.0)", "finetune", "100", "0", "Mo", "yes", "1.90", "-4.20", "9.10"]]
    prune(Store(saved_store), {r.run_id for r in best_runs(records).values()}, records)
    sec = next(s for s in build_sections(Store(saved_store).all(), saved_store)
               if s.title == "Saved models and MD stability")
    assert ("text", "6 other saved model(s) were removed after the sweep (--save-models best keeps the best of "
                    "each model; their records say so).") in sec.parts
    titles = [s.title for s in build_sections(records, saved_store)]
    assert titles.index("Saved models and MD stability") == titles.index("Physical properties") + 1


def test_follow_up_runs_join_the_runs_the_sweep_planned(tmp_path):
    """The best models trained again and the MD jobs run after the sweep's plan: planned.json
    gains them (an interrupted MD job is then named as missing) without losing the others."""
    from types import SimpleNamespace

    from bench.planned import PLANNED, write_planned

    def plan(*ids):
        return SimpleNamespace(config=SimpleNamespace(preset="study"), runs=[
            SimpleNamespace(spec=SimpleNamespace(spec_id=i, label=f"run {i}"), derived=()) for i in ids])

    write_planned(tmp_path, plan("a", "b"), "t0")
    write_planned(tmp_path, plan("md"), "t1", add=True)
    assert json.loads((tmp_path / PLANNED).read_text()) == {
        "preset": "study", "started_at": "t0", "specs": {"a": "run a", "b": "run b", "md": "run md"}}
    write_planned(tmp_path, plan("c"), "t2")  # the next `bench run` starts afresh
    assert json.loads((tmp_path / PLANNED).read_text())["specs"] == {"c": "run c"}
