#!/usr/bin/env bash
# gpu-check.sh — the prepared GPU check (issues 7 and 16), in two steps.
#
#   scripts/gpu-check.sh build [DIR]   here (no GPU): a stripped `--release` build of the
#                                      `mmaudio` CLI WITHOUT GStreamer (`--no-default-features
#                                      --features cuda`: it starts on a bare PyTorch machine)
#                                      and of the GStreamer plugin (libgstmmaudio.so, for
#                                      machines that have GStreamer), packed with the parity
#                                      fixtures that fit and this script into DIR (default
#                                      gpu-check/), at most $GPU_CHECK_MAX_MIB MiB in all.
#   DIR/gpu-check.sh run               on the GPU machine (no network, no Rust needed):
#                                      driver and CUDA library checks first, a PTX warm-up,
#                                      then the steps by value — bf16 parity on a few cases,
#                                      e2e S-16k, e2e L-44k-v2, f32 parity, streaming RTF,
#                                      the remaining bf16 parity, gst-inspect. Each step runs
#                                      under `timeout`, the limits add up to at most 540 s
#                                      (a device command is killed at 600 s) and a running
#                                      deadline clamps every step to what is left; a failing
#                                      or timed-out step does not stop the next, and
#                                      summary.txt is rewritten after every step.
#   scripts/gpu-check.sh plan          the run's steps and time limits, and their total.
#   scripts/gpu-check.sh build-cli     only the CLI, as `build` compiles it (prints its path).
#   scripts/gpu-check.sh check-cli F   fail if the ELF file F needs a GStreamer/GLib library.
#
# With the device tool: build here, then run with carry ["gpu-check"] and the command
#   bash gpu-check/gpu-check.sh run
# ($OUT is set there; elsewhere it defaults to ./gpu-check-out).
#
# build env:
#   CUDA_COMPUTE_CAP      kernels' compute capability (default 90, Hopper; via cuda-env.sh)
#   MMAUDIO_CUDA_VENV     venv with the CUDA 13.0 wheels (see scripts/cuda-env.sh)
#   CARGO_TARGET_DIR      as usual (default target/)
#   GPU_CHECK_FEATURES    cargo features of the build (default cuda; `none` builds for the
#                         CPU, which tests use to check the CLI's dependencies cheaply)
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
#   OUT                   where JSON, logs and summary.txt go (default ./gpu-check-out)
#   GPU_CHECK_DEVICE      device (default cuda:0)
#   GPU_CHECK_BIN_DIR     take mmaudio and libgstmmaudio.so from here instead of the bundle
#   GPU_CHECK_PARITY_DIR  fixture folder (default: the bundle's parity/)
#   GPU_CHECK_SMOKE=1     tiny models, 1 s windows, 1 step, 1 run, two parity cases (tests
#                         this script's logic on a CPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1
#                         GPU_CHECK_BIN_DIR=...)
#   GPU_CHECK_STEPS       CFG steps of the benchmarks (default 25)
#   GPU_CHECK_BUDGET_S    deadline of the whole run in seconds (default 540)
#   GPU_CHECK_IGNORE_DRIVER=1  run the GPU steps even if the driver is older than 580
#   GPU_CHECK_HANG=STEP   (tests) STEP runs `sleep` instead of its command, under the limit
#                         GPU_CHECK_HANG_LIMIT (default 2 s), to exercise the timeout path
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# `scripts/gpu-check.sh run` in a source tree uses the bundle in gpu-check/
if [ "${1:-}" = run ] && [ ! -f "$here/bin.tar.xz" ] && [ -f "$here/../gpu-check/bin.tar.xz" ]; then
  here="$(cd "$here/../gpu-check" && pwd)"
fi

# The whole run must end before the device tool kills the command (600 s).
BUDGET_MAX_S=540
# PTX from nvcc 13.0 needs a CUDA 13.0 driver.
MIN_DRIVER=580

