"""The accuracy grid: its specification, the selection rule, the run plan, the runner and its RESULTS.md tables."""
