"""Where FHIR input comes from: one small interface, one class per kind of source.

Every source yields ``Submission``s. A submission is one unit the pipeline validates as a whole: a Bundle
(from a ``.json`` file, a search page or an HTTP request), one resource (a ``.json`` file, an NDJSON line)
or input that could not be read (kept with the issue). ``source_ref`` says where the submission
came from (file path and line, URL, request id); it can hold PHI (Synthea file names are patient names), so
it is stored in the raw zone only and never logged.
"""

from __future__ import annotations

import glob
import gzip
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import orjson

from ingestion.fhir.outcome import CODE_STRUCTURE, CODE_TOO_COSTLY, Issue

logger = logging.getLogger(__name__)

JSON_SUFFIXES = (".json", ".json.gz")
NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")
FHIR_JSON = "application/fhir+json"


@dataclass
class Submission:
    """One unit of input as bytes (parsed later, maybe in a worker process), or the issue that stopped reading.

    ``data`` is at most ``max_bytes + 1`` long: oversized input is cut there and rejected as too large.
    """

    source_ref: str
    data: bytes = b""
    issues: list[Issue] = field(default_factory=list)


class Source(Protocol):
    """A source of FHIR input. ``kind`` is stored as raw.resources.source (file, ndjson, rest, bulk, http)."""

    kind: str

    def submissions(self) -> Iterator[Submission]: ...


def too_large_issue(max_bytes: int) -> Issue:
    return Issue(CODE_TOO_COSTLY, "", f"input of more than {max_bytes} bytes exceeds the size limit")


def submission_of(data: bytes, *, source_ref: str, max_bytes: int) -> Submission:
    """Wrap ``data``; input over ``max_bytes`` gets a too-costly issue and keeps only its first bytes."""
    if len(data) > max_bytes:
        return Submission(source_ref, data[: max_bytes + 1], [too_large_issue(max_bytes)])
    return Submission(source_ref, data)


def parse_json(data: bytes) -> tuple[Any, list[Issue]]:
    """Parse one JSON document; return (value, []) or (None, [issue]) for invalid JSON."""
    try:
        return orjson.loads(data), []
    except orjson.JSONDecodeError as error:
        # The decoder's message names the problem and a position, never the text around it.
        problem = f"invalid JSON: {str(error).split(':', 1)[0]} at char {error.pos}"
        return None, [Issue(CODE_STRUCTURE, "", problem)]


def _read_limited(path: Path, max_bytes: int) -> bytes:
    """Read at most ``max_bytes + 1`` bytes (after gunzip), enough to tell that a file is too large."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        return handle.read(max_bytes + 1)


def expand_paths(patterns: list[str]) -> list[Path]:
    """Expand files, folders (recursively) and glob patterns into a sorted, de-duplicated list of input files."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = [Path(match) for match in sorted(glob.glob(pattern, recursive=True))] or [Path(pattern)]  # noqa: PTH207
        for match in matches:
            if match.is_dir():
                for child in sorted(match.rglob("*")):
                    if child.is_file() and child.name.endswith(JSON_SUFFIXES + NDJSON_SUFFIXES):
                        found[child] = None
            elif match.is_file():
                found[match] = None
            else:
                raise FileNotFoundError(f"no file or folder matches {pattern!r}; give a file, folder or glob")
    return list(found)


class FileSource:
    """FHIR JSON files (``.json``, ``.json.gz``), each a Bundle or a single resource."""

    kind = "file"

    def __init__(self, paths: list[Path], *, max_bytes: int) -> None:
        self.paths = paths
        self.max_bytes = max_bytes

    def submissions(self) -> Iterator[Submission]:
        for path in self.paths:
            try:
                data = _read_limited(path, self.max_bytes)
            except (OSError, EOFError) as error:
                issue = Issue(CODE_STRUCTURE, "", f"file could not be read ({type(error).__name__})")
                yield Submission(str(path), issues=[issue])
                continue
            yield submission_of(data, source_ref=str(path), max_bytes=self.max_bytes)


def _ndjson_lines(lines: Iterator[bytes], *, source_ref: str, max_bytes: int) -> Iterator[Submission]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        yield submission_of(line.rstrip(b"\r\n"), source_ref=f"{source_ref}#line={number}", max_bytes=max_bytes)


class NdjsonSource:
    """Bulk Data NDJSON files (``.ndjson``, ``.ndjson.gz``): one resource per line, one type per file."""

    kind = "ndjson"

    def __init__(self, paths: list[Path], *, max_bytes: int) -> None:
        self.paths = paths
        self.max_bytes = max_bytes

    def submissions(self) -> Iterator[Submission]:
        for path in self.paths:
            opener = gzip.open if path.name.endswith(".gz") else open
            try:
                with opener(path, "rb") as handle:
                    yield from _ndjson_lines(iter(handle), source_ref=str(path), max_bytes=self.max_bytes)
            except (OSError, EOFError) as error:
                issue = Issue(CODE_STRUCTURE, "", f"file could not be read to the end ({type(error).__name__})")
                yield Submission(str(path), issues=[issue])


