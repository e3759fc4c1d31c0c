#!/usr/bin/env bash
# gpu-check.sh — the prepared GPU check of issue 7, in two steps.
#
#   scripts/gpu-check.sh build [DIR]   here (no GPU): a stripped `--release --features cuda`
#                                      build of the `mmaudio` CLI and the GStreamer plugin
#                                      (libgstmmaudio.so), packed with the parity fixtures
#                                      that fit and this script into DIR (default gpu-check/),
#                                      at most $GPU_CHECK_MAX_MIB MiB (default 60) in all.
#   DIR/gpu-check.sh run               on the GPU machine (no network, no Rust needed):
#                                      nvidia-smi, parity fixtures on the GPU in f32 and bf16,
#                                      real-size random-weight benchmarks (e2e S-16k and
#                                      L-44k-v2 in bf16, streaming RTF), JSON under $OUT, a
#                                      summary at the end. Each step runs under `timeout` and
#                                      a failing step does not stop the next; ~4–5 min on an
#                                      H100 (the step limits add up to under 6 min).
#
# With the device tool: build here, then run with carry ["gpu-check"] and the command
#   bash gpu-check/gpu-check.sh run
# ($OUT is set there; elsewhere it defaults to ./gpu-check-out).
#
# build env:
#   CUDA_COMPUTE_CAP      kernels' compute capability (default 90, Hopper; via cuda-env.sh)
#   MMAUDIO_CUDA_VENV     venv with the CUDA 13.0 wheels (see scripts/cuda-env.sh)
#   CARGO_TARGET_DIR      as usual (default target/)
#   GPU_CHECK_STUB_STATIC_KERNELS=1 (default)  candle-kernels' statically linked MoE/GGUF
#                         kernels (~30 of the ~35 min of a release build on 2 cores) are
#                         compiled as empty objects (scripts/nvcc-check-wrapper.sh). That is
#                         only sound because nothing we run references them: the CLI's link
#                         would fail on an undefined reference, and the build fails if the
#                         plugin (a shared library, which may keep undefined symbols) lists
#                         any of them as undefined. Set 0 for a build with the real kernels.
#   GPU_CHECK_PARITY_SRC  fixture folder (default ../shared/parity of the source tree)
#   GPU_CHECK_MAX_MIB     size limit of the folder (default 60; the device tool carries
#                         64 MiB with the working tree)
# run env:
#   OUT                   where JSON and logs go (default ./gpu-check-out)
#   GPU_CHECK_DEVICE      device (default cuda:0)
#   GPU_CHECK_BIN_DIR     take mmaudio and libgstmmaudio.so from here instead of the bundle
#   GPU_CHECK_PARITY_DIR  fixture folder (default: the bundle's parity/)
#   GPU_CHECK_SMOKE=1     tiny models, 1 s windows, 1 step, 1 run (tests this script's logic
#                         on a CPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 GPU_CHECK_BIN_DIR=...)
#   GPU_CHECK_STEPS       CFG steps of the benchmarks (default 25)
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# `scripts/gpu-check.sh run` in a source tree uses the bundle in gpu-check/
if [ "${1:-}" = run ] && [ ! -f "$here/bin.tar.xz" ] && [ -f "$here/../gpu-check/bin.tar.xz" ]; then
  here="$(cd "$here/../gpu-check" && pwd)"
fi

