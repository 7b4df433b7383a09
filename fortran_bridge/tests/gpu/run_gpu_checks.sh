#!/usr/bin/env bash
# GPU check kit for the bridge's CUDA path. Builds bridge.cpp + metadata.cpp + sha256.cpp and the C++
# driver gpu_check.cpp (no Fortran: the GPU machine has no gfortran) against the torch of the
# given python, makes the test models with that same python (TorchScript written by another
# torch version may not load), runs the driver, and writes gpu_check.json and gpu_check.log
# into the output folder.
#
# From the repository root:
#   fortran_bridge/tests/gpu/run_gpu_checks.sh --out "$OUT"
# Options:
#   --out DIR            results folder (default: $OUT, else ./gpu_check_out)
#   --json-include DIR   folder holding nlohmann/json.hpp (default .gpukit/include; when it
#                        has none, the compiler's default include paths)
#   --python PY          python with torch + numpy (default python3)
#   --jobs N             build jobs (default: all cores)
#   --cpu-only           compare CPU with CPU only; chosen anyway when torch sees no CUDA device
#   --driver-timeout S   kill a hung driver after S seconds (default 300)
#   --keep-build         keep the temporary build folder (its path is printed)
#   -- ARGS              passed to gpu_check (--time S, --mem-calls N)
# Exit status: the driver's (0: every correctness check passed, 1: one failed, 124: timed
# out), or 3 when the build or the model making failed. Timings are reported, never judged.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
OUT_DIR="${OUT:-$PWD/gpu_check_out}"
JSON_INC="$ROOT/.gpukit/include"
PYTHON=python3
JOBS="$(nproc)"
CPU_ONLY=""
DRIVER_TIMEOUT=300
KEEP_BUILD=""
DRIVER_ARGS=()
while (($#)); do
  case "$1" in
    --out) OUT_DIR="$2"; shift 2 ;;
    --json-include) JSON_INC="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --cpu-only) CPU_ONLY=1; shift ;;
    --driver-timeout) DRIVER_TIMEOUT="$2"; shift 2 ;;
    --keep-build) KEEP_BUILD=1; shift ;;
    --) shift; DRIVER_ARGS=("$@"); break ;;
    *) echo "run_gpu_checks.sh: unknown option $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT_DIR" && OUT_DIR="$(cd "$OUT_DIR" && pwd)"

run() {
  local t0=$SECONDS
  echo "== environment"
  # One python start (torch imports slowly): versions to the log, then CUDA flag and CMake prefix.
  local cuda_ok prefix
  read -r cuda_ok prefix < <("$PYTHON" -c 'import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "devices", torch.cuda.device_count(), file=sys.stderr)
print(int(torch.cuda.is_available()), torch.utils.cmake_prefix_path)')
  [ -n "$prefix" ] || { echo "FAILED: $PYTHON cannot import torch"; return 3; }
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  local nvcc
  nvcc="$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)"
  [ -n "$nvcc" ] && "$nvcc" --version | tail -n 1
  g++ --version | head -n 1
  cmake --version | head -n 1

  if [ -z "$CPU_ONLY" ] && [ "$cuda_ok" != 1 ]; then
    echo "torch sees no CUDA device: running --cpu-only"
    CPU_ONLY=1
  fi
  if [ ! -f "$JSON_INC/nlohmann/json.hpp" ]; then
    echo "note: no nlohmann/json.hpp under $JSON_INC; using the compiler's default include paths"
    JSON_INC=""
  fi

  local build
  build="$(mktemp -d "${TMPDIR:-/tmp}/paramlib_gpukit.XXXXXX")"
  if [ -n "$KEEP_BUILD" ]; then echo "build folder: $build"; else trap 'rm -rf "$build"' RETURN; fi

  # The models are made while the C++ compiles: both take tens of seconds.
  echo "== making test models with $PYTHON (log: models.log)"
  PYTHONPATH="$ROOT:$ROOT/fortran_bridge/tests${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" - "$build/models" \
    >"$OUT_DIR/models.log" 2>&1 <<'PY' &
# The fixture's models, PyTorch references and broken files, plus the MF-RPN-sized MLP.
import sys
from pathlib import Path

import make_test_models as fixture
from paramlib.export import save
from paramlib.models.examples import make_example

out = Path(sys.argv[1])
fixture.generate(out)
module, metadata = make_example("mfrpn_size", seed=fixture.SEED)
save(module, out / "mfrpn_size.pt", metadata)
print(f"wrote {out / 'mfrpn_size.pt'}")
PY
  local models_pid=$!

  echo "== building (CMake, -j$JOBS)"
  local cmake_args=(-S "$ROOT/fortran_bridge/tests/gpu" -B "$build" -DCMAKE_BUILD_TYPE=Release
                    -DCMAKE_PREFIX_PATH="$prefix" -DPARAMLIB_JSON_INCLUDE="$JSON_INC")
  command -v ninja >/dev/null && cmake_args+=(-G Ninja)
  if [ -n "$nvcc" ]; then
    # torch's CMake config enables the CUDA language; nothing here is compiled for the GPU,
    # so one architecture skips torch's probe of the installed GPUs.
    cmake_args+=(-DCMAKE_CUDA_COMPILER="$nvcc" -DCUDA_TOOLKIT_ROOT_DIR="$(dirname "$(dirname "$nvcc")")")
    export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
  fi
  local built=""
  if cmake "${cmake_args[@]}" >"$OUT_DIR/cmake.log" 2>&1; then
    if cmake --build "$build" -j "$JOBS"; then
      built=1
    else
      # The allocator-statistics API is the driver's only newer-libtorch dependency.
      echo "build failed; retrying with -DGPUKIT_NO_ALLOC_STATS=ON"
      cmake -DGPUKIT_NO_ALLOC_STATS=ON "$build" >>"$OUT_DIR/cmake.log" 2>&1 &&
        cmake --build "$build" -j "$JOBS" && built=1
    fi
  else
    echo "CMake configure failed:"; tail -n 40 "$OUT_DIR/cmake.log"
  fi
  local models_ok=1
  wait "$models_pid" || models_ok=""
  cat "$OUT_DIR/models.log"
  [ -n "$built" ] || { echo "FAILED: build"; return 3; }
  [ -n "$models_ok" ] || { echo "FAILED: making the test models"; return 3; }
  echo "build + models: $((SECONDS - t0)) s"

  echo "== gpu_check ${CPU_ONLY:+(--cpu-only)}"
  local rc=0
  timeout "$DRIVER_TIMEOUT" "$build/gpu_check" --models "$build/models" --json "$OUT_DIR/gpu_check.json" \
    ${CPU_ONLY:+--cpu-only} "${DRIVER_ARGS[@]}" || rc=$?
  echo "gpu_check exit status $rc; total $((SECONDS - t0)) s; results in $OUT_DIR"
  return "$rc"
}

run 2>&1 | tee "$OUT_DIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
