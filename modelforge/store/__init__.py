"""The local model store: names, versions, aliases and the metadata recorded for each.

- :mod:`.layout` (directories, atomic JSON, the lock), :mod:`.metadata` (``meta.json``
  and its schema upgrades), :mod:`.names` (names, aliases, references).
- :mod:`.resolve` — the one resolver (path or ``name[:version|alias]`` to a location);
  :mod:`.open` — ``open_stored(ref)``: resolve and open, checking a stored version's bytes
  against its recorded sha256 (the edge where store references meet ``model.open``).
- :mod:`.add` / :mod:`.admission` (validate, stage, commit), :mod:`.edit` (``models set``),
  :mod:`.columns` (``--columns-from``), :mod:`.catalog` (find, list), :mod:`.ops` (rm, tag,
  verify), :mod:`.archive` (export/import).

The store uses :mod:`modelforge.model`; the model layer never imports the store.
"""
