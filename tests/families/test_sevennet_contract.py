"""SevenNet adapter contract, against the real sevenn library and the 7net-0 weights.

Runs in the sevennet environment (``tox -e sevennet``); skipped elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sevenn", reason="runs in the sevennet environment: tox -e sevennet")

import torch

from adapters.base import CheckpointUnavailable
from adapters.sevennet_adapter import SevenNetAdapter
from adapters.training import TrainConfig, refit_reference_energies
from bench.registry import get_model
from tests.families.contract import AdapterContract, HotPathBenchmarks, console_script

torch.set_num_threads(1)

N_PARAMS = 842_623  # 7net-0; 5 of them are the fixed convolution denominators
ADAPTER, CHECKPOINT = SevenNetAdapter, "7net-0"


@pytest.fixture(scope="module")
def calculator():
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator("7net-0", device="cpu")  # its own model: it makes it unbatched


class TestSevenNetContract(AdapterContract, HotPathBenchmarks):
    family = "sevennet"
    stress_witness = (("mlearn-Mo", "Elastic"), ("snap-NbMoTaW", "Mo_Elastic"))
    # the readout alone moves slowly: surfaces only, no stress; measured 0.159 -> 0.119 eV/Å
    train_slice, val_slice = slice(0, 7), slice(7, 9)
    train_config = TrainConfig(epochs=5, lr=5e-3, batch_size=2, stress_weight=0.0, energy_weight=1.0)
    improvement = 0.95

    def test_exported_checkpoint_deploys_for_lammps(self, exported, tmp_path):
        """sevenn's deploy command accepts the export and writes a TorchScript model for
        LAMMPS' e3gnn pair style, stamped with the running sevenn and the model's cutoff."""
        import sevenn

        proc = console_script("sevenn_get_model", str(exported["path"]), "-o", "deployed", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        extra = {"cutoff": "", "version": "", "chemical_symbols_to_index": ""}
        torch.jit.load(str(tmp_path / "deployed.pt"), _extra_files=extra)
        text = {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}
        assert float(text["cutoff"]) == 5.0 and text["version"] == sevenn.__version__
        assert "Mo" in text["chemical_symbols_to_index"].split()

    def test_exported_config_names_the_running_sevenn_and_the_live_rescale(self, make, mo, tmp_path):
        """The checkpoint's config carries the running sevenn's version (with 7net-0's 0.9.1,
        sevenn re-sorts current weights while loading: 0.15 eV/atom off, measured) and the
        refit per-species shift, as sevenn indexes it: by atomic number."""
        import sevenn

        adapter = make()
        e0 = refit_reference_energies(adapter, mo[1][:5])[42]
        checkpoint = torch.load(adapter.export(tmp_path), weights_only=False)
        assert checkpoint["config"]["version"] == sevenn.__version__ != "0.9.1"
        assert checkpoint["config"]["shift"][42] == pytest.approx(e0, abs=1e-6)
        state = checkpoint["model_state_dict"]
        assert state["rescale_atomic_energy.shift"][adapter.model_.type_map[42]] == pytest.approx(e0, abs=1e-6)
        assert not any("parametrizations" in k or "lora_" in k for k in state)

    def test_sevennet_blocks_and_fixed_denominators(self, make):
        adapter = make()
        blocks = adapter.blocks()
        assert [b.name for b in blocks] == ["embedding", *(f"interaction-{t}" for t in range(5)),
                                            "readout", "reference"]
        assert blocks[-1].n_params == 2 * 89  # per-species shift + scale
        assert adapter.parameter_counts()["total"] == N_PARAMS
        # the reference trains only when asked; sevenn's fixed denominators never
        assert adapter.freeze(0, train_reference=True).parameter_counts()["trainable"] == N_PARAMS - 5
        assert adapter.freeze(0).parameter_counts()["trainable"] == N_PARAMS - 5 - 178

    def test_unavailable_checkpoints_say_how_to_supply_one(self):
        with pytest.raises(CheckpointUnavailable, match="--checkpoint PATH"):
            SevenNetAdapter("no-such-model").load()
        try:  # 7net-omat is not in the wheel: resolving it must refuse, not download
            SevenNetAdapter("7net-omat").load()
        except CheckpointUnavailable as err:
            assert "--checkpoint PATH" in str(err) and "http" in str(err)
        else:
            pytest.skip("7net-omat is already on disk here")

    def test_the_shift_is_the_reference_energy_per_atom(self, foundation, make, mo):
        _, small = mo
        adapter = make()
        old = adapter.reference_energies()[42]
        new = refit_reference_energies(adapter, small)
        before = foundation.predict(small, stress=False).energy
        pred = adapter.predict(small, stress=False)
        n = pred.n_atoms.astype(float)  # whatever sevenn's species index and scale
        np.testing.assert_allclose(pred.energy - before, n * (new[42] - old), atol=2e-4 * n.max())


@pytest.mark.parametrize("name", ["7net-0_22may2024", "7net-l3i5"])
def test_the_registry_knows_the_other_checkpoints(name):
    """The registry's static elements and cutoff of SevenNet's other named checkpoints, where
    they are on disk (the default one: the contract's registry test)."""
    try:
        adapter = SevenNetAdapter(name).load()
    except CheckpointUnavailable as exc:
        pytest.skip(str(exc))
    info = get_model("sevennet").checkpoint_info(name)
    assert info.numbers == adapter.supported_numbers() and info.cutoff == adapter.cutoff