def sources_for_paths(patterns: list[str], *, max_bytes: int) -> list[Source]:
    """Split the expanded input files into a FileSource and an NdjsonSource (either may be absent)."""
    paths = expand_paths(patterns)
    ndjson = [path for path in paths if path.name.endswith(NDJSON_SUFFIXES)]
    json_files = [path for path in paths if path not in set(ndjson)]
    sources: list[Source] = []
    if json_files:
        sources.append(FileSource(json_files, max_bytes=max_bytes))
    if ndjson:
        sources.append(NdjsonSource(ndjson, max_bytes=max_bytes))
    return sources


def _same_origin(url: str, base_url: str) -> bool:
    left, right = urlsplit(url), urlsplit(base_url)
    return (left.scheme, left.netloc) == (right.scheme, right.netloc)


def _since_param(since: datetime | None) -> str | None:
    if since is None:
        return None
    if since.tzinfo is None:
        raise ValueError("since must be timezone-aware (UTC)")
    return since.isoformat()


class RestSearchSource:
    """FHIR REST search, one resource type after another, following ``Bundle.link`` next pages.

    ``since`` (aware datetime) adds ``_lastUpdated=gt<since>``. Next links must stay on the server's own
    scheme, host and port; a link elsewhere stops paging for that type with a warning.
    """

    kind = "rest"

    def __init__(
        self,
        base_url: str,
        *,
        resource_types: list[str],
        since: datetime | None,
        page_size: int,
        max_bytes: int,
        timeout_seconds: float,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.resource_types = resource_types
        self.since = _since_param(since)
        self.page_size = page_size
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds

    def submissions(self) -> Iterator[Submission]:
        import httpx

        with httpx.Client(timeout=self.timeout_seconds, headers={"Accept": FHIR_JSON}) as client:
            for resource_type in self.resource_types:
                params: dict[str, Any] | None = {"_count": self.page_size}
                if self.since:
                    params = {**(params or {}), "_lastUpdated": f"gt{self.since}"}
                url: str | None = urljoin(self.base_url, resource_type)
                while url:
                    response = client.get(url, params=params)
                    response.raise_for_status()
                    yield submission_of(response.content, source_ref=str(response.url), max_bytes=self.max_bytes)
                    url, params = self._next_page(response.content), None

    def _next_page(self, page: bytes) -> str | None:
        bundle, issues = parse_json(page)
        if issues or not isinstance(bundle, dict):
            return None
        for link in bundle.get("link") or []:
            if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
                if _same_origin(link["url"], self.base_url):
                    return link["url"]
                logger.warning("next link points to another server; paging stopped")
        return None


class BulkExportSource:
    """FHIR Bulk Data ``$export``: kick-off, status polling, then download of each NDJSON output file.

    After a complete run ``transaction_time`` is the server's transactionTime, the ``since`` to use for
    the next incremental export.
    """

    kind = "bulk"

    def __init__(
        self,
        base_url: str,
        *,
        resource_types: list[str] | None,
        since: datetime | None,
        max_bytes: int,
        timeout_seconds: float,
        max_poll_seconds: float,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.resource_types = resource_types
        self.since = _since_param(since)
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds
        self.max_poll_seconds = max_poll_seconds
        self.transaction_time: str | None = None

    def submissions(self) -> Iterator[Submission]:
        import httpx

        with httpx.Client(timeout=self.timeout_seconds) as client:
            status_url = self._kick_off(client)
            manifest = self._poll(client, status_url)
            self.transaction_time = manifest.get("transactionTime")
            for output in manifest.get("output") or []:
                url = output.get("url") if isinstance(output, dict) else None
                if not isinstance(url, str) or not _same_origin(url, self.base_url):
                    raise ValueError("bulk export manifest lists an output file that is not on the FHIR server")
                with client.stream("GET", url, headers={"Accept": "application/fhir+ndjson"}) as response:
                    response.raise_for_status()
                    lines = (line.encode("utf-8") for line in response.iter_lines())
                    yield from _ndjson_lines(lines, source_ref=url, max_bytes=self.max_bytes)
            if manifest.get("error"):
                logger.warning("bulk export reported %d error files; they are not ingested", len(manifest["error"]))
            client.delete(status_url)

    def _kick_off(self, client: Any) -> str:
        params: dict[str, str] = {}
        if self.resource_types:
            params["_type"] = ",".join(self.resource_types)
        if self.since:
            params["_since"] = self.since
        headers = {"Accept": FHIR_JSON, "Prefer": "respond-async"}
        response = client.get(urljoin(self.base_url, "$export"), params=params, headers=headers)
        if response.status_code != 202 or "content-location" not in response.headers:
            raise RuntimeError(f"bulk export kick-off failed with HTTP {response.status_code}; expected 202")
        status_url = urljoin(self.base_url, response.headers["content-location"])
        if not _same_origin(status_url, self.base_url):
            raise ValueError("bulk export status URL is not on the FHIR server")
        return status_url

    def _poll(self, client: Any, status_url: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.max_poll_seconds
        while True:
            response = client.get(status_url, headers={"Accept": "application/json"})
            if response.status_code == 200:
                return response.json()
            if response.status_code != 202:
                raise RuntimeError(f"bulk export status check failed with HTTP {response.status_code}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"bulk export not complete after {self.max_poll_seconds} s")
            time.sleep(_retry_after_seconds(response.headers.get("retry-after")))


def _retry_after_seconds(value: str | None) -> float:
    """Return the Retry-After delay in seconds, kept between 0.1 s and 10 s (HTTP-date forms count as 1 s)."""
    try:
        seconds = float(value) if value else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), 10.0)
