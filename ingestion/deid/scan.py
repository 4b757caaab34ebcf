"""Privacy scan: search everything downstream of the raw zone for identifiers found in the raw zone.

Collected from raw.resources: patient names, identifier values, phone numbers (as written and as digits),
address lines, exact birth dates, and the original id of every raw resource. Names are searched as given
and family name together, the mother's maiden name, and family names of ``MIN_FAMILY_NAME_CHARS`` letters
or more.

Searched: every table of every schema except ``raw`` in the main database, every table of the MLflow and
Feast databases, every topic under the configured prefix (``fhir.raw`` included, since its events must not
carry identifiable data either), and every file under the state folder (logs, reports, artifacts) except
the PostgreSQL and Kafka data folders, plus ``privacy_scan_dirs``. A birth date is searched only as the
value of a ``birthDate`` element in the same patient's de-identified resources (deid zone and
``fhir.deid``). The same date string elsewhere is no evidence, because it also occurs as a shifted date of
this or another patient.

A hit is reported by place and kind ("deid.resources row 12: phone number"), never by value.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from healthflow.db import connect
from healthflow.pseudonym import key_bytes, patient_pseudonym
from healthflow.settings import Settings

logger = logging.getLogger(__name__)

MIN_VALUE_CHARS = 5  # identifier values, phone numbers and address lines shorter than this are not searched
MIN_FAMILY_NAME_CHARS = 6  # shorter family names alone ("Hill", "Young") are too common in clinical text
MAX_FILE_BYTES = 512 * 1024 * 1024
SKIPPED_SCHEMAS = ("raw", "pg_catalog", "information_schema", "pg_toast")
# Folders of the state directory that hold the raw zone itself (database files, broker segments).
SKIPPED_STATE_FOLDERS = (Path("postgres") / "data", Path("kafka") / "data")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-.'][A-Za-z0-9]+)*")
_DIGITS = re.compile(r"\D")


def _birth_date_written(text: str, birth_dates: set[str]) -> bool:
    """Return True when one of ``birth_dates`` is the value of a ``birthDate`` element in JSON ``text``."""
    return any(re.search(rf'"birthDate"\s*:\s*"{re.escape(birth)}"', text) for birth in birth_dates)


@dataclass(frozen=True)
class Hit:
    """One identifier found: where, and what kind (never the value)."""

    place: str
    kind: str

    def __str__(self) -> str:
        return f"{self.place}: {self.kind}"


@dataclass
class IdentifierSet:
    """The identifiers to look for, indexed by their first token (lower case) for a fast search."""

    phrases: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    birth_dates: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # pseudonym -> dates
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, value: Any, kind: str, *, min_chars: int = MIN_VALUE_CHARS) -> None:
        if not isinstance(value, str):
            return
        text = " ".join(value.split()).lower()
        if len(text) < min_chars:
            return
        first = _TOKEN.search(text)
        if first is None:
            return
        entries = self.phrases[first.group(0)]
        if (text, kind) not in entries:
            entries.append((text, kind))
            self.counts[kind] += 1

    def search(self, text: str) -> set[str]:
        """Return the kinds of identifiers that occur in ``text`` as whole words."""
        lowered = text.lower()
        found: set[str] = set()
        for match in _TOKEN.finditer(lowered):
            candidates = self.phrases.get(match.group(0))
            if candidates is None:
                # A multi-word phrase starts with a whole token, but a token may end inside a longer one
                # ("313" inside "313-555"): also try the leading part before the first separator.
                head = re.split(r"[-.']", match.group(0), maxsplit=1)[0]
                candidates = self.phrases.get(head)
                if candidates is None:
                    continue
            start = match.start()
            for phrase, kind in candidates:
                end = start + len(phrase)
                if lowered.startswith(phrase, start) and (end == len(lowered) or not lowered[end].isalnum()):
                    found.add(kind)
        return found


def collect_identifiers(settings: Settings) -> IdentifierSet:
    """Read the identifiers to search for from the raw zone."""
    key = key_bytes(settings.pseudonym_key.get_secret_value()) if settings.pseudonym_key else b""
    identifiers = IdentifierSet()
    with connect(settings) as connection:
        for (resource_id,) in connection.execute("SELECT DISTINCT resource_id FROM raw.resources"):
            identifiers.add(resource_id, "original id", min_chars=8)
        people = connection.execute(
            "SELECT resource_type, resource_id, content FROM raw.resources"
            " WHERE resource_type IN ('Patient', 'RelatedPerson', 'Person')"
        )
        for resource_type, resource_id, content in people:
            _collect_person(identifiers, content)
            if resource_type == "Patient" and isinstance(content.get("birthDate"), str) and key:
                identifiers.birth_dates[patient_pseudonym(key, resource_id)].add(content["birthDate"])
    logger.info("privacy scan looks for %s", dict(identifiers.counts))
    return identifiers


def _collect_person(identifiers: IdentifierSet, content: dict[str, Any]) -> None:
    for name in content.get("name") or []:
        family = name.get("family")
        given = [part for part in name.get("given") or [] if isinstance(part, str)]
        if isinstance(family, str):
            identifiers.add(family, "family name", min_chars=MIN_FAMILY_NAME_CHARS)
            for part in given:
                identifiers.add(f"{part} {family}", "name")
                identifiers.add(f"{family}, {part}", "name")
            if given:
                identifiers.add(" ".join([*given, family]), "name")
        if isinstance(name.get("text"), str):
            identifiers.add(name["text"], "name")
    for extension in content.get("extension") or []:
        if str(extension.get("url", "")).endswith("patient-mothersMaidenName"):
            identifiers.add(extension.get("valueString"), "name")
    for identifier in content.get("identifier") or []:
        identifiers.add(identifier.get("value"), "identifier value")
    for telecom in content.get("telecom") or []:
        value = telecom.get("value")
        identifiers.add(value, "phone number or e-mail")
        if telecom.get("system") in (None, "phone", "fax", "sms") and isinstance(value, str):
            identifiers.add(_DIGITS.sub("", value), "phone number or e-mail", min_chars=7)
    for address in content.get("address") or []:
        for line in address.get("line") or []:
            identifiers.add(line, "address line")
    for contact in content.get("contact") or []:
        _collect_person(
            identifiers,
            {key: contact.get(key) for key in ("telecom", "address")}
            | {"name": [contact["name"]] if isinstance(contact.get("name"), dict) else []},
        )


def _rows_of_database(connection: psycopg.Connection, database: str) -> Iterator[tuple[str, str]]:
    tables = connection.execute(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE table_type = 'BASE TABLE' AND NOT (table_schema = ANY(%s)) ORDER BY 1, 2",
        (list(SKIPPED_SCHEMAS),),
    ).fetchall()
    for schema, table in tables:
        query = sql.SQL("SELECT t::text FROM {}.{} AS t").format(sql.Identifier(schema), sql.Identifier(table))
        with connection.cursor(name=f"scan_{schema}_{table}"[:60]) as cursor:
            cursor.itersize = 2000
            cursor.execute(query)
            for number, (text,) in enumerate(cursor, start=1):
                yield f"database {database}, table {schema}.{table}, row {number}", text


def scan_databases(settings: Settings, identifiers: IdentifierSet) -> list[Hit]:
    """Search every non-raw table of the main, MLflow and Feast databases."""
    hits: list[Hit] = []
    databases = [settings.pg_database, settings.pg_mlflow_database, settings.pg_feast_database]
    for database in dict.fromkeys(databases):
        try:
            connection = connect(settings, database)
        except ConnectionError:
            logger.warning("privacy scan skipped database %s: it does not exist or cannot be reached", database)
            continue
        with connection:
            for place, text in _rows_of_database(connection, database):
                hits.extend(Hit(place, kind) for kind in sorted(identifiers.search(text)))
            if database == settings.pg_database:
                hits.extend(_scan_deid_birth_dates(connection, identifiers))
    return hits


def _scan_deid_birth_dates(connection: psycopg.Connection, identifiers: IdentifierSet) -> list[Hit]:
    hits = []
    rows = connection.execute(
        "SELECT id, patient_pseudonym, content::text FROM deid.resources WHERE patient_pseudonym = ANY(%s)",
        (list(identifiers.birth_dates),),
    )
    for deid_id, pseudonym, text in rows:
        if _birth_date_written(text, identifiers.birth_dates[pseudonym]):
            hits.append(Hit(f"deid.resources id {deid_id}", "exact birth date of the same patient"))
    return hits


def scan_topics(settings: Settings, identifiers: IdentifierSet, *, timeout_seconds: float = 10.0) -> list[Hit]:
    """Read every topic under the prefix from the start and search keys and values."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    metadata = admin.list_topics(timeout=timeout_seconds)
    prefix = settings.kafka_topic_prefix
    topics = sorted(name for name in metadata.topics if name.startswith(prefix) and not name.startswith("__"))
    deid_topic = settings.topic("fhir.deid")
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": "healthflow-privacy-scan",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    hits: list[Hit] = []
    try:
        for topic in topics:
            for partition in metadata.topics[topic].partitions:
                hits.extend(
                    _scan_partition(
                        consumer,
                        TopicPartition(topic, partition),
                        identifiers,
                        birth_dates=topic == deid_topic,
                        timeout_seconds=timeout_seconds,
                    )
                )
    finally:
        consumer.close()
    return hits


