#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) in one call on a GPU machine that reaches no package registry:
#
#   benchmarks/gpu_check.sh prepare   here, with PyPI: the wheels a CUDA PyTorch image lacks (Python 3.12,
#                                     x86-64) and MBPP's mbpp.jsonl, into .gpu/ (git-ignored, about 40 MB)
#   benchmarks/gpu_check.sh run       there, with .gpu/ copied along: installs those wheels offline, then runs
#                                     the check; gpu_check.json and gpu_check.log land in $OUT (or benchmarks/out)
#
# The image must bring torch (CUDA), transformers, peft, accelerate, numpy, pandas, pyarrow, tokenizers. With a
# registry at hand skip both: `pip install torch --index-url https://download.pytorch.org/whl/cu128 &&
# pip install -e .`, then `python benchmarks/gpu_check.py`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The project's pins (pyproject.toml) of what the image lacks.
mapfile -t PINS < <(python3 - <<'EOF'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
wanted = {"snakemake", "optuna", "jsonschema", "trl", "datasets", "bitsandbytes"}
print("\n".join(d for d in deps if re.match(r"[A-Za-z0-9_.-]+", d).group() in wanted))
EOF
)

prepare() {
    local platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
                    --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
                    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    rm -rf .gpu && mkdir -p .gpu/wheels
    # snakemake needs connection_pool>=0.0.3, which is published as a source archive only.
    python3 -m pip wheel -q --no-deps -w .gpu/wheels "connection_pool>=0.0.3"
    # trl, datasets and bitsandbytes without their dependencies (torch, transformers: the image's); datasets'
    # own small ones (dill, multiprocess) by name.
    local with_deps=() no_deps=()
    for pin in "${PINS[@]}"; do
        case $pin in trl* | datasets* | bitsandbytes*) no_deps+=("$pin") ;; *) with_deps+=("$pin") ;; esac
    done
    python3 -m pip download -q "${platform[@]}" --find-links .gpu/wheels -d .gpu/wheels "${with_deps[@]}" \
        "dill>=0.3.0,<0.4.2" "multiprocess<0.70.20"
    python3 -m pip download -q --no-deps "${platform[@]}" -d .gpu/wheels "${no_deps[@]}"
    rm -f .gpu/wheels/numpy-*.whl  # the image has it (15 MB)
    # bitsandbytes ships a kernel library per CUDA version (43 MB); keep those of CUDA 13 and the CPU one.
    python3 - .gpu/wheels/bitsandbytes-*.whl <<'EOF'
import re, sys, zipfile
path = sys.argv[1]
drop = re.compile(r"bitsandbytes/libbitsandbytes_(cuda1[12]\d|rocm\d+|xpu\d+)\.so$")
with zipfile.ZipFile(path) as src:
    items = [(i, src.read(i)) for i in src.infolist() if not drop.search(i.filename)]
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
    for info, data in items:
        if info.filename.endswith(".dist-info/RECORD"):
            data = b"".join(l for l in data.splitlines(True) if not drop.search(l.split(b",")[0].decode()))
        out.writestr(info, data)
EOF
    cp "${METATUNE_SHARED_DATA:-../shared/data}/mbpp/mbpp.jsonl" .gpu/
    du -sh .gpu
}

run() {
    local out=${OUT:-benchmarks/out}
    mkdir -p "$out"
    # One package at a time: one that does not fit the image fails alone, and so do only the steps needing it.
    for pin in "${PINS[@]}"; do
        [ -d .gpu/wheels ] || break
        python3 -m pip install -q --no-index --find-links .gpu/wheels "$pin" || echo "gpu_check.sh: $pin not installed"
    done
    # The workflow's rules call `python`; an image may have python3 only.
    if ! command -v python >/dev/null; then
        mkdir -p /tmp/gpu_check_bin && ln -sf "$(command -v python3)" /tmp/gpu_check_bin/python
        export PATH=/tmp/gpu_check_bin:$PATH
    fi
    export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    set +e
    python3 benchmarks/gpu_check.py --out /tmp/gpu_check --mbpp "${MBPP:-.gpu/mbpp.jsonl}" "$@" 2>&1 |
        tee "$out/gpu_check.log"
    local rc=${PIPESTATUS[0]}
    cp /tmp/gpu_check/gpu_check.json "$out/"
    exit "$rc"
}

case ${1:-} in
    prepare) prepare ;;
    run) shift && run "$@" ;;
    *) echo "usage: $0 prepare | run [gpu_check.py options]" >&2 && exit 2 ;;
esac
