#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder that reads untrusted input (fuzz/, cargo fuzz with
# libFuzzer; the invariants live in engine/src/fuzzing.rs). Each target starts from the committed
# seeds (fuzz/seeds/<target>, written by fuzz/seeds.py) plus what earlier runs found
# (fuzz/corpus/<target>, not committed), and first replays fuzz/regressions/<target>/* (inputs
# that once crashed; they must pass). A crash stops the run and leaves its input in
# fuzz/artifacts/<target>/: add it to fuzz/regressions/<target>/ with the fix.
#
# Knobs: FUZZ_SECONDS per target (default 300), FUZZ_TARGETS (default: all in fuzz/Cargo.toml),
# FUZZ_JOBS (parallel libFuzzer workers per target, default 1). With a nightly toolchain (installed
# here if rustup can) the targets run optimised under AddressSanitizer; otherwise on stable with
# `--sanitizer none` (the code is safe Rust: panics, overflow checks, hangs and unbounded memory
# are still found). FUZZ_QUICK=1 (what ./scripts/test.sh runs) builds the dev profile on the
# default toolchain without a sanitizer: about 2 minutes to build instead of 5-6, fewer
# executions per second. Prints executions per target and one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${FUZZ_SECONDS:-300}"
JOBS="${FUZZ_JOBS:-1}"
TARGETS="${FUZZ_TARGETS:-$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^remoteingress-fuzz$')}"

if ! cargo fuzz --version > /dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (once)" >&2
  cargo install cargo-fuzz --locked --quiet
fi

# Nightly gives AddressSanitizer; stable runs without a sanitizer.
TOOLCHAIN=()
SANITIZER=none
PROFILE=(--release)
if [[ "${FUZZ_QUICK:-0}" == 1 ]]; then
  PROFILE=(--dev)
elif rustup run nightly rustc --version > /dev/null 2>&1 \
  || rustup toolchain install nightly --profile minimal > /dev/null 2>&1; then
  TOOLCHAIN=(+nightly)
  SANITIZER=address
fi
echo "fuzz: $(rustc "${TOOLCHAIN[@]}" --version), sanitizer $SANITIZER, ${PROFILE[*]}, ${SECONDS_PER_TARGET} s per target" >&2

# One build for all targets (debug assertions and overflow checks on).
mkdir -p fuzz/artifacts
if ! cargo "${TOOLCHAIN[@]}" fuzz build "${PROFILE[@]}" --sanitizer "$SANITIZER" > fuzz/artifacts/build.log 2>&1; then
  tail -30 fuzz/artifacts/build.log >&2
  echo "fuzz: build failed (fuzz/artifacts/build.log)" >&2
  exit 1
fi

summary=()
for target in $TARGETS; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  regressions=(fuzz/regressions/"$target"/*)
  if [[ -e "${regressions[0]}" ]]; then
    cargo "${TOOLCHAIN[@]}" fuzz run "${PROFILE[@]}" --sanitizer "$SANITIZER" "$target" "${regressions[@]}" > /dev/null 2>&1 || {
      echo "fuzz: $target: a regression input fails again (fuzz/regressions/$target)" >&2
      exit 1
    }
  fi
  log="fuzz/artifacts/$target/last-run.log"
  if ! cargo "${TOOLCHAIN[@]}" fuzz run "${PROFILE[@]}" --sanitizer "$SANITIZER" --jobs "$JOBS" "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 \
    > "$log" 2>&1; then
    echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target/, the log in $log:" >&2
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 >&2
    exit 1
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{s+=$1} END {print s+0}')"
  summary+=("$target $runs")
  printf 'fuzz: %-18s %12s executions in %s s, corpus %s inputs\n' "$target" "$runs" "$SECONDS_PER_TARGET" \
    "$(find "$corpus" -type f | wc -l)" >&2
done
echo "fuzz: all targets passed (${summary[*]})"
