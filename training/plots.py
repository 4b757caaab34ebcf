"""Evaluation plots (matplotlib, Agg backend). A failing plot logs a WARNING and returns None."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def save_calibration_plot(
    path: Path, *, y_true: np.ndarray, probabilities: dict[str, np.ndarray], bins: int = 10
) -> Path | None:
    """Plot observed readmission rate against mean predicted probability per quantile bin, one line per scorer."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.calibration import calibration_curve

        figure, axis = plt.subplots(figsize=(5.5, 5))
        upper = 0.0
        for name, probability in probabilities.items():
            observed, predicted = calibration_curve(y_true, probability, n_bins=bins, strategy="quantile")
            axis.plot(predicted, observed, marker="o", label=name)
            upper = max(upper, float(predicted.max()), float(observed.max()))
        axis.plot([0, upper], [0, upper], linestyle="--", color="grey", label="perfect calibration")
        axis.set_xlabel("mean predicted probability")
        axis.set_ylabel("observed 30-day readmission rate")
        axis.set_title("Calibration on the test side (quantile bins)")
        axis.legend()
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path
    except Exception as error:  # noqa: BLE001 - a plot is a side channel and must not stop training
        logger.warning("calibration plot failed: %s; the run goes on without it", error)
        return None


def save_roc_plot(path: Path, *, y_true: np.ndarray, probabilities: dict[str, np.ndarray]) -> Path | None:
    """Plot the test-side ROC curve of each scorer."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.metrics import roc_auc_score, roc_curve

        figure, axis = plt.subplots(figsize=(5.5, 5))
        for name, probability in probabilities.items():
            fpr, tpr, _ = roc_curve(y_true, probability)
            axis.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(y_true, probability):.3f})")
        axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
        axis.set_xlabel("false positive rate")
        axis.set_ylabel("true positive rate")
        axis.set_title("ROC on the test side")
        axis.legend(loc="lower right")
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path
    except Exception as error:  # noqa: BLE001 - a plot is a side channel and must not stop training
        logger.warning("ROC plot failed: %s; the run goes on without it", error)
        return None


def save_confusion_plot(path: Path, *, confusion: dict[str, int], threshold: float) -> Path | None:
    """Draw the 2x2 confusion matrix at the operating point."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        matrix = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
        figure, axis = plt.subplots(figsize=(4.5, 4))
        axis.imshow(matrix, cmap="Blues")
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(column, row, str(value), ha="center", va="center")
        axis.set_xticks([0, 1], ["not flagged", "flagged"])
        axis.set_yticks([0, 1], ["not readmitted", "readmitted"])
        axis.set_title(f"Test side at operating point {threshold:.3f}")
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path
    except Exception as error:  # noqa: BLE001 - a plot is a side channel and must not stop training
        logger.warning("confusion matrix plot failed: %s; the run goes on without it", error)
        return None
