"""The benchmarks: accuracy, throughput and the ``lelp tune`` / ``active`` / ``search`` studies, and their report.

A package, run from the repository root as ``python -m benchmarks.<area>.<script>``; ``python -m benchmarks.report``
rewrites ``benchmarks/RESULTS.md`` and the README's generated blocks from the stored records.
"""