die() {
  echo "gpu-check: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------
# build

# check-cli FILE: the CLI must start where GStreamer is not installed
cmd_check_cli() {
  local f="${1:-}"
  [ -f "$f" ] || die "check-cli: no file ${f:-(none given)}"
  command -v readelf >/dev/null || die "check-cli: readelf (binutils) is needed"
  local needed bad
  needed="$(readelf -d "$f" | awk '/\(NEEDED\)/ {gsub(/[][]/, "", $NF); print $NF}')"
  [ -n "$needed" ] || die "check-cli: $f has no NEEDED entries (not a dynamic ELF file?)"
  echo "$f needs: $(echo "$needed" | tr '\n' ' ')"
  bad="$(echo "$needed" | grep -E '^lib(gst|glib-|gobject-|gio-|gmodule-|gthread-|orc-)' || true)"
  [ -z "$bad" ] || die "check-cli: $f needs GStreamer/GLib libraries: $(echo "$bad" | tr '\n' ' ')"
}

# features of the build: cuda unless GPU_CHECK_FEATURES says otherwise
build_features() {
  local f="${GPU_CHECK_FEATURES-cuda}"
  [ "$f" = none ] && f=""
  echo "$f"
}

# cargo_build_bins ROOT [CARGO ARGS...]: one cargo invocation with the bundle's flags
cargo_build_bins() {
  local root="$1"
  shift
  local features
  features="$(build_features)"
  local fargs=(--no-default-features)
  [ -n "$features" ] && fargs+=(--features "$features")
  case " $features " in
    *cuda*)
      set +eu
      # shellcheck source=cuda-env.sh
      source "$root/scripts/cuda-env.sh" || die "scripts/cuda-env.sh failed"
      set -eu
      if [ "${GPU_CHECK_STUB_STATIC_KERNELS:-1}" = 1 ]; then
        export NVCC_REAL
        NVCC_REAL="$(command -v nvcc)"
        export NVCC="$root/scripts/nvcc-check-wrapper.sh"
        echo "gpu-check: static MoE/GGUF kernels stubbed (GPU_CHECK_STUB_STATIC_KERNELS=0 for real ones)" >&2
      fi
      ;;
  esac
  # no `gst` feature: the CLI's GStreamer subcommands (generate, spectrogram) are left out,
  # so it needs no GStreamer/GLib at start-up
  (cd "$root" && nice -n 10 cargo build --release "${fargs[@]}" "$@")
}

cmd_build_cli() {
  set -e
  local root
  root="$(cd "$here/.." && pwd)"
  [ -f "$root/Cargo.toml" ] || die "build-cli runs from the source tree (scripts/gpu-check.sh)"
  cargo_build_bins "$root" -p mmaudio --bin mmaudio >&2
  local cli="${CARGO_TARGET_DIR:-$root/target}/release/mmaudio"
  cmd_check_cli "$cli" >&2
  echo "$cli"
}

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
  local target="${CARGO_TARGET_DIR:-$root/target}"
  # one invocation: two would resolve features differently and build candle twice
  cargo_build_bins "$root" -p mmaudio -p gst-plugin-mmaudio --bin mmaudio --lib
  local cli="$target/release/mmaudio" plugin="$target/release/libgstmmaudio.so"
  [ -x "$cli" ] && [ -f "$plugin" ] || die "build outputs missing under $target/release"
  cmd_check_cli "$cli"
  case " $(build_features) " in
    *cuda*)
      if [ "${GPU_CHECK_STUB_STATIC_KERNELS:-1}" = 1 ]; then
        # the plugin must not need any of the stubbed kernels
        local ffi syms bad
        ffi="$(ls -d ~/.cargo/registry/src/*/candle-kernels-0.11*/src/ffi.rs 2>/dev/null | head -n1)"
        syms="$(grep -oE 'pub fn [A-Za-z_0-9]+' "$ffi" | awk '{print $3}')"
        [ -n "$syms" ] || die "no kernel symbols found in candle-kernels' ffi.rs"
        bad="$(nm -D --undefined-only "$plugin" | awk '{print $NF}' | grep -Fx -f <(echo "$syms") || true)"
        [ -z "$bad" ] || die "the plugin references stubbed kernels: $bad (build with GPU_CHECK_STUB_STATIC_KERNELS=0)"
      fi
      ;;
  esac

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
    echo "features: $(build_features) (CLI without gst); nvcc $(nvcc --version 2>/dev/null | grep -oE 'release [0-9.]+' || echo none), CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-none}, stubbed static kernels: ${GPU_CHECK_STUB_STATIC_KERNELS:-1}"
    echo "CLI needs: $(readelf -d "$cli" | awk '/\(NEEDED\)/ {gsub(/[][]/, "", $NF); print $NF}' | tr '\n' ' ')"
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
# run: where the CUDA 13 libraries of the machine may be

