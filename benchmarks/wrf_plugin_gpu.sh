#!/usr/bin/env bash
# The WRF plugin's cost on a GPU machine (no gfortran there). On the build machine first:
#   .venv/bin/python benchmarks/wrf_plugin_cost.py --pack-gpu build/gpu_pack
# then on the GPU machine, from the repository root:
#   benchmarks/wrf_plugin_gpu.sh build/gpu_pack [--out DIR] [--python PY] [--cpu-only]
# Builds the bridge's C++ part against that machine's torch (the CMake project of
# fortran_bridge/tests/gpu), links the packed Fortran objects (the plugin, the WRF-shaped host,
# wrf_plugin_bench) with g++, and times the packed tile with the model on CUDA (DEVICE 1) and
# on one CPU thread (DEVICE 0). Writes wrf_plugin_gpu.json (one object per device) into DIR.
# If this torch cannot load the packed model (saved by another torch version), the model is
# exported again here by benchmarks/wrf_plugin_cost.py's code, which needs paramlib's imports.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACK="$(cd "${1:?usage: wrf_plugin_gpu.sh PACK [--out DIR] [--python PY] [--cpu-only]}" && pwd)"
shift
OUT_DIR="${OUT:-$PWD/wrf_plugin_gpu_out}"
PYTHON=python3
DEVICES="1 0"
while (($#)); do
  case "$1" in
    --out) OUT_DIR="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --cpu-only) DEVICES="0"; shift ;;
    *) echo "wrf_plugin_gpu.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT_DIR"
BUILD="$(mktemp -d "${TMPDIR:-/tmp}/paramlib_wrf_gpu.XXXXXX")"
trap 'rm -rf "$BUILD"' EXIT

prefix="$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count())'
cmake_args=(-S "$ROOT/fortran_bridge/tests/gpu" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release
            -DCMAKE_PREFIX_PATH="$prefix")
[ -f "$ROOT/.gpukit/include/nlohmann/json.hpp" ] && cmake_args+=(-DPARAMLIB_JSON_INCLUDE="$ROOT/.gpukit/include")
nvcc="$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)"
if [ -n "$nvcc" ]; then  # nothing here compiles for the GPU: one architecture skips torch's probe
  cmake_args+=(-DCMAKE_CUDA_COMPILER="$nvcc")
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
fi
cmake "${cmake_args[@]}" >"$OUT_DIR/cmake.log" 2>&1 || { tail -n 30 "$OUT_DIR/cmake.log"; exit 3; }
cmake --build "$BUILD" --target paramlib_bridge_cxx -j "$(nproc)" >"$OUT_DIR/build.log" 2>&1 \
  || { tail -n 30 "$OUT_DIR/build.log"; exit 3; }
g++ -o "$BUILD/wrf_plugin_bench" "$PACK"/*.o -fopenmp \
  -L"$BUILD" -lparamlib_bridge_cxx -Wl,-rpath,"$BUILD" \
  "$PACK/libgfortran.so.5" "$PACK/libquadmath.so.0" -Wl,-rpath,"$PACK"

model="$PACK/bilstm.pt"
if ! "$PYTHON" -c "import sys, torch; torch.jit.load(sys.argv[1])" "$model" 2>/dev/null; then
  echo "this torch cannot load the packed model: exporting it again here"
  model="$BUILD/bilstm.pt"
  PYTHONPATH="$ROOT" "$PYTHON" - "$model" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
import wrf_plugin_cost as bench
bench.published_size_model(Path(sys.argv[1]), bench.column_pool(44))
PY
fi

read -r nx ny calls <"$PACK/tile.txt"
echo "[" >"$OUT_DIR/wrf_plugin_gpu.json"
sep=""
for device in $DEVICES; do
  line="$(OMP_NUM_THREADS=1 "$BUILD/wrf_plugin_bench" "$model" "$PACK/pool.bin" "$nx" "$ny" "$calls" "$device" | tail -n 1)"
  echo "device $device: $line"
  printf '%s{"device": %s, "result": %s}\n' "$sep" "$device" "$line" >>"$OUT_DIR/wrf_plugin_gpu.json"
  sep=","
done
echo "]" >>"$OUT_DIR/wrf_plugin_gpu.json"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT_DIR/gpu.txt"
echo "results in $OUT_DIR/wrf_plugin_gpu.json"