def _scan_partition(
    consumer: Any, partition: Any, identifiers: IdentifierSet, *, birth_dates: bool, timeout_seconds: float
) -> list[Hit]:
    from confluent_kafka import TopicPartition

    low, high = consumer.get_watermark_offsets(partition, timeout=timeout_seconds)
    if high <= low:
        return []
    consumer.assign([TopicPartition(partition.topic, partition.partition, low)])
    hits = []
    position = low
    while position < high:
        # Ask for no more than the partition still holds: consume() waits the whole timeout for a batch
        # it cannot fill, which made every partition end cost timeout_seconds.
        messages = consumer.consume(min(1000, high - position), timeout=timeout_seconds)
        if not messages:
            logger.warning(
                "privacy scan stopped reading %s[%d] at offset %d of %d: timed out",
                partition.topic,
                partition.partition,
                position,
                high,
            )
            hits.append(Hit(f"topic {partition.topic}[{partition.partition}]", "not fully read (timed out)"))
            break
        for message in messages:
            if message.error() is not None:
                continue
            position = message.offset() + 1
            place = f"topic {message.topic()}[{message.partition()}] offset {message.offset()}"
            key = (message.key() or b"").decode("utf-8", "replace")
            value = (message.value() or b"").decode("utf-8", "replace")
            kinds = identifiers.search(key) | identifiers.search(value)
            own_birth_dates = identifiers.birth_dates.get(key, set()) if birth_dates else set()
            if own_birth_dates and _birth_date_written(value, own_birth_dates):
                kinds.add("exact birth date of the same patient")
            hits.extend(Hit(place, kind) for kind in sorted(kinds))
    consumer.unassign()
    return hits


