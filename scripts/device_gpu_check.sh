#!/usr/bin/env bash
# On an offline GPU machine (python3 with torch + CUDA, no package index; see
# scripts/device_prepare.sh): unpack the carried wheels into one folder per family, make one
# interpreter per family that puts them on the path (MACE's folder holds e3nn 0.4.4, which then
# shadows the image's 0.6.0 for MACE only), and run the GPU check with them:
#   bash scripts/device_gpu_check.sh OUT_DIR [gpu-check options, e.g. --workers 4]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?an output folder}"; shift
site=/tmp/ftbench-site
for family in common sevennet mace; do
    mkdir -p "$site/$family"
    for wheel in .device/wheels/$family/*.whl; do
        python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$wheel" "$site/$family"
    done
done
for family in sevennet mace; do
    cat > "$site/python-$family" <<WRAP
#!/bin/sh
export PYTHONPATH="\${PYTHONPATH:+\$PYTHONPATH:}$site/$family:$site/common"
exec python3 "\$@"
WRAP
    chmod +x "$site/python-$family"
done
export PYTHONPATH="$PWD:$site/common" BENCH_DATA_MIRROR="$PWD/.device/data" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -m bench gpu-check --out "$out" --python "sevennet=$site/python-sevennet" --python "mace=$site/python-mace" "$@"
