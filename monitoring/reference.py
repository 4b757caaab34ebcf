"""Sources of the drift reference: the training frame of the audited model version.

``ReferenceSource`` is the interface: given a registered model name and version, return the frame the version
was trained on. ``MLflowReferenceSource`` reads it from the version's MLflow run (artifact path
``monitor_reference_artifact``, Parquet or CSV, else the run's held-out test set). ``FrameReferenceSource``
serves a frame held in memory, for tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from healthflow.errors import NotFoundError, ServiceUnavailableError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
# Logged by every training run (training.tracking): the held-out test side, same feature service, no entity
# columns. NOTE: used only when the run lacks the training frame, so drift is then measured against test rows.
TEST_SET_ARTIFACT = "evaluation/test_set.parquet"


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version and the MLflow run that produced it."""

    name: str
    version: str
    run_id: str


class ReferenceSource(Protocol):
    """Return the training frame of a model version; raise NotFoundError when there is none."""

    def resolve(self, name: str, version: str | None) -> ModelVersionRef:
        """Return the given version, or the champion when ``version`` is None."""
        ...

    def load(self, model: ModelVersionRef) -> pd.DataFrame:
        """Return the reference frame of ``model`` (one row per training stay, entity columns included)."""
        ...


class FrameReferenceSource:
    """A reference frame held in memory, reported as the given model version."""

    def __init__(self, frame: pd.DataFrame, *, model: ModelVersionRef) -> None:
        self.frame = frame
        self.model = model

    def resolve(self, name: str, version: str | None) -> ModelVersionRef:
        if name != self.model.name or version not in (None, self.model.version):
            raise NotFoundError(f"model {name} version {version or CHAMPION_ALIAS} is not the in-memory reference")
        return self.model

    def load(self, model: ModelVersionRef) -> pd.DataFrame:
        return self.frame


class MLflowReferenceSource:
    """Read the reference from the MLflow run of a registered model version."""

    def __init__(self, tracking_uri: str, *, artifact_path: str, download_dir: Path) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_path = artifact_path
        self.download_dir = download_dir

    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def resolve(self, name: str, version: str | None) -> ModelVersionRef:
        from mlflow.exceptions import MlflowException

        try:
            client = self._client()
            found = (
                client.get_model_version(name, version)
                if version
                else client.get_model_version_by_alias(name, CHAMPION_ALIAS)
            )
        except MlflowException as error:
            requested = f"version {version}" if version else f"alias {CHAMPION_ALIAS!r}"
            if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise ServiceUnavailableError(
                    f"cannot read {requested} of registered model {name} from MLflow at {self.tracking_uri}: "
                    f"{error.error_code}; check that MLflow runs (`healthflow stack status`)"
                ) from error
            raise NotFoundError(
                f"registered model {name} has no {requested} in MLflow at {self.tracking_uri}; "
                "train and promote a model first, or pass --model-version"
            ) from error
        return ModelVersionRef(name=name, version=str(found.version), run_id=str(found.run_id or ""))

    def load(self, model: ModelVersionRef) -> pd.DataFrame:
        import pandas as pd
        from mlflow.exceptions import MlflowException

        import mlflow

        if not model.run_id:
            raise NotFoundError(
                f"model {model.name} version {model.version} has no MLflow run to read the reference from"
            )
        target = self.download_dir / f"{model.name}-{model.version}"
        target.mkdir(parents=True, exist_ok=True)
        local = None
        for artifact_path in dict.fromkeys((self.artifact_path, TEST_SET_ARTIFACT)):
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=model.run_id,
                    artifact_path=artifact_path,
                    dst_path=str(target),
                    tracking_uri=self.tracking_uri,
                )
            except MlflowException:
                continue
            except OSError as error:
                raise ServiceUnavailableError(
                    f"cannot download the reference from MLflow at {self.tracking_uri}"
                ) from error
            if artifact_path != self.artifact_path:
                logger.warning(
                    "run %s has no %s; using its held-out test set %s as the drift reference",
                    model.run_id,
                    self.artifact_path,
                    artifact_path,
                )
            break
        if local is None:
            raise NotFoundError(
                f"run {model.run_id} of model {model.name} version {model.version} has neither {self.artifact_path} "
                f"nor {TEST_SET_ARTIFACT}; set HEALTHFLOW_MONITOR_REFERENCE_ARTIFACT to the training frame's path"
            )

        path = Path(local)
        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        logger.info("reference of %s version %s: %d rows", model.name, model.version, len(frame))
        return frame