def scan_folders(settings: Settings, identifiers: IdentifierSet) -> list[Hit]:
    """Search every file under the state folder (except the raw data folders) and ``privacy_scan_dirs``."""
    state = settings.state_dir.resolve()
    skipped = [state / folder for folder in SKIPPED_STATE_FOLDERS]
    hits: list[Hit] = []
    for path in _files([state, *[folder.resolve() for folder in settings.privacy_scan_dirs]], skipped):
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                hits.append(Hit(f"file {path}", f"not searched: larger than {MAX_FILE_BYTES} bytes"))
                continue
            text = path.read_bytes().decode("utf-8", "replace")
        except OSError as error:
            logger.warning("privacy scan cannot read %s: %s", path, error.strerror)
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            hits.extend(Hit(f"file {path}, line {number}", kind) for kind in sorted(identifiers.search(line)))
    return hits


def _files(roots: Iterable[Path], skipped: list[Path]) -> Iterator[Path]:
    for root in roots:
        if not root.exists():
            continue
        for path in sorted(root.rglob("*")):
            if any(path == folder or folder in path.parents for folder in skipped):
                continue
            if path.is_file() and not path.is_symlink():
                yield path


@dataclass
class ScanReport:
    """Everything the scan found, and how much it searched for."""

    hits: list[Hit]
    searched_for: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {"hits": [str(hit) for hit in self.hits], "searched_for": self.searched_for}

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_dict(), option=orjson.OPT_INDENT_2)


def run_scan(settings: Settings, *, topics: bool = True, files: bool = True) -> ScanReport:
    """Collect the raw zone's identifiers and search the databases, topics and files for them."""
    identifiers = collect_identifiers(settings)
    hits = scan_databases(settings, identifiers)
    if topics:
        hits.extend(scan_topics(settings, identifiers))
    if files:
        hits.extend(scan_folders(settings, identifiers))
    searched = dict(identifiers.counts) | {"birth dates": sum(len(v) for v in identifiers.birth_dates.values())}
    return ScanReport(hits=hits, searched_for=searched)
