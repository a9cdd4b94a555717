#!/usr/bin/env bash
# The code-shape checks, run by CI before the tests and by hand before committing:
#   ruff check    rules in pyproject.toml [tool.ruff] (ruff format is not used: the code keeps its own layout)
#   lint-imports  the module-dependency contracts in pyproject.toml [tool.importlinter]
# Both always run; one line per tool says how it went; exits non-zero if either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
status=0

if "$BIN/ruff" check --quiet .; then
    echo "ruff: ok"
else
    echo "ruff: FAILED (violations above; the safe ones fix with: $BIN/ruff check --fix)"
    status=1
fi

# lint-imports prints its whole report even when every contract is kept: show it only on failure.
if report=$("$BIN/lint-imports" --no-cache --no-logo 2>&1); then
    echo "lint-imports: ok ($(grep -Eo 'Contracts: [0-9]+ kept' <<<"$report" | grep -Eo '[0-9]+') contracts kept)"
else
    echo "$report"
    echo "lint-imports: FAILED (broken contracts above, each with its import chain)"
    status=1
fi

exit "$status"
