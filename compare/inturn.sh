#!/usr/bin/env bash
# Runs `walq_profile` built from two revisions in turn (old, new, old, new,
# ...) and prints each side's rates, sorted, with the TLB shootdowns each
# run caused. This VM's speed moves by 2x from hour to hour, and the peers'
# with it, so an engine change is measured only against its parent run in
# the same minutes (docs/benchmarks.md, "Measuring on this VM").
#
# usage: compare/inturn.sh OLD_REV [RUNS] -- WORKLOAD [JOBS] [BYTES] [os|sync|periodic]
#   OLD_REV  any git revision; it is built in a worktree under $INTURN_DIR
#            (default /tmp/walq-inturn), once per commit id
#   RUNS     pairs of runs (default 3)
# The new side is the working tree as it is (built in compare/target).
#
# example: compare/inturn.sh HEAD~1 3 -- dequeue_ack 1000000 100 os
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
old_rev=${1:?usage: compare/inturn.sh OLD_REV [RUNS] -- WORKLOAD [JOBS] [BYTES] [MODE]}
shift
runs=3
if [[ ${1:-} != "--" && -n ${1:-} ]]; then
    runs=$1
    shift
fi
[[ ${1:-} == "--" ]] && shift
(($# > 0)) || { echo "inturn: no workload after --" >&2; exit 2; }

base=${INTURN_DIR:-/tmp/walq-inturn}
commit=$(git -C "$root" rev-parse --verify "$old_rev^{commit}")
tree="$base/tree-$commit"
target="$base/target-$commit"
mkdir -p "$base"
if [[ ! -d $tree ]]; then
    git -C "$root" worktree add --detach "$tree" "$commit" >/dev/null
fi
echo "building old ($old_rev = ${commit:0:10}) and new (working tree)..." >&2
(cd "$tree/compare" && CARGO_TARGET_DIR=$target cargo build -q --release --bin walq_profile)
(cd "$root/compare" && cargo build -q --release --bin walq_profile)
old_bin="$target/release/walq_profile"
new_bin="$root/compare/target/release/walq_profile"

# TLB shootdown interrupts so far, all CPUs (0 where /proc has no such line).
tlb() { awk '/TLB shootdowns/ { s = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; print s; f = 1 } END { if (!f) print 0 }' /proc/interrupts; }

declare -a old_rates new_rates
run() {
    local bin=$1 before after line rate
    shift
    before=$(tlb)
    line=$("$bin" "$@" 2>&1 | tail -1)
    after=$(tlb)
    rate=$(sed -n 's/.*= \([0-9]*\) jobs\/s.*/\1/p' <<<"$line")
    [[ -n $rate ]] || { echo "inturn: no rate in: $line" >&2; exit 1; }
    printf '%s %s\n' "$rate" "$((after - before))"
}
for ((i = 1; i <= runs; i++)); do
    old_rates+=("$(run "$old_bin" "$@")")
    new_rates+=("$(run "$new_bin" "$@")")
done

report() {
    local name=$1
    shift
    printf '%-4s' "$name"
    printf '%s\n' "$@" | sort -n | awk '{ printf "  %.3f M/s (%d TLB IPIs)", $1 / 1e6, $2 } END { print "" }'
}
echo "walq_profile $*, $runs runs each, in turn:"
report old "${old_rates[@]}"
report new "${new_rates[@]}"
