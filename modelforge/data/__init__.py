"""Input and output data: reading, mapping onto a model's inputs, casting, writing.

- :mod:`.formats` — the one registry of formats (names, extensions, magic bytes).
- :mod:`.sources` — the one reader protocol (``columns``, ``total_bytes``/``total_rows``,
  ``batches(wanted, dtypes)``) and a class per format: ``CsvSource`` (streamed by
  :mod:`.csv_reader` over
  :mod:`.csv_stream`), ``ParquetSource`` (optionally a list of row groups of one file —
  a cluster task's slice), ``JsonlSource`` (:mod:`.jsonl`), ``ArraySource`` (NPY/NPZ via
  :mod:`.npy`, JSON via :mod:`.inline`, dicts — a server's decoded request), ``FrameSource``;
  :mod:`.inputs` — ``open_sources(paths, options)`` opens user inputs (stdin sniffed).
- :mod:`.options` — ``PredictOptions``, the one options object, validated once.
- :mod:`.plan` — ``build_plan(sources, schema, options)``: the mapping (:mod:`.mapping`)
  and its warnings, once; the run mode (batches of rows, or whole tensors); the feeds.
  ``cast_feeds(arrays, schema)`` is the same for a server's request tensors.
- :mod:`.cast` — the one place values are cast onto an input's dtype (``--cast`` policy,
  missing values), for every format.
- :mod:`.writers` — CSV/TSV/JSON Lines/Parquet (one naming rule) and NPY/NPZ/JSON
  (outputs kept whole), atomic.
- :mod:`.batch` — the units that flow between them (``ColumnBatch``, ``Batch``,
  ``OutputValue``).

Nothing here imports onnxruntime; :mod:`modelforge.engine` runs sessions on the feeds and
:mod:`modelforge.inference` ties the two together.
"""