# every Python interpreter we can find (PATH, system, conda, venvs, pyenv, uv)
python_candidates() {
  {
    compgen -c python 2>/dev/null | grep -xE 'python(3(\.[0-9]+)?)?'
    local p
    for p in /usr/bin/python3* /usr/local/bin/python3* /opt/conda/bin/python3 \
      /opt/conda/envs/*/bin/python3 "$HOME"/miniconda3/bin/python3 \
      "$HOME"/miniconda3/envs/*/bin/python3 "$HOME"/anaconda3/bin/python3 \
      "$HOME"/anaconda3/envs/*/bin/python3 "$HOME"/miniforge3/bin/python3 \
      "$HOME"/miniforge3/envs/*/bin/python3 /opt/*/bin/python3 /opt/*/*/bin/python3 \
      "$HOME"/.venv/bin/python3 "$HOME"/*/.venv/bin/python3 "$HOME"/venv*/bin/python3 \
      "$HOME"/.pyenv/versions/*/bin/python3 "$HOME"/.local/share/uv/python/*/bin/python3 \
      /workspace/*/bin/python3 /workspace/.venv/bin/python3; do
      [ -x "$p" ] && echo "$p"
    done
    [ -n "${VIRTUAL_ENV:-}" ] && echo "$VIRTUAL_ENV/bin/python"
    [ -n "${CONDA_PREFIX:-}" ] && echo "$CONDA_PREFIX/bin/python"
  } | grep -vE '(-config|m-config)$' | awk '!seen[$0]++'
}

# site-packages folders: asked of every Python, and globbed where a Python may not run
site_dirs() {
  local py
  while read -r py; do
    timeout 10 "$py" - <<'EOF' 2>/dev/null
import site, sys
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
print("\n".join(dict.fromkeys(roots)))
EOF
  done < <(python_candidates)
  local d
  for d in /usr/lib/python3*/dist-packages /usr/local/lib/python3*/dist-packages \
    /usr/local/lib/python3*/site-packages /opt/conda/lib/python3*/site-packages \
    /opt/conda/envs/*/lib/python3*/site-packages "$HOME"/.local/lib/python3*/site-packages \
    "$HOME"/miniconda3/lib/python3*/site-packages "$HOME"/anaconda3/lib/python3*/site-packages \
    /opt/*/lib/python3*/site-packages /opt/*/*/lib/python3*/site-packages; do
    [ -d "$d" ] && echo "$d"
  done
}

# folders that may hold CUDA 13 libraries, best first: pip's nvidia/cu13, other nvidia
# wheels, torch's own, conda, the system CUDA toolkits, the dynamic loader's cache
cuda_lib_dirs() {
  local sites s d l
  sites="$(site_dirs | awk '!seen[$0]++')"
  {
    for s in $sites; do
      for d in "$s"/nvidia/cu13/lib "$s"/nvidia/*/lib "$s"/torch/lib; do
        [ -d "$d" ] && echo "$d"
      done
    done
    for d in "${CONDA_PREFIX:-/nonexistent}"/lib /opt/conda/lib /opt/conda/envs/*/lib \
      "$HOME"/miniconda3/lib "$HOME"/anaconda3/lib "$HOME"/miniforge3/lib \
      /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
      /usr/local/cuda-13*/lib64 /usr/local/cuda-13*/targets/x86_64-linux/lib \
      /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib; do
      [ -d "$d" ] && echo "$d"
    done
    if command -v ldconfig >/dev/null; then
      for l in libcuda.so.1 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13 libnvrtc.so.13; do
        ldconfig -p 2>/dev/null | awk -v l="$l" '$1 == l {print $NF}' | xargs -r -n1 dirname
      done
    fi
  } | awk '!seen[$0]++'
}

# missing_libs FILE: sonames the dynamic loader cannot find for FILE
missing_libs() {
  ldd "$1" 2>/dev/null | awk '/not found/ {print $1}' | sort -u
}

# resolve_libs FILE...: extend LD_LIBRARY_PATH with the first folder that holds each
# library the files miss; prints what it did
resolve_libs() {
  local dirs lib d f added=""
  dirs="$(cuda_lib_dirs)"
  for f in "$@"; do
    for lib in $(missing_libs "$f"); do
      for d in $dirs; do
        if [ -e "$d/$lib" ]; then
          case ":${LD_LIBRARY_PATH:-}:" in
            *":$d:"*) ;;
            *)
              export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
              added="$added $d"
              ;;
          esac
          echo "libs: $lib -> $d"
          break
        fi
      done
    done
  done
  echo "libs: searched $(echo "$dirs" | wc -l) folders; added to LD_LIBRARY_PATH:${added:- nothing}"
}

