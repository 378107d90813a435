"""Speed and memory measurements of the CamI2V family, printed as JSON (`python -m benchmarks --help`).

Timings live here and never in tests: they depend on the machine and its load. Every ratio in a report is taken
between numbers measured in the same run. docs/performance.md gives the commands, the fields and the results.
"""
