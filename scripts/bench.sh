#!/bin/sh
# Routed throughput: the hub's 2-hop in-process pipeline (producer → route
# with a WHERE condition → consumer) against the same pipeline built from
# bare Go channels (producer → channel → router goroutine → channel →
# consumer), and against one bare channel (the least a handoff costs),
# measured in the same run. Prints each figure (median of COUNT runs) and
# the ratios.
set -eu
cd "$(dirname "$0")/.."
count=${COUNT:-5}
out=$(go test -run '^$' -bench 'BenchmarkPipeline' -benchmem -count "$count" ./hub/)
echo "$out" | grep -E '^(goos|goarch|cpu|Benchmark)'
echo "$out" | awk -v count="$count" '
/^BenchmarkPipeline\/bare1hop/ { for (i = 1; i <= NF; i++) if ($i == "msgs/s") one[no++] = $(i-1); next }
/^BenchmarkPipeline\/bare/ { for (i = 1; i <= NF; i++) if ($i == "msgs/s") bare[nb++] = $(i-1); for (i = 1; i <= NF; i++) if ($i == "allocs/op") ba = $(i-1) }
/^BenchmarkPipeline\/hub/  { for (i = 1; i <= NF; i++) if ($i == "msgs/s") hub[nh++] = $(i-1); for (i = 1; i <= NF; i++) if ($i == "allocs/op") ha = $(i-1) }
function median(a, n,   i, j, t) {
	for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return a[int(n / 2)]
}
END {
	b = median(bare, nb); h = median(hub, nh); o = median(one, no)
	printf "bare channels, 2 hops: %.0f msgs/s, %s allocs/msg\n", b, ba
	printf "bare channel, 1 hop:   %.0f msgs/s\n", o
	printf "hub pipeline:          %.0f msgs/s, %s allocs/msg\n", h, ha
	printf "ratio hub/bare 2 hops: %.2f\n", h / b
	printf "ratio hub/bare 1 hop:  %.2f\n", h / o
}'