# what a missing library is, for the message
lib_hint() {
  case "$1" in
    libcuda.so*) echo "the NVIDIA driver's library (no driver installed?)" ;;
    libcublas*) echo "cuBLAS 13 (pip: nvidia-cublas; or a CUDA 13 toolkit)" ;;
    libcurand*) echo "cuRAND of CUDA 13 (pip: nvidia-curand)" ;;
    libcudart*) echo "the CUDA 13 runtime (pip: nvidia-cuda-runtime)" ;;
    libnvrtc*) echo "NVRTC 13 (pip: nvidia-cuda-nvrtc)" ;;
    libgst* | libglib* | libgobject* | libgio* | libgmodule*) echo "GStreamer/GLib" ;;
    *) echo "?" ;;
  esac
}

# ---------------------------------------------------------------------------------------
# run: steps, deadline, summary

declare -a STEP_LINES=()
DRY=0
T_START=$(date +%s)
BUDGET=$BUDGET_MAX_S
PLAN_TOTAL=0
declare -a NOTES=()

note() {
  NOTES+=("$*")
  echo "gpu-check: $*" >&2
}

record() {
  # record NAME STATUS SECONDS
  STEP_LINES+=("$(printf '%-28s %-30s %7ss' "$1" "$2" "$3")")
  [ "$DRY" = 1 ] || printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$OUT/steps.tsv"
}

step() {
  # step NAME LIMIT_S LOGFILE CMD...: run under timeout and the run's deadline, record the
  # status, rewrite the summary; never fails
  local name="$1" limit="$2" log="$3"
  shift 3
  if [ "$DRY" = 1 ]; then
    PLAN_TOTAL=$((PLAN_TOTAL + limit))
    printf '%-28s %4s s\n' "$name" "$limit"
    return 0
  fi
  if [ -n "${SKIP_ALL:-}" ] && [ "$name" != nvidia-smi ] && [ "$name" != ldd ]; then
    record "$name" "skipped ($SKIP_ALL)" 0.0
    write_summary
    return 0
  fi
  local left=$((BUDGET - ($(date +%s) - T_START)))
  if [ "$left" -lt 3 ]; then
    record "$name" "skipped (time budget spent)" 0.0
    write_summary
    return 0
  fi
  if [ "${GPU_CHECK_HANG:-}" = "$name" ]; then
    set -- sleep 3600
    limit="${GPU_CHECK_HANG_LIMIT:-2}"
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0 rc
  t0=$(date +%s.%N)
  echo "== $name (limit ${limit}s, ${left}s left): $*"
  timeout -k 5 "$limit" "$@" >"$log" 2>&1
  rc=$?
  local dt
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  tail -n 25 "$log"
  local status=ok
  case "$rc" in
    0) ;;
    124 | 137) status="FAIL(timeout after ${limit}s)" ;;
    *) status="FAIL(rc=$rc)" ;;
  esac
  echo "-- $name: $status in ${dt}s"
  record "$name" "$status" "$dt"
  write_summary
}

write_summary() {
  [ "$DRY" = 1 ] && return 0
  [ -n "${OUT:-}" ] && [ -d "$OUT" ] || return 0
  summary >"$OUT/summary.txt.tmp" 2>&1 && mv -f "$OUT/summary.txt.tmp" "$OUT/summary.txt"
}

