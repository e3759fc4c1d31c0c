#!/usr/bin/env bash
# Mutation check: plant known bugs one at a time in a scratch copy of the repository and
# report which tests catch each. Every planted bug must be caught (exit status 1 otherwise).
#
#   scripts/mutants.sh [--list | --check] [MUTANT_ID ...]
#
# --check only verifies that every planted bug still applies to its file (no build; CI runs
# it, so a moved or rewritten line cannot quietly turn a mutant into a no-op).
#
# The scratch copy is a `git worktree` of HEAD outside the repository (under $TMPDIR), so
# commit first: uncommitted changes are not in it. It builds in its own target folder
# (MMAUDIO_MUTANTS_TARGET, default <repo>/target/mutants; the first run compiles the
# dependencies once, later mutants rebuild only the workspace crates) and only the test
# binaries a mutant concerns. The parity cases need the component fixtures
# (MMAUDIO_PARITY_DIR, default ../shared/parity; see tools/parity/README.md).
#
# The bugs are those the issue "Tests that catch what matters" found uncaught:
#   cfg-sign         CFG sign flipped in cfg_combine
#   clip-rope        RoPE skipped on the CLIP stream
#   crossfade        crossfade curve still constant-power and symmetric, but not θ = π/2·(i+½)/n
#   latency-max      LATENCY query answering max = NONE
#   prompt-swap      prompt and negative prompt swapped in the MMAudio window generation
#   ignore-negative  element ignoring negative-prompt
#   ignore-steps     element ignoring num-steps
#   ignore-cfg       element ignoring cfg-strength
#   ignore-mask      element ignoring mask-away-clip
set -uo pipefail

REPO=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
TARGET=${MMAUDIO_MUTANTS_TARGET:-$REPO/target/mutants}
export MMAUDIO_PARITY_DIR=${MMAUDIO_PARITY_DIR:-$REPO/../shared/parity}
export GST_REGISTRY=${GST_REGISTRY:-${TMPDIR:-/tmp}/gst-registry-mutants.bin}
NICE=${MMAUDIO_MUTANTS_NICE:-nice -n 10}

# id % file % perl substitution (must match) % test commands (";"-separated cargo test args)
MUTANTS=(
  "cfg-sign%src/sampler.rs%s/\(\(v_cond \* cfg\)\? \+ \(v_uncond \* \(1\.0 - cfg\)\)\?\)/((v_cond * cfg)? - (v_uncond * (1.0 - cfg))?)/%--lib sampler::;--test parity"
  "clip-rope%src/net/blocks.rs%s/Some\(clip_rot\),/None,/%--test parity"
  "crossfade%src/window/crossfade.rs%s/\(i as f64 \+ 0\.5\) \/ n as f64/(i as f64 + 1.0) \/ (n as f64 + 1.0)/%--test window_engine;-p gst-plugin-mmaudio --test harness"
  "latency-max%plugins/mmaudiogen/src/mmaudiogen/imp/src_pad.rs%s/q\.set\(live, min \+ own_min, max\.map\(\|m\| m \+ own_max\)\)/q.set(live, min + own_min, gst::ClockTime::NONE)/%-p gst-plugin-mmaudio --test harness latency"
  "prompt-swap%src/model.rs%s/let text = self\.text_features\(&p\.prompt\)\?;\n(\s*)let negative = self\.text_features\(&p\.negative_prompt\)\?;/let text = self.text_features(&p.negative_prompt)?;\n\$1let negative = self.text_features(&p.prompt)?;/%--test parity parity_e2e"
  "ignore-negative%plugins/mmaudiogen/src/mmaudiogen/imp/settings.rs%s/negative_prompt: self\.negative_prompt\.clone\(\),/negative_prompt: String::new(),/%-p gst-plugin-mmaudio --test harness property"
  "ignore-steps%plugins/mmaudiogen/src/mmaudiogen/imp/settings.rs%s/num_steps: self\.num_steps as usize,/num_steps: 25,/%-p gst-plugin-mmaudio --test harness property"
  "ignore-cfg%plugins/mmaudiogen/src/mmaudiogen/imp/settings.rs%s/cfg_strength: self\.cfg_strength,/cfg_strength: 4.5,/%-p gst-plugin-mmaudio --test harness property"
  "ignore-mask%plugins/mmaudiogen/src/mmaudiogen/imp/settings.rs%s/mask_away_clip: self\.mask_away_clip,/mask_away_clip: false,/%-p gst-plugin-mmaudio --test harness property"
)

