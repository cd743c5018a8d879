"""Model files: opening, parsing, checking and reporting on ONNX models. Knows nothing of
the store (store references are resolved at the API/CLI edge, ``modelforge.api`` and
``modelforge.store.open``).

The core, which the engine and data layers may use:

- :mod:`.open` — ``open_model(path)``: the one way to open a model (capped read, sha256,
  parse when needed, external data checked inside the model folder, schema).
- :mod:`.files` (safe reads of untrusted paths), :mod:`.load` (bytes to ModelProto, with
  precise errors for files that are not ONNX), :mod:`.external` / :mod:`.external_load`
  (external-data references), :mod:`.schema` (inputs/outputs), :mod:`.opset` (opset
  imports, the version-converter wrapper), :mod:`.synth` (synthesized inputs).

Services built on the core and the engine:

- :mod:`.validate` and :mod:`.checks` (the nine checks, run in a guarded child; their
  types live in :mod:`.checks.types`), :mod:`.inspect`, :mod:`.convert`,
  :mod:`.capabilities` (what the installed onnxruntime accepts).
"""