summary() {
  echo "================ gpu-check summary ================"
  [ -f "$OUT/env.txt" ] && head -n 3 "$OUT/env.txt"
  local l
  for l in "${NOTES[@]+"${NOTES[@]}"}"; do echo "NOTE: $l"; done
  echo "elapsed $(($(date +%s) - T_START)) s of a $BUDGET s budget"
  for l in "${STEP_LINES[@]+"${STEP_LINES[@]}"}"; do echo "$l"; done
  command -v python3 >/dev/null || return 0
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
for name, label in (("parity_bf16_first.json", "bf16 (first cases)"), ("parity_f32.json", "f32"),
                    ("parity_bf16.json", "bf16")):
    s = load(name)
    if not s:
        continue
    cases = s.get("cases", [])
    worst = sorted((c for c in cases if c.get("status") in ("ok", "report", "FAIL")),
                   key=lambda c: -(c.get("max_abs") or 0))[:3]
    print(f"parity {label}: ran {s.get('ran')} failed {s.get('failed')}; largest max_abs: "
          + ", ".join(f"{c['case']} {c.get('max_abs', float('nan')):.3g} (rel {c.get('max_rel', float('nan')):.3g})"
                      for c in worst))
    for c in cases:
        if c.get("status") == "FAIL":
            print(f"  FAIL {c['case']}: {c.get('detail', '')[:200]}")
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
for r in load("streams_small_16k.json") or []:
    print(f"streams small_16k: {r['streams']} stream(s): throughput {r['throughput_total']:.3f} audio s per s "
          f"in total, {r['throughput_per_stream_mean']:.3f} per stream; batches {r['batch']['sizes']}")
EOF
}

