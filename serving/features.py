"""Online feature rows for scoring, read from the Feast online store by entity (patient pseudonym, stay).

A ``FeatureSource`` returns one ``FeatureRow`` per entity: the values by feature name, which features are
missing, when each feature view was last written (freshness) and the lineage (Feast project, feature
service, feature views). When a request gives no stay id, the latest stay of the patient is looked up in
the feature view's PostgreSQL batch source, because the online store is keyed by (patient, stay) and cannot
be searched by patient alone.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from healthflow.errors import NotFoundError, ServiceUnavailableError

logger = logging.getLogger(__name__)

# Feature that names the stay of a row in feature views keyed by patient only (the latest stay per patient).
SOURCE_STAY_FEATURE = "source_stay_id"


@dataclass(frozen=True)
class Entity:
    """One scoring target: the patient pseudonym and the stay (encounter) id."""

    pseudonym: str
    stay_id: str


@dataclass
class FeatureRow:
    """The online features of one entity; ``event_times`` maps a feature view to its last write (UTC)."""

    entity: Entity
    values: dict[str, Any]
    missing: list[str]
    event_times: dict[str, datetime | None]
    lineage: dict[str, Any] = field(default_factory=dict)

    def freshness(self, now: datetime) -> dict[str, Any]:
        """Return per feature view its last write time and age in seconds at ``now`` (UTC)."""
        views = {}
        for view, written_at in self.event_times.items():
            views[view] = {
                "event_time": written_at.isoformat() if written_at else None,
                "age_seconds": round((now - written_at).total_seconds(), 3) if written_at else None,
            }
        return views


class FeatureSource(Protocol):
    """Source of feature rows for the service; the Feast implementation is the production one."""

    def get_rows(self, entities: Sequence[Entity]) -> list[FeatureRow]: ...

    def latest_stay(self, pseudonym: str) -> str: ...

    def check(self) -> None: ...


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables while Feast reads its configuration, then restore the previous values."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class FeastFeatureSource:
    """Read one feature service from a Feast repository's online store."""

    def __init__(self, repo_path: Path, feature_service: str, *, environment: dict[str, str] | None = None) -> None:
        """Open the repository; ``environment`` contains the variables its feature_store.yaml expands."""
        from feast import FeatureStore

        try:
            with _environment(environment or {}):
                self._store = FeatureStore(repo_path=str(repo_path))
            self._service = self._store.get_feature_service(feature_service)
        except Exception as error:
            # Feast raises many unrelated types here (registry, config, connection); all mean "not usable".
            raise ServiceUnavailableError(
                f"cannot open feature service {feature_service!r} in the Feast repository {repo_path}; "
                "run `feast apply` there and check the online store"
            ) from error
        self.feature_service = feature_service
        self.project = self._store.project
        self._views = self._resolve_views()
        self.patient_key, self.stay_key = self._resolve_join_keys()

    def _resolve_views(self) -> list[Any]:
        views = []
        for projection in self._service.feature_view_projections:
            views.append(self._store.get_feature_view(projection.name))
        return views

    def _resolve_join_keys(self) -> tuple[str, str | None]:
        """Return the patient join key and the stay join key; None for the stay key when views are keyed by
        patient only and serve each patient's latest stay, with its id in the ``source_stay_id`` feature."""
        keys: list[str] = []
        for view in self._views:
            for column in view.entity_columns:
                if column.name not in keys:
                    keys.append(column.name)
        patient = [key for key in keys if "patient" in key or "pseudonym" in key]
        stay = [key for key in keys if "stay" in key or "encounter" in key]
        if len(patient) != 1 or len(stay) > 1 or (not stay and SOURCE_STAY_FEATURE not in self.feature_names()):
            raise ServiceUnavailableError(
                f"feature service {self.feature_service!r} has join keys {keys}; the API needs exactly one patient "
                "key (named *patient* or *pseudonym*) and either one stay key (named *stay* or *encounter*) or a "
                f"{SOURCE_STAY_FEATURE} feature naming the latest stay"
            )
        return patient[0], (stay[0] if stay else None)

    def feature_names(self) -> list[str]:
        return [feature.name for view in self._views for feature in view.features]

    def get_rows(self, entities: Sequence[Entity]) -> list[FeatureRow]:
        """Return one row per entity, in order; raise NotFoundError when an entity has no feature at all."""
        if self.stay_key is None:
            entity_rows = [{self.patient_key: entity.pseudonym} for entity in entities]
        else:
            entity_rows = [{self.patient_key: entity.pseudonym, self.stay_key: entity.stay_id} for entity in entities]
        try:
            response = self._store.get_online_features(
                features=self._service, entity_rows=entity_rows, full_feature_names=True
            ).to_dict(include_event_timestamps=True)
        except Exception as error:
            # Online store errors come from several drivers; the message may carry entity keys, so it is not kept.
            logger.error("online feature read failed for %d entities: %s", len(entities), type(error).__name__)
            raise ServiceUnavailableError("the online feature store could not be read; retry later") from error
        return [self._row(entity, index, response) for index, entity in enumerate(entities)]

    def _row(self, entity: Entity, index: int, response: dict[str, list[Any]]) -> FeatureRow:
        values: dict[str, Any] = {}
        event_times: dict[str, datetime | None] = {}
        for view in self._views:
            latest: datetime | None = None
            for feature in view.features:
                reference = f"{view.name}__{feature.name}"
                values[feature.name] = response[reference][index]
                seconds = response.get(reference + "__ts", [None] * (index + 1))[index]
                if seconds:
                    written_at = datetime.fromtimestamp(seconds, UTC)
                    latest = written_at if latest is None or written_at > latest else latest
            event_times[view.name] = latest

        missing = [name for name, value in values.items() if is_missing(value)]
        if len(missing) == len(values):
            raise NotFoundError(
                f"no online features for patient {entity.pseudonym} stay {entity.stay_id} in feature service "
                f"{self.feature_service}; the patient is unknown or the features are not materialised yet",
                pseudonym=entity.pseudonym,
                stay_id=entity.stay_id,
            )
        if self.stay_key is None:
            entity = self._served_stay(entity, values, missing)
        lineage = {
            "feast_project": self.project,
            "feature_service": self.feature_service,
            "feature_views": {view.name: [feature.name for feature in view.features] for view in self._views},
        }
        return FeatureRow(entity=entity, values=values, missing=missing, event_times=event_times, lineage=lineage)

    def _served_stay(self, entity: Entity, values: dict[str, Any], missing: list[str]) -> Entity:
        """Move the served stay id out of the feature values; reject a request for a stay that is not the latest."""
        served = values.pop(SOURCE_STAY_FEATURE, None)
        if SOURCE_STAY_FEATURE in missing:
            missing.remove(SOURCE_STAY_FEATURE)
        if entity.stay_id and served and entity.stay_id != served:
            raise NotFoundError(
                f"stay {entity.stay_id} of patient {entity.pseudonym} is not the patient's latest stay; feature "
                f"service {self.feature_service} serves the latest stay only, so omit stay_id or give {served}",
                pseudonym=entity.pseudonym,
                stay_id=entity.stay_id,
            )
        return Entity(pseudonym=entity.pseudonym, stay_id=str(served or entity.stay_id))

    def latest_stay(self, pseudonym: str) -> str:
        """Return the stay id of the patient's latest stay in the batch source; NotFoundError when none.

        With views keyed by patient only, return "" instead: the online row itself is the latest stay, and
        ``get_rows`` fills in its id.
        """
        from psycopg import sql

        if self.stay_key is None:
            return ""

        view = self._views[0]
        source = view.batch_source
        query = getattr(source, "get_table_query_string", None)
        if query is None or not hasattr(self._store.config.offline_store, "host"):
            raise NotFoundError(
                "scoring without a stay id needs a PostgreSQL batch source; give stay_id in the request"
            )
        statement = sql.SQL(
            "SELECT {stay} FROM {source} AS s WHERE {patient} = %s ORDER BY {time} DESC LIMIT 1"
        ).format(
            stay=sql.Identifier(self.stay_key),
            source=sql.SQL(query()),
            patient=sql.Identifier(self.patient_key),
            time=sql.Identifier(source.timestamp_field),
        )
        try:
            with self._offline_connection() as connection:
                found = connection.execute(statement, (pseudonym,)).fetchone()
        except Exception as error:
            logger.error("latest stay lookup failed: %s", type(error).__name__)
            raise ServiceUnavailableError(
                "the offline feature store could not be read; give stay_id or retry"
            ) from error
        if found is None:
            raise NotFoundError(
                f"patient {pseudonym} has no stay in feature service {self.feature_service}; "
                "the patient is unknown or the features are not materialised yet",
                pseudonym=pseudonym,
            )
        return str(found[0])

    def _offline_connection(self) -> Any:
        import psycopg

        config = self._store.config.offline_store
        return psycopg.connect(
            host=config.host,
            port=config.port,
            dbname=config.database,
            user=config.user,
            password=config.password,
            connect_timeout=5,
        )

    def check(self) -> None:
        """Raise ServiceUnavailableError when the online store cannot be reached (used by /readyz)."""
        probe = Entity(pseudonym="readiness-probe", stay_id="readiness-probe")
        try:
            self.get_rows([probe])
        except NotFoundError:
            return