die() {
  echo "gpu-check: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------
cmd_build() {
  set -e
  local root dest max_mib
  root="$(cd "$here/.." && pwd)"
  [ -f "$root/Cargo.toml" ] || die "build runs from the source tree (scripts/gpu-check.sh)"
  cd "$root"
  dest="$(realpath -m "${1:-$root/gpu-check}")"
  max_mib="${GPU_CHECK_MAX_MIB:-60}"
  local t0
  t0=$(date +%s)
  set +eu
  # shellcheck source=cuda-env.sh
  source scripts/cuda-env.sh || die "scripts/cuda-env.sh failed"
  set -eu
  local target="${CARGO_TARGET_DIR:-$root/target}"
  if [ "${GPU_CHECK_STUB_STATIC_KERNELS:-1}" = 1 ]; then
    export NVCC_REAL
    NVCC_REAL="$(command -v nvcc)"
    export NVCC="$root/scripts/nvcc-check-wrapper.sh"
    echo "gpu-check: static MoE/GGUF kernels stubbed (GPU_CHECK_STUB_STATIC_KERNELS=0 for real ones)" >&2
  fi
  # one invocation: two would resolve features differently and build candle twice
  nice -n 10 cargo build --release -p mmaudio -p gst-plugin-mmaudio --features cuda \
    --bin mmaudio --lib
  local cli="$target/release/mmaudio" plugin="$target/release/libgstmmaudio.so"
  [ -x "$cli" ] && [ -f "$plugin" ] || die "build outputs missing under $target/release"
  if [ "${GPU_CHECK_STUB_STATIC_KERNELS:-1}" = 1 ]; then
    # the plugin must not need any of the stubbed kernels
    local ffi syms bad
    ffi="$(ls -d ~/.cargo/registry/src/*/candle-kernels-0.11*/src/ffi.rs 2>/dev/null | head -n1)"
    syms="$(grep -oE 'pub fn [A-Za-z_0-9]+' "$ffi" | awk '{print $3}')"
    [ -n "$syms" ] || die "no kernel symbols found in candle-kernels' ffi.rs"
    bad="$(nm -D --undefined-only "$plugin" | awk '{print $NF}' | grep -Fx -f <(echo "$syms") || true)"
    [ -z "$bad" ] || die "the plugin references stubbed kernels: $bad (build with GPU_CHECK_STUB_STATIC_KERNELS=0)"
  fi

  rm -rf "$dest"
  mkdir -p "$dest"
  local stage
  stage="$(mktemp -d)"
  cp "$cli" "$plugin" "$stage/"
  strip "$stage/mmaudio" "$stage/libgstmmaudio.so"
  # one xz stream: the kernels' PTX, embedded in both files, is stored once
  tar -C "$stage" -cf - mmaudio libgstmmaudio.so | xz -9e -T2 >"$dest/bin.tar.xz"
  ls -l "$stage" >&2
  rm -rf "$stage"
  cp "$here/gpu-check.sh" "$dest/"
  {
    echo "built $(date -u +%FT%TZ) from $(git -C "$root" rev-parse --short HEAD 2>/dev/null)$(git -C "$root" diff --quiet 2>/dev/null || echo '+dirty')"
    echo "nvcc $(nvcc --version | grep -oE 'release [0-9.]+'), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, stubbed static kernels: ${GPU_CHECK_STUB_STATIC_KERNELS:-1}"
  } >"$dest/BUILD-INFO"

  # parity fixtures, most useful on a GPU first, while they fit
  local src="${GPU_CHECK_PARITY_SRC:-$root/../shared/parity}"
  if [ -d "$src" ]; then
    mkdir -p "$dest/parity"
    [ -f "$src/README.md" ] && cp "$src/README.md" "$dest/parity/"
    local used limit c group g size skipped=""
    limit=$((max_mib * 1024 * 1024))
    for c in net_tiny_v2_44k_8s vae_decoder_16k vae_decoder_44k vocoder_16k vocoder_44k \
      clip_text_tiny clip_vision_tiny mel_16k mel_44k tokenizer sync_segments \
      vae_encoder_16k vae_encoder_44k "net_tiny_8s net_tiny_5s sampler_tiny" \
      synchformer_tiny frame_preprocess $(ls "$src"); do
      group=""
      for g in $c; do [ -d "$src/$g" ] && [ ! -e "$dest/parity/$g" ] && group="$group $g"; done
      [ -n "$group" ] || continue
      case " $skipped " in *" ${group# } "*) continue ;; esac
      used=$(du -sb "$dest" | cut -f1)
      # shellcheck disable=SC2086
      size=$(cd "$src" && du -scb $group | tail -n1 | cut -f1)
      if [ $((used + size)) -le "$limit" ]; then
        for g in $group; do cp -r "$src/$g" "$dest/parity/"; done
      else
        skipped="$skipped$group"
      fi
    done
    echo "parity fixtures left out (size limit):${skipped:- none}" >>"$dest/BUILD-INFO"
    chmod -R u+w "$dest/parity"
  else
    echo "gpu-check: no parity fixtures at $src" >&2
  fi
  cat "$dest/BUILD-INFO"
  du -sh "$dest"
  local total
  total=$(du -sb "$dest" | cut -f1)
  [ "$total" -le $((max_mib * 1024 * 1024)) ] || die "$dest is $total bytes, over $max_mib MiB"
  echo "gpu-check: build done in $(($(date +%s) - t0)) s -> $dest"
}

