#!/bin/sh
# Routed throughput: the hub's 2-hop in-process pipeline (producer → route
# with a WHERE condition → consumer) against the same pipeline built from a
# bare Go channel, measured in the same run. Prints each figure (median of
# COUNT runs) and the ratio.
set -eu
cd "$(dirname "$0")/.."
count=${COUNT:-5}
out=$(go test -run '^$' -bench 'BenchmarkPipeline' -benchmem -count "$count" ./hub/)
echo "$out" | grep -E '^(goos|goarch|cpu|Benchmark)'
echo "$out" | awk -v count="$count" '
/^BenchmarkPipeline\/bare/ { for (i = 1; i <= NF; i++) if ($i == "msgs/s") bare[nb++] = $(i-1); for (i = 1; i <= NF; i++) if ($i == "allocs/op") ba = $(i-1) }
/^BenchmarkPipeline\/hub/  { for (i = 1; i <= NF; i++) if ($i == "msgs/s") hub[nh++] = $(i-1); for (i = 1; i <= NF; i++) if ($i == "allocs/op") ha = $(i-1) }
function median(a, n,   i, j, t) {
	for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return a[int(n / 2)]
}
END {
	b = median(bare, nb); h = median(hub, nh)
	printf "bare channels: %.0f msgs/s, %s allocs/msg\n", b, ba
	printf "hub pipeline:  %.0f msgs/s, %s allocs/msg\n", h, ha
	printf "ratio hub/bare: %.2f\n", h / b
}'
