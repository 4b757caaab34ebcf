"""The description of a training frame: which columns are entities, time, label, features and audit attributes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from healthflow.errors import InvalidInputError


@dataclass(frozen=True)
class TrainingSpec:
    """Column roles of one feature service's training frame.

    ``time_column`` is the index event time (UTC). The split is by patient only when it is None, or when
    ``split_by_time`` is false, for sources whose timestamps only order rows and are not real dates.
    ``label_available_column`` is when the label became known (UTC); train rows whose label is known only
    after the test cut-off are dropped. ``lace_column`` is None when the source has no LACE score.
    """

    feature_service: str
    patient_column: str
    stay_column: str
    label_column: str
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    time_column: str | None = None
    label_available_column: str | None = None
    audit_columns: tuple[str, ...] = ("sex", "race", "ethnicity", "age_band")
    lace_column: str | None = None
    split_by_time: bool = True

    @property
    def features(self) -> list[str]:
        return [*self.numeric_features, *self.categorical_features]

    def validate(self, columns: Sequence[str]) -> None:
        """Raise InvalidInputError naming every column the frame lacks."""
        required = [self.patient_column, self.stay_column, self.label_column, *self.features]
        required += [name for name in (self.time_column, self.label_available_column) if name]
        missing = [name for name in dict.fromkeys(required) if name not in set(columns)]
        if missing:
            raise InvalidInputError(
                f"training frame for {self.feature_service} lacks columns {missing}; "
                "check the feature service definition"
            )
        overlap = set(self.numeric_features) & set(self.categorical_features)
        if overlap:
            raise InvalidInputError(f"columns {sorted(overlap)} are declared both numeric and categorical")
        if not self.features:
            raise InvalidInputError(f"feature service {self.feature_service} declares no feature columns")