# ---------------------------------------------------------------------------------------
# run: find the CUDA 13 libraries of the machine (PyTorch's pip packages or the system)
cuda_lib_path() {
  local dirs="" d py
  for py in python3 python; do
    command -v "$py" >/dev/null || continue
    d="$("$py" - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = []
try:
    roots += site.getsitepackages()
except Exception:
    pass
try:
    roots.append(site.getusersitepackages())
except Exception:
    pass
roots += [p for p in sys.path if p.endswith("-packages")]
out = []
for r in dict.fromkeys(roots):
    for pat in ("nvidia/cu13/lib", "nvidia/*/lib", "torch/lib"):
        for d in sorted(glob.glob(os.path.join(r, pat))):
            if glob.glob(os.path.join(d, "lib*.so*")) and d not in out:
                out.append(d)
print(":".join(out))
EOF
)"
    [ -n "$d" ] && dirs="$dirs:$d"
    break
  done
  if command -v ldconfig >/dev/null; then
    for l in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13 libnvrtc.so.13; do
      d="$(ldconfig -p | awk -v l="$l" '$1 == l {print $NF; exit}')"
      [ -n "$d" ] && dirs="$dirs:$(dirname "$d")"
    done
  fi
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && dirs="$dirs:$d"
  done
  echo "${dirs#:}"
}

declare -a STEP_LINES=()
step() {
  # step NAME LIMIT_S LOGFILE CMD...: run under timeout, record status, never fail
  local name="$1" limit="$2" log="$3"
  shift 3
  local t0 rc
  t0=$(date +%s.%N)
  echo "== $name (limit ${limit}s): $*"
  timeout -k 5 "$limit" "$@" >"$log" 2>&1
  rc=$?
  local dt
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  tail -n 25 "$log"
  local status=ok
  [ "$rc" = 0 ] || status="FAIL(rc=$rc$([ "$rc" = 124 ] && echo ', timeout'))"
  echo "-- $name: $status in ${dt}s"
  STEP_LINES+=("$(printf '%-28s %-22s %7ss' "$name" "$status" "$dt")")
  printf '%s\t%s\t%s\n' "$name" "$status" "$dt" >>"$OUT/steps.tsv"
}

