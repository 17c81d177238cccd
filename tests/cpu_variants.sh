#!/usr/bin/env bash
# Run tests under several CPU kernel settings and thread counts, one setting after another; one line per setting
# (pytest's summary, then the ids of any failed test).
#   tests/cpu_variants.sh                        # the golden tests (-k golden)
#   tests/cpu_variants.sh tests/test_trainer.py  # any pytest arguments
# The settings cap the instruction set of torch's own kernels (ATEN_CPU_CAPABILITY), of oneDNN (ONEDNN_MAX_CPU_ISA)
# and of MKL (MKL_ENABLE_INSTRUCTIONS), put MKL on its reproducible code path (MKL_CBWR) and set the intra-op thread
# count (torch.set_num_threads): each changes the kernels and summation orders that convolutions, matrix products
# and reductions use, as another x86-64 CPU would. Tests that pass under all of them do not depend on the CPU.
# Exit status 1 if any setting had a failure.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ARGS=("$@"); [ ${#ARGS[@]} -eq 0 ] && ARGS=(tests -k golden)
status=0
run() {  # run NAME THREADS [VAR=VALUE ...]
    local name=$1 threads=$2 out; shift 2
    out=$(env "$@" "$PY" -c "import sys, torch, pytest; torch.set_num_threads($threads); \
sys.exit(pytest.main(['-q', '-rf', '-p', 'no:cacheprovider', *sys.argv[1:]]))" "${ARGS[@]}" 2>&1)
    [ $? -eq 0 ] || status=1
    printf '%-84s | %s |%s\n' "$name" "$(tail -1 <<<"$out" | sed 's/=//g; s/^ *//; s/ *$//')" \
        "$(grep '^FAILED' <<<"$out" | sed 's/^FAILED / /; s/ - .*//' | tr '\n' ' ')"
}
run "plain (2 threads)" 2
run "torch.set_num_threads(1)" 1
run "ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2" 2 \
    ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2
run "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX OMP_NUM_THREADS=1 (1 thread)" 1 \
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX OMP_NUM_THREADS=1
run "MKL_CBWR=COMPATIBLE" 2 MKL_CBWR=COMPATIBLE
exit $status
