"""Evaluation: metrics, confusion matrices, reports and run comparison, calibration.

NumPy/pandas/matplotlib only at import; nothing here imports torch, so the metrics work on
arrays from any model. :mod:`.run` (imported on demand) is the ``xtalhpc evaluate`` job that
feeds them the network's outputs.
"""
from __future__ import annotations

from .calibration import calibrated_probabilities, fit_temperature, fit_temperatures, log_softmax, nll
from .metrics import (TOP_K, confusion_matrix, evaluate_heads, head_metrics, head_metrics_from_top, ranks,
                      read_metrics_json, to_json_dict, topk_accuracy, topk_hits, write_metrics_json)
from .report import compare, compare_flat, markdown_table, per_class_frame, plot_compare, summary_frame, \
    write_compare, write_report

__all__ = ["TOP_K", "calibrated_probabilities", "compare", "compare_flat", "confusion_matrix", "evaluate_heads",
           "fit_temperature", "fit_temperatures", "head_metrics", "head_metrics_from_top", "log_softmax",
           "markdown_table", "nll",
           "per_class_frame", "plot_compare", "ranks", "read_metrics_json", "summary_frame", "to_json_dict",
           "topk_accuracy", "topk_hits", "write_compare", "write_metrics_json", "write_report"]
