#!/usr/bin/env bash
# Builds every fuzz target once, then runs each for a bounded time from its
# seed corpus (fuzz/corpus/<target>/, read only; what a run adds goes to
# fuzz/scratch/, which git ignores), with fuzz/dict/<target>.dict when there
# is one. Exits non-zero on the first crash,
# panic, timeout or out-of-memory, printing the fuzzer's report and the
# input's path under fuzz/artifacts/<target>/.
#
#   bash fuzz/run.sh                 every target, FUZZ_SECONDS (20) each
#   bash fuzz/run.sh filter csr      only these
#
# Stable Rust: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's nightly flags.
# No sanitizer: mesh forbids unsafe code, and panics, timeouts and memory
# limits are what these targets look for.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1 CARGO_TERM_COLOR=never
seconds=${FUZZ_SECONDS:-20}
flags=(--sanitizer none --codegen-units 16)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "+ cargo install cargo-fuzz --locked"
    cargo install cargo-fuzz --locked --quiet
fi

echo "+ cargo fuzz build ${flags[*]}"
cargo fuzz build "${flags[@]}"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
# The binaries just built, run directly (`cargo fuzz run` would build again).
bin_dir=fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release
mkdir -p fuzz/scratch
for target in "${targets[@]}"; do
    scratch=fuzz/scratch/$target
    log=fuzz/scratch/$target.log
    rm -rf "$scratch" && mkdir -p "$scratch" "fuzz/artifacts/$target"
    cmd=("$bin_dir/$target" -artifact_prefix="fuzz/artifacts/$target/"
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
        "$scratch" "fuzz/corpus/$target")
    if [ -f "fuzz/dict/$target.dict" ]; then
        cmd+=(-dict="fuzz/dict/$target.dict")
    fi
    echo "+ ${cmd[*]}"
    if ! "${cmd[@]}" >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz target $target failed on the input under fuzz/artifacts/$target/ (full log: $log);"
        echo "reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $target fuzz/artifacts/$target/<file>"
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "  $target: $runs inputs in ${seconds}s, no crash ($(find "$scratch" -type f | wc -l) new corpus entries, not kept)"
done
