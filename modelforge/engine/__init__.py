"""Running models: onnxruntime sessions and what guards them.

- :mod:`.providers` — provider short names and availability, in one table.
- :mod:`.session` — creating sessions (separate from running them), onnxruntime errors as
  ModelForge errors, nothing onnxruntime prints reaching stdout.
- :mod:`.upgrade` — in-memory opset upgrade for models too old for onnxruntime's kernels.
- :mod:`.runner` — running a session on feeds: batches of rows (fixed batch sizes padded)
  or one run on whole tensors; output conversion; a reader thread.
- :mod:`.isolate` — the guarded child for risky work (timeouts, memory caps, crashes).

The engine uses :mod:`modelforge.data.batch` (the units it consumes and produces) and
never the data writers.
"""
