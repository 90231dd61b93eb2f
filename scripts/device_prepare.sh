#!/usr/bin/env bash
# Prepare what an offline GPU machine needs for `python -m bench gpu-check` (see README, "GPU"):
# Python 3.12 wheels for the families that lack them there (ase for all; SevenNet; MACE with
# its own e3nn 0.4.4) and the mlearn-Mo data, in .device/ (ignored by git: add `/.device/` to
# .git/info/exclude). The machine measured (../shared/notes/gpu.md) has torch + CUDA,
# e3nn 0.6.0 and torch-geometric but no package index. Run here, where pip works:
#   bash scripts/device_prepare.sh [../shared/datasets]
# then send the working tree with .device/ to the GPU machine and run scripts/device_gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/datasets}"
rm -rf .device && mkdir -p .device/wheels/common .device/wheels/sevennet .device/wheels/mace .device/data/mlearn/Mo
get() {  # folder, then NAME==VERSION...
    local dest=$1; shift
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d ".device/wheels/$dest" "$@"
}
get common ase==3.29.0 matscipy==1.3.1
get sevennet sevenn==0.13.0 braceexpand==0.1.7
get mace mace-torch==0.3.16 e3nn==0.4.4 ConfigArgParse GitPython gitdb smmap lmdb prettytable wcwidth torch-ema orjson
# sevenn ships four checkpoints (42 MB); 7net-0 is the one the check uses
python3 - <<'PY'
import pathlib, zipfile
wheel = next(pathlib.Path(".device/wheels/sevennet").glob("sevenn-*.whl"))
keep = "SevenNet_0__11Jul2024"
slim = wheel.with_suffix(".slim")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if "pretrained_potentials/" in item.filename and keep not in item.filename and item.filename.endswith(".pth"):
            continue
        dst.writestr(item, src.read(item))
slim.replace(wheel)
PY
cp "$data/mlearn/Mo/training.json" "$data/mlearn/Mo/test.json" .device/data/mlearn/Mo/
du -sh .device