if [[ "${1:-}" == "--list" ]]; then
  for m in "${MUTANTS[@]}"; do echo "${m%%\%*}"; done
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  bad=0
  for m in "${MUTANTS[@]}"; do
    IFS='%' read -r id file subst _ <<<"$m"
    if [[ ! -f "$REPO/$file" ]]; then
      echo "mutant $id: $file does not exist"; bad=1; continue
    fi
    if perl -0pe "$subst" "$REPO/$file" | cmp -s - "$REPO/$file"; then
      echo "mutant $id: the pattern no longer matches $file"; bad=1; continue
    fi
    echo "mutant $id: applies to $file"
  done
  exit $bad
fi
WANT=("$@")

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/mmaudio-mutants.XXXXXX")
cleanup() {
  git -C "$REPO" worktree remove --force "$SCRATCH/tree" >/dev/null 2>&1
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
git -C "$REPO" worktree add --detach "$SCRATCH/tree" HEAD >/dev/null 2>&1 \
  || { echo "mutants: cannot create a worktree of HEAD in $SCRATCH" >&2; exit 2; }
TREE=$SCRATCH/tree
echo "mutants: scratch copy of $(git -C "$REPO" rev-parse --short HEAD) in $TREE, target $TARGET"
if [[ ! -d "$TARGET/release" && -d "$REPO/target/release" ]]; then
  # the compiled dependencies do not depend on the source path: reuse them
  echo "mutants: seeding $TARGET from $REPO/target/release"
  mkdir -p "$TARGET" && cp -r "$REPO/target/release" "$TARGET/release"
fi

run_tests() { # $1 = ";"-separated cargo test argument lists; prints failing tests, 0 = all passed
  local cmd failed=0 log list
  IFS=';' read -ra list <<<"$1"
  for cmd in "${list[@]}"; do
    log=$SCRATCH/test.log
    # shellcheck disable=SC2086
    (cd "$TREE" && CARGO_TARGET_DIR=$TARGET $NICE cargo test --release $cmd -- --test-threads 2) \
      >"$log" 2>&1
    local rc=$?
    if ((rc != 0)); then
      failed=1
      local names
      names=$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | tr '\n' ' ')
      if [[ -z "$names" ]]; then
        names="(build or harness failure: $(grep -m1 -E '^error' "$log" || tail -n1 "$log"))"
      fi
      echo "    cargo test $cmd: $names"
    fi
  done
  return $failed
}

# the unmutated copy must pass the same tests, or "caught" would mean nothing
declare -A SEEN
BASE_CMDS=""
for m in "${MUTANTS[@]}"; do
  IFS='%' read -r id file subst cmds <<<"$m"
  if ((${#WANT[@]})) && [[ ! " ${WANT[*]} " == *" $id "* ]]; then continue; fi
  IFS=';' read -ra parts <<<"$cmds"
  for c in "${parts[@]}"; do
    if [[ -z "${SEEN[$c]:-}" ]]; then SEEN[$c]=1; BASE_CMDS+="$c;"; fi
  done
done
echo "mutants: baseline (no mutation)"
if ! run_tests "${BASE_CMDS%;}"; then
  echo "mutants: the unmutated tree fails the selected tests: fix that first" >&2
  exit 2
fi
echo "    all pass"

caught=0 missed=0 results=()
for m in "${MUTANTS[@]}"; do
  IFS='%' read -r id file subst cmds <<<"$m"
  if ((${#WANT[@]})) && [[ ! " ${WANT[*]} " == *" $id "* ]]; then continue; fi
  echo "mutant $id ($file)"
  cp "$TREE/$file" "$SCRATCH/orig"
  perl -0pi -e "$subst" "$TREE/$file"
  if cmp -s "$TREE/$file" "$SCRATCH/orig"; then
    echo "    NOT PLANTED: the pattern no longer matches $file (update scripts/mutants.sh)"
    missed=$((missed + 1)); results+=("$id: not planted")
    continue
  fi
  if run_tests "$cmds"; then
    echo "    MISSED: every selected test passed with the bug planted"
    missed=$((missed + 1)); results+=("$id: MISSED")
  else
    caught=$((caught + 1)); results+=("$id: caught")
  fi
  cp "$SCRATCH/orig" "$TREE/$file"
done

echo "mutants summary: $caught caught, $missed missed"
for r in "${results[@]}"; do echo "  $r"; done
((missed == 0))
