"""Load an exported model the way its users do, in a fresh process: the library's own loader
and ASE calculator, with nothing of ftbench importable (``adapters`` and ``bench`` are
blocked, so a file that pickled an ftbench object fails here instead of passing because
ftbench happens to be installed). Writes the calculator's energy, forces and stress.

    <family-env>/bin/python native_reload.py FAMILY PATH FRAMES.extxyz OUT.npz
"""

from __future__ import annotations

import sys

sys.modules["adapters"] = None  # ftbench is not there for a user of the file
sys.modules["bench"] = None


def calculator(family: str, path: str):
    """The loader call the README gives for each family."""
    if family == "mace":
        from mace.calculators import MACECalculator

        return MACECalculator(model_paths=path, device="cpu", default_dtype="float32")
    if family == "sevennet":
        from sevenn.calculator import SevenNetCalculator

        return SevenNetCalculator(path, device="cpu")
    if family == "chgnet":
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model=CHGNet.from_file(path), use_device="cpu")
    if family == "m3gnet":
        import matgl
        from matgl.ext.ase import PESCalculator

        return PESCalculator(matgl.load_model(path), stress_unit="eV/A3")
    raise ValueError(f"unknown family {family!r}")


def main(family: str, path: str, frames_path: str, out: str) -> None:
    import numpy as np
    import torch
    from ase.io import read

    torch.set_num_threads(1)
    calc = calculator(family, path)
    energy, forces, stress = [], [], []
    for atoms in read(frames_path, ":"):
        atoms.calc = calc
        energy.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
        stress.append(atoms.get_stress(voigt=True))  # eV/Å³, xx yy zz yz xz xy
    np.savez(out, energy=np.array(energy), forces=np.concatenate(forces), stress=np.array(stress))


if __name__ == "__main__":
    main(*sys.argv[1:5])
