#!/usr/bin/env bash
# Runs every fuzz target binary in BIN_DIR at once, one process per target, for SECONDS each,
# starting from the seeds in fuzz/seeds/<target> (where there are any). Writes each target's
# libFuzzer log, final statistics and any crash inputs under OUT_DIR, and the grown corpora as
# OUT_DIR/corpus.tar.gz.
#
#   fuzz/run-all.sh BIN_DIR OUT_DIR [SECONDS [CORPUS_TAR_GZ]]
#
# CORPUS_TAR_GZ, the corpus.tar.gz of an earlier run, continues from that run's corpora.
# BIN_DIR holds the binaries `cargo +nightly fuzz build -O` leaves in
# fuzz/target/x86_64-unknown-linux-gnu/release/. Run it on a machine with a core per target.
set -uo pipefail
bin_dir=$1
out_dir=$2
seconds=${3:-600}
resume=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
[ -n "$resume" ] && tar -C "$work" -xzf "$resume"
mkdir -p "$out_dir"
pids=()
for bin in "$bin_dir"/*; do
  [ -x "$bin" ] && [ -f "$bin" ] || continue
  t=$(basename "$bin")
  mkdir -p "$work/corpus/$t" "$out_dir/artifacts/$t"
  seeds=()
  [ -d "$here/seeds/$t" ] && seeds=("$here/seeds/$t")
  timeout $((seconds + 30)) "$bin" -max_total_time="$seconds" -print_final_stats=1 \
    -rss_limit_mb=4096 -timeout=10 -artifact_prefix="$out_dir/artifacts/$t/" \
    "$work/corpus/$t" "${seeds[@]}" > "$out_dir/$t.log" 2>&1 &
  pids+=("$!")
done
status=0
for p in "${pids[@]}"; do
  wait "$p" || status=1
done
tar -C "$work" -czf "$out_dir/corpus.tar.gz" corpus
for log in "$out_dir"/*.log; do
  t=$(basename "$log" .log)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "$t execs=${execs:-?} last: ${last:-none}"
done | tee "$out_dir/summary.txt"
exit $status
