#!/usr/bin/env bash
# bench-vs-official.sh — CPU speed of the port against the official PyTorch code, side by side.
#
#   scripts/bench-vs-official.sh [ITEM...]      (default: every item)
#
# For each item: the official module (`official_bench.py ITEM`, real size, random weights,
# fp32, 2 threads, warm-up + median), then ours (`mmaudio bench …`, same shapes), then the
# official module again. The ratio is ours ÷ the mean of the two official medians (wall and
# process CPU seconds); the load average is read before each run. A header gives the date,
# the CPU model, the ISA our kernels and GEMM ran with, torch's version and
# `cpu_capability`. Every figure in BENCHMARKS.md comes from this script.
#
# ITEM (as official_bench.py names them) and what runs on our side:
#   net_fwd_b2       bench net --variant small_16k   net_small_16k_fwd_b2
#   net_cfg_step_b1  bench net --variant small_16k   net_small_16k_cfg_step (cond+uncond as
#                    one batch of 2; the official step is 2 × predict_flow at batch 1)
#   vae_16k          bench vae --mode 16k            vae_16k_decode
#   bigvgan_16k      bench vocoder --mode 16k        bigvgan_16k_vocode
#   text             bench text                      clip_text (incl. tokenisation)
#   sync             bench sync                      synchformer 1 segment
#   clip1            bench clip --frames 1           clip_vision 1 frame
#
# env:
#   MMAUDIO_REF     the official code (hkchengrex/MMAudio @974010a), required
#   OFFICIAL_PY     python with torch and the official code's dependencies
#                   (default: python3)
#   OFFICIAL_BENCH  official_bench.py (default: ../shared/anchors/official_bench.py beside
#                   the repository)
#   MMAUDIO_BIN     our CLI (default: target/release/mmaudio)
#   RUNS, WARMUP    timed and warm-up runs on both sides (default 3 and 1)
#   NICE            niceness of the benchmark processes (default -10; needs root, set 0
#                   otherwise). Each runs in its own session whose autogroup gets the same
#                   niceness: with autogroups (Linux default) a process's nice only orders
#                   it against its own session, not against other users' builds.
#   OUT             folder for the raw JSON (default: a temporary folder, printed)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
MMAUDIO_BIN=${MMAUDIO_BIN:-$here/target/release/mmaudio}
OFFICIAL_PY=${OFFICIAL_PY:-python3}
OFFICIAL_BENCH=${OFFICIAL_BENCH:-$here/../shared/anchors/official_bench.py}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
NICE=${NICE:--10}
OUT=${OUT:-$(mktemp -d /tmp/bench-vs-official.XXXXXX)}
mkdir -p "$OUT"

die() { echo "bench-vs-official: $*" >&2; exit 2; }
[ -n "${MMAUDIO_REF:-}" ] && [ -d "$MMAUDIO_REF/mmaudio" ] ||
  die "set MMAUDIO_REF to a checkout of the official code (hkchengrex/MMAudio @974010a)"
[ -f "$OFFICIAL_BENCH" ] || die "official_bench.py not found at $OFFICIAL_BENCH (set OFFICIAL_BENCH)"
[ -x "$MMAUDIO_BIN" ] || die "$MMAUDIO_BIN not built (cargo build --release)"
export MMAUDIO_REF

all=(net_fwd_b2 net_cfg_step_b1 vae_16k bigvgan_16k text sync clip1)
items=("$@")
[ ${#items[@]} -gt 0 ] || items=("${all[@]}")

# our command and report item for each official item
ours_cmd() {
  case $1 in
    net_fwd_b2 | net_cfg_step_b1) echo "net --variant small_16k --steps 0" ;;
    vae_16k) echo "vae --mode 16k" ;;
    bigvgan_16k) echo "vocoder --mode 16k" ;;
    text) echo "text" ;;
    sync) echo "sync" ;;
    clip1) echo "clip --frames 1" ;;
    *) die "unknown item $1 (one of: ${all[*]})" ;;
  esac
}
ours_item() {
  case $1 in
    net_fwd_b2) echo "net_small_16k_fwd_b2" ;;
    net_cfg_step_b1) echo "net_small_16k_cfg_step" ;;
    vae_16k) echo "vae_16k_decode" ;;
    bigvgan_16k) echo "bigvgan_16k_vocode" ;;
    text) echo "clip_text" ;;
    sync) echo "synchformer" ;;
    clip1) echo "clip_vision ViT-H-14-384 1 frame" ;;
  esac
}
for it in "${items[@]}"; do ours_cmd "$it" > /dev/null; done