# the steps, most valuable first; `plan` prints them with their limits (total <= 540 s)
run_steps() {
  local mm="$1" bin="$2" parity="$3" dev="$4" smoke="$5" steps="$6"
  local sz=() bench_args=(--device "$dev" --precision bf16 --duration 8 --steps "$steps" --runs 5 --warmup 2)
  local stream_args=(--device "$dev" --precision bf16 --steps "$steps" --windows 8 --warmup 1 --window 8 --hop 2)
  # the production net and decoders of 44.1 kHz, and the CLIP tower (large activations)
  local first_cases=net_tiny_v2_44k_8s,vocoder_44k,vae_decoder_44k,clip_vision_tiny
  local pfilter=()
  if [ "$smoke" = 1 ]; then
    sz=(--tiny --width 64 --height 48)
    bench_args=(--device "$dev" --precision bf16 --duration 1 --steps 1 --runs 1 --warmup 0)
    stream_args=(--device "$dev" --precision bf16 --steps 1 --windows 2 --warmup 0 --window 1 --hop 0.5)
    first_cases=mel_16k,tokenizer
    pfilter=(--filter "$first_cases")
  fi

  step nvidia-smi 10 "$OUT/nvidia-smi.txt" \
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap,clocks.max.sm --format=csv
  step ldd 10 "$OUT/ldd.txt" bash -c \
    "ldd '$mm' '$bin/libgstmmaudio.so'; ! ldd '$mm' | grep -q 'not found'"
  # one short run through every component loads (and JIT-compiles, on a cold cache) all the
  # kernel modules, so that no later step pays for the PTX compilation in its timings
  step warm-up 70 "$OUT/warm_up.log" \
    "$mm" bench e2e --variant large_44k_v2 --tiny --width 64 --height 48 --device "$dev" \
    --precision bf16 --duration 1 --steps 1 --runs 1 --warmup 0
  if [ "$DRY" = 1 ] || [ -d "$parity" ]; then
    step parity-bf16-first 45 "$OUT/parity_bf16_first.log" \
      "$mm" parity "$parity" --device "$dev" --precision bf16 --filter "$first_cases" \
      --json "$OUT/parity_bf16_first.json"
  fi
  step e2e-small_16k 60 "$OUT/e2e_small_16k.log" \
    "$mm" bench e2e --variant small_16k "${bench_args[@]}" "${sz[@]}" --json "$OUT/e2e_small_16k.json"
  step e2e-large_44k_v2 75 "$OUT/e2e_large_44k_v2.log" \
    "$mm" bench e2e --variant large_44k_v2 "${bench_args[@]}" "${sz[@]}" --json "$OUT/e2e_large_44k_v2.json"
  # continuation mode (near-live, issue 11): S-16k at hop 1 s, L-44k-v2 at hop 2 s, 10 windows
  # (the first grow to 8 s); per-hop compute by stage, cache hit rates, RTF = compute / hop
  local cont=(--device "$dev" --precision bf16 --steps "$steps" --windows 10 --warmup 1 --window 8)
  local hop16=1 hop44=2
  if [ "$smoke" = 1 ]; then
    cont=(--device "$dev" --precision bf16 --steps 1 --windows 4 --warmup 0 --window 1)
    hop16=0.25 hop44=0.5
  fi
  step stream-continuation-small_16k 25 "$OUT/stream_continuation_small_16k.log" \
    "$mm" bench stream --mode continuation --hop "$hop16" --variant small_16k "${cont[@]}" "${sz[@]}" \
    --json "$OUT/stream_continuation_small_16k.json"
  step stream-continuation-large_44k_v2 35 "$OUT/stream_continuation_large_44k_v2.log" \
    "$mm" bench stream --mode continuation --hop "$hop44" --variant large_44k_v2 "${cont[@]}" "${sz[@]}" \
    --json "$OUT/stream_continuation_large_44k_v2.json"
  if [ "$DRY" = 1 ] || [ -d "$parity" ]; then
    step parity-f32 75 "$OUT/parity_f32.log" \
      "$mm" parity "$parity" --device "$dev" --precision f32 "${pfilter[@]}" --json "$OUT/parity_f32.json"
  fi
  step stream-large_44k_v2 45 "$OUT/stream_large_44k_v2.log" \
    "$mm" bench stream --variant large_44k_v2 "${stream_args[@]}" "${sz[@]}" --json "$OUT/stream_large_44k_v2.json"
  step stream-small_16k 30 "$OUT/stream_small_16k.log" \
    "$mm" bench stream --variant small_16k "${stream_args[@]}" "${sz[@]}" --json "$OUT/stream_small_16k.json"
  if [ "$DRY" = 1 ] || [ -d "$parity" ]; then
    step parity-bf16 40 "$OUT/parity_bf16.log" \
      "$mm" parity "$parity" --device "$dev" --precision bf16 "${pfilter[@]}" --json "$OUT/parity_bf16.json"
  fi
  if [ "$DRY" = 1 ] || command -v gst-inspect-1.0 >/dev/null; then
    step gst-inspect 10 "$OUT/gst-inspect.txt" env GST_PLUGIN_PATH="$bin" \
      GST_REGISTRY="$OUT/gst-registry.bin" gst-inspect-1.0 mmaudiogen
  fi
  # many streams on one model (issue 14): 1, 2, 4 streams of S-16k (text only, 10 steps),
  # windows batched by the device worker; throughput per stream and in total
  local multi=(--device "$dev" --precision bf16 --steps 10 --windows 2 --warmup 1 --window 8 --hop 4 --text-only)
  [ "$smoke" = 1 ] && multi=(--device "$dev" --precision bf16 --steps 1 --windows 2 --warmup 0 --window 1 --hop 0.5 --text-only)
  step streams-small_16k 10 "$OUT/streams_small_16k.log" \
    "$mm" bench stream --streams 1,2,4 --variant small_16k "${multi[@]}" "${sz[@]}" \
    --json "$OUT/streams_small_16k.json"
}

cmd_plan() {
  DRY=1
  OUT=/nonexistent
  echo "gpu-check run plan (device steps in order, with their time limits):"
  run_steps mmaudio bin parity cuda:0 0 25
  printf '%-28s %4s s (budget %s s; a device command is killed at 600 s)\n' total "$PLAN_TOTAL" "$BUDGET_MAX_S"
  [ "$PLAN_TOTAL" -le "$BUDGET_MAX_S" ] || die "the step limits add up to $PLAN_TOTAL s, over $BUDGET_MAX_S s"
}

# driver_major: the NVIDIA driver's major version, empty if unknown
driver_major() {
  command -v nvidia-smi >/dev/null || return 0
  timeout 15 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null |
    head -n1 | grep -oE '^[0-9]+' || true
}

