"""CHGNet adapter contract, against the real chgnet library and the 0.3.0 weights.

Runs in the chgnet environment (``tox -e chgnet``); skipped elsewhere.
"""

from __future__ import annotations

import pytest

pytest.importorskip("chgnet", reason="runs in the chgnet environment: tox -e chgnet")

import torch

from adapters.chgnet_adapter import CHGNetAdapter
from tests.families.contract import AdapterContract, HotPathBenchmarks

torch.set_num_threads(2)
ADAPTER, CHECKPOINT = CHGNetAdapter, "0.3.0"


@pytest.fixture(scope="module")
def calculator(foundation):
    from chgnet.model import CHGNetCalculator

    return CHGNetCalculator(foundation.model_, use_device="cpu")


class TestCHGNetContract(AdapterContract, HotPathBenchmarks):
    family = "chgnet"
    stress_witness = (("mlearn-Mo", "Elastic"), ("snap-NbMoTaW", "Mo_Elastic"))

    def test_chgnet_block_sizes_and_trainable_atomref(self, make):
        adapter = make()
        blocks = adapter.blocks()
        assert [b.n_params for b in blocks] == [14_029, 116_096, 116_096, 116_096, 37_376, 12_738, 94]
        counts = [adapter.freeze(k).parameter_counts()["trainable"] for k in range(7)]
        assert counts == [412_431, 398_402, 282_306, 166_210, 50_114, 12_738, 0]
        assert adapter.freeze(0, train_reference=True).parameter_counts()["trainable"] == 412_525