cmd_run() {
  OUT="${OUT:-$PWD/gpu-check-out}"
  mkdir -p "$OUT" || die "cannot create $OUT"
  OUT="$(cd "$OUT" && pwd)"
  : >"$OUT/steps.tsv"
  local dev="${GPU_CHECK_DEVICE:-cuda:0}" smoke="${GPU_CHECK_SMOKE:-0}"
  local steps="${GPU_CHECK_STEPS:-25}" t_all
  t_all=$(date +%s)
  local bin
  if [ -n "${GPU_CHECK_BIN_DIR:-}" ]; then
    bin="$(cd "$GPU_CHECK_BIN_DIR" && pwd)"
  else
    [ -f "$here/bin.tar.xz" ] || die "no bin.tar.xz next to $0 (build first, or set GPU_CHECK_BIN_DIR)"
    bin="$OUT/bin"
    mkdir -p "$bin"
    if command -v xz >/dev/null; then
      xz -dc "$here/bin.tar.xz" | tar -C "$bin" -xf - || die "unpacking bin.tar.xz failed"
    else
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
        "$here/bin.tar.xz" "$bin" || die "unpacking bin.tar.xz failed (no xz, python3 failed)"
    fi
  fi
  local mm="$bin/mmaudio"
  [ -x "$mm" ] || die "$mm missing"
  local parity="${GPU_CHECK_PARITY_DIR:-$here/parity}"
  local libs
  libs="$(cuda_lib_path)"
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  {
    echo "host $(hostname) $(date -u +%FT%TZ), device $dev, smoke $smoke, steps $steps"
    [ -f "$here/BUILD-INFO" ] && cat "$here/BUILD-INFO"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "cargo: $(command -v cargo || echo none); python3: $(command -v python3 || echo none)"
  } | tee "$OUT/env.txt"

  step nvidia-smi 20 "$OUT/nvidia-smi.txt" \
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap,clocks.max.sm --format=csv
  step ldd 20 "$OUT/ldd.txt" bash -c \
    "ldd '$mm' '$bin/libgstmmaudio.so' | grep -E 'not found|cuda|cublas|curand|nvrtc|gst' ; ! ldd '$mm' | grep -q 'not found'"

  local sz=() bench_args=(--device "$dev" --precision bf16 --duration 8 --steps "$steps" --runs 5 --warmup 2)
  local stream_args=(--device "$dev" --precision bf16 --steps "$steps" --windows 8 --warmup 1 --window 8 --hop 2)
  local ptime=150 btime=150 stime=120
  if [ "$smoke" = 1 ]; then
    sz=(--tiny --width 64 --height 48)
    bench_args=(--device "$dev" --precision bf16 --duration 1 --steps 1 --runs 1 --warmup 0)
    stream_args=(--device "$dev" --precision bf16 --steps 1 --windows 2 --warmup 0 --window 1 --hop 0.5)
    ptime=300 btime=120 stime=120
  fi

  if [ -d "$parity" ]; then
    step parity-f32 "$ptime" "$OUT/parity_f32.log" \
      "$mm" parity "$parity" --device "$dev" --precision f32 --json "$OUT/parity_f32.json"
    step parity-bf16 "$ptime" "$OUT/parity_bf16.log" \
      "$mm" parity "$parity" --device "$dev" --precision bf16 --json "$OUT/parity_bf16.json"
  else
    echo "gpu-check: no parity fixtures at $parity, skipping parity" >&2
  fi
  step e2e-small_16k "$btime" "$OUT/e2e_small_16k.log" \
    "$mm" bench e2e --variant small_16k "${bench_args[@]}" "${sz[@]}" --json "$OUT/e2e_small_16k.json"
  step e2e-large_44k_v2 "$btime" "$OUT/e2e_large_44k_v2.log" \
    "$mm" bench e2e --variant large_44k_v2 "${bench_args[@]}" "${sz[@]}" --json "$OUT/e2e_large_44k_v2.json"
  step stream-large_44k_v2 "$stime" "$OUT/stream_large_44k_v2.log" \
    "$mm" bench stream --variant large_44k_v2 "${stream_args[@]}" "${sz[@]}" --json "$OUT/stream_large_44k_v2.json"
  step stream-small_16k "$stime" "$OUT/stream_small_16k.log" \
    "$mm" bench stream --variant small_16k "${stream_args[@]}" "${sz[@]}" --json "$OUT/stream_small_16k.json"
  # continuation mode (near-live, issue 11): S-16k at hop 1 s, L-44k-v2 at hop 2 s, 16 windows
  # (the first grow to 8 s); per-hop compute by stage, cache hit rates, RTF = compute / hop
  local cont=(--device "$dev" --precision bf16 --steps "$steps" --windows 16 --warmup 1 --window 8)
  local hop16=1 hop44=2
  [ "$smoke" = 1 ] && cont=(--device "$dev" --precision bf16 --steps 1 --windows 4 --warmup 0 --window 1) \
    && hop16=0.25 hop44=0.5
  step stream-continuation-small_16k "$stime" "$OUT/stream_continuation_small_16k.log" \
    "$mm" bench stream --mode continuation --hop "$hop16" --variant small_16k "${cont[@]}" "${sz[@]}" \
    --json "$OUT/stream_continuation_small_16k.json"
  step stream-continuation-large_44k_v2 "$stime" "$OUT/stream_continuation_large_44k_v2.log" \
    "$mm" bench stream --mode continuation --hop "$hop44" --variant large_44k_v2 "${cont[@]}" "${sz[@]}" \
    --json "$OUT/stream_continuation_large_44k_v2.json"
  if command -v gst-inspect-1.0 >/dev/null; then
    step gst-inspect 30 "$OUT/gst-inspect.txt" env GST_PLUGIN_PATH="$bin" \
      GST_REGISTRY="$OUT/gst-registry.bin" gst-inspect-1.0 mmaudiogen
  fi

  summary | tee "$OUT/summary.txt"
  echo "gpu-check: run done in $(($(date +%s) - t_all)) s, results in $OUT"
}

