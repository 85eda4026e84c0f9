#!/usr/bin/env bash
# One prepared GPU check (issue 23), under 8 minutes on one H200; installs nothing from the internet.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a machine with CUDA
#
# 1. a Python environment: .venv if present, else one made here on top of the machine's own torch
#    (--system-site-packages; `pip install --no-deps -e .`: nothing is downloaded), else the current python;
# 2. the tests that need CUDA (skipped everywhere else), 90 s at most;
# 3. benchmarks/bench_gpu.py: renderer frames/s at batch 1, 8, 16 in fp32 / fp16 / bf16, eager and compiled;
#    generator seconds per second of audio; live first-frame latency with 1 and 4 sessions on one GPU. It writes
#    the GPU section of BENCHMARKS.md (rows it has no time for say "not measured");
# 4. if TensorRT's trtexec is installed: an fp16 engine from the exported frames graph of the demo model and its
#    throughput (docs/deploy.md), into gpu_check.log only.
# Everything is logged to gpu_check.log; each step has its own timeout, so the whole stays under 8 minutes.
set -u
cd "$(dirname "$0")/.."
LOG=gpu_check.log
exec > >(tee "$LOG") 2>&1
date -u
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
elif python3 -c "import torch" 2>/dev/null; then
  python3 -m venv --system-site-packages .venv && .venv/bin/pip install --no-deps --no-build-isolation -q -e . \
    && PY=.venv/bin/python || PY=python3
else
  echo "no python with torch on this machine"; exit 1
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, whatever the environment has installed
$PY - <<'PYEOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(), "bf16", torch.cuda.is_bf16_supported())
for name in ("onnx", "onnxruntime", "tensorrt", "triton"):
    try:
        module = __import__(name); print(name, getattr(module, "__version__", "?"))
    except Exception as err:
        print(name, "missing:", type(err).__name__)
PYEOF
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "CUDA is not available: nothing to measure"; exit 1; }

echo "== CUDA tests"
timeout 90 $PY -m pytest -q -p no:cacheprovider tests/export/test_gpu.py || echo "CUDA tests: failed or timed out"

echo "== benchmarks/bench_gpu.py"
(cd benchmarks && timeout 330 $PY bench_gpu.py --budget 240) || echo "bench_gpu.py: failed or timed out"

if command -v trtexec >/dev/null; then
  echo "== TensorRT (trtexec) from the exported demo-model graphs"
  timeout 60 $PY -m imtalker export-onnx src/imtalker/assets/demo_model /tmp/imtalker-onnx-demo \
    && timeout 120 trtexec --onnx=/tmp/imtalker-onnx-demo/renderer_frames.onnx --fp16 \
         --minShapes=driving_motion:1x32 --optShapes=driving_motion:8x32 --maxShapes=driving_motion:16x32 \
         --shapes=driving_motion:8x32 2>&1 | grep -E "Throughput|Latency|PASSED|FAILED|Error" \
    || echo "trtexec: failed or timed out"
else
  echo "== no trtexec: TensorRT not measured (docs/deploy.md has the commands)"
fi
date -u
