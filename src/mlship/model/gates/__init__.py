"""Quality gates: may this candidate ship? Evaluate it (and the champion) on held-out rows, decide, explain.

The package map: `types` (results and the report), `statistics` (paired bootstrap, McNemar,
binomial tolerance), `fairness` (group rates and their bounds), `checks` (one function per gate),
`latency` (timing on the served path), `run` (load, score, compose: `run_gate`), `report`
(gate.json, gate.md, plots) and `verdict` (the verdict tags on runs and versions, registering a
passing candidate, refusing an ungated one). This file imports nothing: `mlship.registry` reads
the verdict tags from `verdict`, so importing the package must not pull the rest in.
"""