summary() {
  echo
  echo "================ gpu-check summary ================"
  local l
  for l in "${STEP_LINES[@]}"; do echo "$l"; done
  if command -v python3 >/dev/null; then
    python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    try:
        with open(p) as f:
            v = json.load(f)
    except Exception:
        return None
    # bench reports keep their extra fields under "extra": flatten them
    if isinstance(v, list):
        v = [{**r, **r.get("extra", {})} if isinstance(r, dict) else r for r in v]
    return v
for prec in ("f32", "bf16"):
    s = load(f"parity_{prec}.json")
    if not s:
        continue
    cases = s.get("cases", [])
    worst = sorted((c for c in cases if c.get("status") in ("ok", "report", "FAIL")),
                   key=lambda c: -(c.get("max_abs") or 0))[:3]
    print(f"parity {prec}: ran {s.get('ran')} failed {s.get('failed')}; largest max_abs: "
          + ", ".join(f"{c['case']} {c.get('max_abs', float('nan')):.3g} (rel {c.get('max_rel', float('nan')):.3g})"
                      for c in worst))
goals = {"small_16k": 0.40, "large_44k_v2": 0.8}
for v, goal in goals.items():
    r = load(f"e2e_{v}.json")
    if not r:
        continue
    tot = r[0]
    st = tot.get("stages", {})
    parts = " ".join(f"{k} {st[k]['median_s']:.3f}" for k in
                     ("preprocess", "clip", "sync", "text", "sampling", "vae", "vocoder") if k in st)
    print(f"e2e {v} [{tot['device']} {tot['dtype']}]: median {tot['median_s']:.3f} s "
          f"(goal {goal} s on an H100), without frame resize "
          f"{st.get('total_without_preprocess', {}).get('median_s', float('nan')):.3f} s; stages: {parts}; "
          f"build {tot.get('build_s', 0):.1f} s, "
          f"peak RSS {tot['peak_rss_mb']:.0f} MB")
for v in ("large_44k_v2", "small_16k"):
    r = load(f"stream_{v}.json")
    if not r:
        continue
    r = r[0]
    line = (f"stream {v}: {len(r['times_s'])} windows of {r['window_s']} s, hop {r['hop_s']} s: "
            f"per window median {r['median_s']:.3f} s, RTF median {r['rtf_median']:.3f} max {r['rtf_max']:.3f}")
    if "rtf_requested_hop_median" in r:
        line += (f"; at the requested {r['requested_hop_s']} s hop: RTF median "
                 f"{r['rtf_requested_hop_median']:.3f} max {r['rtf_requested_hop_max']:.3f} (goal 0.5)")
    print(line)
for v in ("small_16k", "large_44k_v2"):
    r = load(f"stream_continuation_{v}.json")
    if not r:
        continue
    r = r[0]
    st = r.get("stages_median_s", {})
    print(f"continuation {v}: hop {r['hop_s']:.3f} s, {r['steady_windows']} full windows: compute per hop "
          f"{r['compute_per_hop_median_s']:.3f} s, RTF median {r['rtf_median']:.3f} max {r['rtf_max']:.3f}; "
          f"latency hop+held back+frame {r['latency_engine_s']:.3f} s (+compute {r['latency_with_median_compute_s']:.3f} s); "
          f"cache hits clip {r.get('clip_hit_rate')} sync {r.get('sync_hit_rate')}; stages "
          + " ".join(f"{k} {st[k]:.3f}" for k in ("preprocess", "clip", "sync", "text", "sampling", "vae", "vocoder") if k in st))
EOF
  fi
}

case "${1:-}" in
  build)
    shift
    cmd_build "$@"
    ;;
  run)
    shift
    cmd_run "$@"
    ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