load() { cut -d' ' -f1-3 /proc/loadavg; }
prio() { # run "$@" at niceness $NICE in a new session with an autogroup of the same niceness
  setsid -w bash -c 'echo "$0" > /proc/self/autogroup 2> /dev/null; exec nice -n "$0" "$@"' \
    "$NICE" "$@"
}
run_official() { # item, json out
  prio "$OFFICIAL_PY" "$OFFICIAL_BENCH" "$1" --runs "$RUNS" --warmup "$WARMUP" \
    2> "$2.log" | tail -n 1 > "$2"
  [ -s "$2" ] || { cat "$2.log" >&2; die "official $1 failed"; }
}
run_ours() { # item, json out
  # shellcheck disable=SC2046
  prio "$MMAUDIO_BIN" bench $(ours_cmd "$1") --device cpu --runs "$RUNS" \
    --warmup "$WARMUP" --json "$2" > "$2.log" 2>&1 || { cat "$2.log" >&2; die "ours $1 failed"; }
}

cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo)
isa_flags=$(for f in avx2 fma avx512f avx512bw avx512dq avx512vl avx512_vnni avx512_bf16 amx_tile; do
  if [[ " $flags " == *" $f "* ]]; then printf '%s ' "$f"; fi
done)
torch_info=$("$OFFICIAL_PY" -c 'import torch; print(torch.__version__, torch.backends.cpu.get_cpu_capability())')
commit=$(git -C "$here" describe --always --dirty 2> /dev/null || echo unknown)

echo "# bench-vs-official $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# host: $cpu_model, $(nproc) vCPU; flags: $isa_flags"
echo "# official: torch ${torch_info% *}, cpu_capability ${torch_info##* }, $OFFICIAL_BENCH"
echo "# ours: $MMAUDIO_BIN (source $commit); its kernels' and GEMM's ISA per row"
echo "# runs $RUNS, warm-up $WARMUP, nice $NICE; raw JSON in $OUT"
printf '%-16s %10s %10s %10s %7s %7s  %s\n' item official ours official ratio cpu-r \
  "load before (official / ours / official), ours' ISA"

for it in "${items[@]}"; do
  l1=$(load); run_official "$it" "$OUT/$it.official1.json"
  l2=$(load); run_ours "$it" "$OUT/$it.ours.json"
  l3=$(load); run_official "$it" "$OUT/$it.official2.json"
  python3 - "$it" "$OUT" "$(ours_item "$it")" "$l1" "$l2" "$l3" <<'EOF'
import json, sys
it, out, want, l1, l2, l3 = sys.argv[1:]
o1 = json.load(open(f"{out}/{it}.official1.json"))
o2 = json.load(open(f"{out}/{it}.official2.json"))
reps = json.load(open(f"{out}/{it}.ours.json"))
r = next(x for x in reps if x["item"].startswith(want))
med = lambda v: sorted(v)[len(v) // 2]
off = (o1["median_s"] + o2["median_s"]) / 2
off_cpu = (o1["median_cpu_s"] + o2["median_cpu_s"]) / 2
ours_cpu = med(r["cpu_s"]) if r.get("cpu_s") else float("nan")
isa = r.get("cpu", "").split("|", 1)[-1].strip()
print(f"{it:<16} {o1['median_s']:9.3f}s {r['median_s']:9.3f}s {o2['median_s']:9.3f}s "
      f"{r['median_s'] / off:7.2f} {ours_cpu / off_cpu:7.2f}  {l1.split()[0]} / {l2.split()[0]} / "
      f"{l3.split()[0]}, {isa}", flush=True)
EOF
done
