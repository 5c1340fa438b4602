#!/usr/bin/env bash
# Every GPU figure in BENCHMARKS.md, on a GPU machine. The default steps take 6-9 min on an
# H100 or H200 (the tests alone 2-3 min; RUNS=4 shortens the timings); the epochs, jpeg,
# precision and original steps ~2-3 min each (run them in separate calls; for precision,
# RUNS=4 or PRECISIONS=bf16 keeps it short). It exits 1 if a step failed, naming it.
#
#   bash benchmarks/gpu_check.sh            # needs: torch with CUDA, the data at $DATA
#
# On this workplace's device tool, carry `.whl` (pydantic's wheels for the machine's
# Python, which lacks them) and `.devdata` (a copy of the shared CIFAR-10 archive); both are
# local to the working copy, not in git. Elsewhere: `pip install -e .[dev] pytest-xdist` (torch with CUDA
# first) and DATA=path/to/cifar10-jpeg.tar.gz.
# Each step has its own time limit, so a failure still leaves the others' output in $OUT.
# STEPS picks steps (default: all but the graphs, epochs, jpeg, precision, neighbourhood and
# original steps; `tests` needs pytest-xdist); RUNS sets the runs per timing, TESTS_TIMEOUT the
# suite's limit in seconds (default 360). `STEPS=original`
# trains on the lossless CIFAR-10 (ORIGINAL=cifar10 downloads it; or a path to
# cifar-10-python.tar.gz).
set -u -o pipefail  # a step's status is its python's, not its last `tee`'s
OUT=${OUT:-/tmp/cifarlab-gpu}
STEPS=${STEPS:-tests,smoke,tta,profile,throughput,compile}
KNOWN=tests,smoke,tta,profile,throughput,compile,graphs,epochs,jpeg,precision,neighbourhood,original
for name in ${STEPS//,/ }; do  # a typo must not quietly run nothing
    [[ ",$KNOWN," == *",$name,"* ]] || { echo "unknown step '$name'; steps: $KNOWN" >&2; exit 2; }
done
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
# absolute: tests run `python -m cifarlab` from other folders
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 CIFARLAB_CACHE=${CIFARLAB_CACHE:-/tmp/cache}
DATA=${DATA:-.devdata/cifar10-jpeg.tar.gz}
RUNS=${RUNS:-10}
step() { [[ ",$STEPS," == *",$1,"* ]]; }
failed=()

nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$OUT/gpu.txt"
if step tests; then  # the whole suite on the GPU: CUDA paths the CPU-only CI never runs
    echo "== tests on CUDA"
    CIFARLAB_DATA=$DATA CIFARLAB_REQUIRE_DATA=1 timeout ${TESTS_TIMEOUT:-360} python3 -m pytest -q -n 8 \
        -p no:cacheprovider -rfE tests 2>&1 | tee "$OUT/pytest_cuda.txt" | tail -15 \
        || failed+=(tests)
fi
if step smoke; then
    echo "== smoke: 1 epoch of speedrun"
    timeout 120 python3 -m cifarlab train --preset speedrun --epochs 1 --data "$DATA" \
        --workspace /tmp/ws-smoke 2>&1 | tail -4 | tee "$OUT/smoke.txt" || failed+=(smoke)
fi
if step tta; then
    echo "== time to 94%: $RUNS runs of speedrun"
    timeout 300 python3 benchmarks/time_to_accuracy.py --presets speedrun --runs "$RUNS" \
        --data "$DATA" 2>&1 | grep -v '^\s*$' | tee "$OUT/time_to_accuracy.txt" \
        | grep '^{"' || failed+=(tta)
fi
if step profile; then
    echo "== profile of one epoch"
    timeout 120 python3 benchmarks/profile_epoch.py --preset speedrun --device cuda --steps 48 \
        --data "$DATA" >"$OUT/profile.json" 2>"$OUT/profile.log" || failed+=(profile)
    head -c 1500 "$OUT/profile.json"
fi
if step throughput; then
    echo "== throughput"
    timeout 180 python3 benchmarks/throughput.py --device cuda --steps 40 --data "$DATA" 2>&1 \
        | tee "$OUT/throughput.txt" | grep '^{"' || failed+=(throughput)
fi
if step compile; then
    echo "== time to 94%, compiled: 3 runs"
    timeout 240 python3 benchmarks/time_to_accuracy.py --presets speedrun --runs 3 --compile \
        --data "$DATA" 2>&1 | tee "$OUT/time_to_accuracy_compiled.txt" | grep '^{"' \
        || failed+=(compile)
fi
if step graphs; then  # the most CUDA graphs could save on a training step
    echo "== a speedrun step, eager vs one CUDA graph"
    timeout 120 python3 benchmarks/cuda_graph_step.py 2>&1 | tee "$OUT/cuda_graph_step.txt" \
        || failed+=(graphs)
fi
if step epochs; then  # where the recipe levels off on this data
    for epochs in ${EPOCHS:-15 20 30}; do
        echo "== speedrun, $epochs epochs: 2 runs"
        timeout 200 python3 benchmarks/time_to_accuracy.py --presets speedrun --runs 2 \
            --epochs "$epochs" --data "$DATA" 2>&1 | tee "$OUT/epochs_$epochs.txt" \
            | grep '"runs"' || failed+=("epochs $epochs")
    done
fi
if step jpeg; then  # what further JPEG loss costs the full recipe (one seed per point)
    echo "== speedrun on the copy re-encoded at lower JPEG qualities"
    timeout 240 python3 benchmarks/jpeg_quality.py --preset speedrun --qualities 90,50,30 \
        --data "$DATA" 2>&1 | tee "$OUT/jpeg_quality.txt" | grep '^{"' || failed+=(jpeg)
fi
if step precision; then  # the speedrun recipe in each precision (bf16 is the preset's)
    for precision in ${PRECISIONS:-bf16 fp16 fp32}; do
        echo "== speedrun in $precision: $RUNS runs"
        timeout 200 python3 benchmarks/time_to_accuracy.py --presets speedrun --runs "$RUNS" \
            --precision "$precision" --data "$DATA" 2>&1 | tee "$OUT/precision_$precision.txt" \
            | grep '"runs"' || failed+=("precision $precision")
    done
fi
if step neighbourhood; then  # retuning lr, weight decay, label smoothing on this data
    echo "== the speedrun recipe's neighbourhood: 54 runs"
    CIFARLAB_DATA=$DATA timeout ${SWEEP_TIMEOUT:-420} python3 -m cifarlab sweep \
        benchmarks/speedrun_neighbourhood.toml --workspace /tmp/ws-nb --quiet 2>&1 | tail -3 \
        || failed+=(neighbourhood)
    for by in lr weight_decay label_smoothing lr,weight_decay,label_smoothing; do
        python3 -m cifarlab results --workspace /tmp/ws-nb --experiment speedrun-neighbourhood \
            --group-by "$by" --sort final_test_acc --format markdown
    done 2>&1 | tee "$OUT/neighbourhood.md"
fi
if step original; then  # the lossless original, where it can be reached: report both
    echo "== time to 94% on ${ORIGINAL:=cifar10}: $RUNS runs of speedrun"
    timeout 300 python3 benchmarks/time_to_accuracy.py --presets speedrun --runs "$RUNS" \
        --data "$ORIGINAL" 2>&1 | tee "$OUT/time_to_accuracy_original.txt" | grep '"runs"' \
        || failed+=(original)
fi
if ((${#failed[@]})); then
    echo "failed steps: ${failed[*]}" | tee "$OUT/failed.txt" >&2
    exit 1
fi
