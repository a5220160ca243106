#!/usr/bin/env bash
# Runs every Go fuzz target of the module (each func FuzzXxx in a _test.go
# file) for FUZZTIME (default 5m) each, one after the other. A crasher is
# written to <package>/testdata/fuzz/<target>/ by go test: commit it with
# the fix, and it runs with every `go test` from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-5m}"
go="${GO:-go}"
failed=()
while IFS=: read -r file fn; do
	pkg="./$(dirname "$file")"
	fn="${fn#func }"
	fn="${fn%%(*}"
	echo "== $pkg $fn ($fuzztime)"
	if ! "$go" test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" "$pkg"; then
		failed+=("$pkg $fn")
	fi
done < <(git ls-files '*_test.go' | xargs grep -H -o '^func Fuzz[A-Za-z0-9_]*(' | sort)
if ((${#failed[@]})); then
	echo "fuzz: failing targets:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
echo "fuzz: every target passed"
