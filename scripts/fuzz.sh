#!/bin/sh
# Runs every fuzz test of the module for FUZZTIME each (default 30s), one
# after the other, and lists those that failed. A failing input is left
# in the package's testdata/fuzz/, where `go test` replays it from then
# on: commit it with the fix. Not part of `make test` (it takes about
# half a minute per target, and there are some forty).
#
#	make fuzz                      # every target, 30 s each
#	FUZZTIME=5m make fuzz          # longer
#	FUZZ=FuzzParseBag make fuzz    # those whose name matches
set -u
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
filter=${FUZZ:-.}
failed=""
for file in $(grep -rl --include='*_test.go' '^func Fuzz' cmd hub modules hw store build); do
	dir=./$(dirname "$file")
	for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file" | grep -E "$filter"); do
		echo "== $dir $name ($fuzztime)"
		if ! go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" "$dir"; then
			failed="$failed $dir:$name"
		fi
	done
done
if [ -n "$failed" ]; then
	echo "fuzz: failed:$failed"
	exit 1
fi
echo "fuzz: all passed"
