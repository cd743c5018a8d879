"""Prediction: the public API and the one core path behind the CLI and the other fronts.

* ``predict``, ``iter_predict``, ``explain`` (:mod:`.api`) for Python callers, re-exported
  as ``modelforge.predict``, ``modelforge.iter_predict``, ``modelforge.explain_predict``;
* ``predict_to`` (:mod:`.core`): files / stdin / Source objects -> a file or stdout; the CLI's
  ``modelforge predict`` is this call;
* ``run_plan(plan, runner, writer)`` (:mod:`.core`): the core loop a server or a cluster
  task calls with its own source and writer;
* ``load`` / ``open_session`` (:mod:`.model`): opening a model for prediction.

MODEL is a path or a store reference (``name``, ``name:3``, ``name:prod``).
"""

from modelforge.data.inline import arrays_from_json
from modelforge.data.options import PredictOptions
from modelforge.inference.api import (
    ExplainResult,
    PredictionBatch,
    explain,
    iter_feeds,
    iter_predict,
    predict,
)
from modelforge.inference.core import PredictSummary, RunStats, make_plan, predict_to, run_plan
from modelforge.inference.model import LoadedModel, load, open_session

explain_predict = explain  # the name re-exported as modelforge.explain_predict

__all__ = [
    "ExplainResult",
    "LoadedModel",
    "PredictOptions",
    "PredictSummary",
    "PredictionBatch",
    "RunStats",
    "arrays_from_json",
    "explain",
    "explain_predict",
    "iter_feeds",
    "iter_predict",
    "load",
    "make_plan",
    "open_session",
    "predict",
    "predict_to",
    "run_plan",
]
