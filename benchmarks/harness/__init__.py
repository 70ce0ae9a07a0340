"""The pieces of benchmarks/run.py: what is measured (workloads, targets),
how (processes, echo, HTTP, microbenchmarks, callgrind), and how it is shown
(statistics, report, charts)."""