cmd_run() {
  OUT="${OUT:-$PWD/gpu-check-out}"
  mkdir -p "$OUT" || die "cannot create $OUT"
  OUT="$(cd "$OUT" && pwd)"
  : >"$OUT/steps.tsv"
  rm -f "$OUT/summary.txt"
  BUDGET="${GPU_CHECK_BUDGET_S:-$BUDGET_MAX_S}"
  [ "$BUDGET" -le "$BUDGET_MAX_S" ] || BUDGET=$BUDGET_MAX_S
  # whatever happens (an error here, SIGTERM), the summary is written
  trap write_summary EXIT
  trap 'note "interrupted"; exit 143' TERM INT
  local dev="${GPU_CHECK_DEVICE:-cuda:0}" smoke="${GPU_CHECK_SMOKE:-0}"
  local steps="${GPU_CHECK_STEPS:-25}"
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

  # the PTX JIT cache: persistent and large enough for every kernel module, so the warm-up
  # step compiles once and every later process loads the compiled kernels
  export CUDA_CACHE_PATH="${CUDA_CACHE_PATH:-${TMPDIR:-/tmp}/mmaudio-gpu-check-nv-cache}"
  export CUDA_CACHE_MAXSIZE="${CUDA_CACHE_MAXSIZE:-2147483648}"
  export CUDA_CACHE_DISABLE=0

  {
    echo "host $(hostname) $(date -u +%FT%TZ), device $dev, smoke $smoke, steps $steps"
    [ -f "$here/BUILD-INFO" ] && cat "$here/BUILD-INFO"
  } | tee "$OUT/env.txt"

  # driver first: PTX of nvcc 13.0 needs driver >= 580
  local gpu=0
  case "$dev" in cuda* | auto) gpu=1 ;; esac
  if [ "$gpu" = 1 ]; then
    local major
    major="$(driver_major)"
    if [ -z "$major" ]; then
      note "no NVIDIA driver answers (nvidia-smi $(command -v nvidia-smi >/dev/null && echo failed || echo 'not found')): the GPU steps cannot run"
      [ "${GPU_CHECK_IGNORE_DRIVER:-0}" = 1 ] || SKIP_ALL="no NVIDIA driver"
    elif [ "$major" -lt "$MIN_DRIVER" ]; then
      note "driver $major is older than $MIN_DRIVER: it cannot JIT-compile the CUDA 13 PTX in this build (GPU_CHECK_IGNORE_DRIVER=1 runs anyway)"
      [ "${GPU_CHECK_IGNORE_DRIVER:-0}" = 1 ] || SKIP_ALL="driver $major < $MIN_DRIVER"
    else
      echo "driver $major (>= $MIN_DRIVER)" | tee -a "$OUT/env.txt"
    fi
  fi

  # libraries: whatever the CLI misses, from any Python's nvidia wheels, torch, conda, CUDA
  # not in a pipe: LD_LIBRARY_PATH must change in this shell
  resolve_libs "$mm" "$bin/libgstmmaudio.so" >"$OUT/libs.txt"
  tee -a "$OUT/env.txt" <"$OUT/libs.txt"
  local lib miss
  miss="$(missing_libs "$mm")"
  for lib in $miss; do
    note "missing $lib: $(lib_hint "$lib"), found in no Python site-packages, conda or system CUDA folder"
  done
  [ -n "$miss" ] && [ -z "${SKIP_ALL:-}" ] && SKIP_ALL="the CLI misses $(echo "$miss" | tr '\n' ' ')"
  if [ -f "$bin/libgstmmaudio.so" ]; then
    miss="$(missing_libs "$bin/libgstmmaudio.so" | grep -vE '^lib(gst|glib|gobject|gio|gmodule|orc)' || true)"
    [ -z "$miss" ] || note "the plugin misses $(echo "$miss" | tr '\n' ' ')"
  fi
  {
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    echo "CUDA_CACHE_PATH=$CUDA_CACHE_PATH"
    echo "cargo: $(command -v cargo || echo none); python3: $(command -v python3 || echo none)"
  } | tee -a "$OUT/env.txt"
  write_summary

  run_steps "$mm" "$bin" "$parity" "$dev" "$smoke" "$steps"

  write_summary
  cat "$OUT/summary.txt"
  echo "gpu-check: run done in $(($(date +%s) - T_START)) s, results in $OUT"
}

case "${1:-}" in
  build)
    shift
    cmd_build "$@"
    ;;
  build-cli)
    shift
    cmd_build_cli "$@"
    ;;
  check-cli)
    shift
    cmd_check_cli "$@"
    ;;
  plan)
    cmd_plan
    ;;
  run)
    shift
    cmd_run "$@"
    ;;
  *)
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
