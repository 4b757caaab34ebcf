from __future__ import annotations

import io
import json
import logging

import pytest

from healthflow.logs import REDACTED, JsonFormatter, PayloadGuard, configure_logging

PATIENT = {
    "resourceType": "Patient",
    "id": "f1a2b3",
    "name": [{"family": "Zqwertyson", "given": ["Anouk"]}],
    "birthDate": "1951-03-07",
}


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(PayloadGuard())
    logger = logging.getLogger("healthflow.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield stream
    logger.removeHandler(handler)


def test_json_line_has_standard_fields(captured: io.StringIO) -> None:
    logging.getLogger("healthflow.test.logs").info("stored %d resources", 3, extra={"batch_id": "b1"})
    entry = json.loads(captured.getvalue())
    assert entry["message"] == "stored 3 resources"
    assert entry["level"] == "INFO"
    assert entry["batch_id"] == "b1"
    assert entry["time"].endswith("+00:00")


@pytest.mark.parametrize(
    "payload",
    [PATIENT, json.dumps(PATIENT), json.dumps(PATIENT).encode()],
    ids=["mapping", "json-text", "json-bytes"],
)
def test_fhir_payload_argument_is_redacted(captured: io.StringIO, payload: object) -> None:
    logging.getLogger("healthflow.test.logs").warning("could not store %s", payload)
    output = captured.getvalue()
    assert "Zqwertyson" not in output
    assert "1951-03-07" not in output
    assert REDACTED in output


def test_fhir_payload_in_extra_is_redacted(captured: io.StringIO) -> None:
    logging.getLogger("healthflow.test.logs").error("rejected", extra={"resource": PATIENT})
    output = captured.getvalue()
    assert "Zqwertyson" not in output
    assert json.loads(output)["resource"] == REDACTED


def test_configure_logging_text_format(tmp_path) -> None:
    log_file = tmp_path / "out.log"
    configure_logging(level="INFO", log_format="text", log_file=log_file)
    try:
        logging.getLogger("healthflow.test.text").info("payload %s", PATIENT)
        for handler in logging.getLogger().handlers:
            handler.flush()
        text = log_file.read_text()
        assert "INFO" in text
        assert "Zqwertyson" not in text
    finally:
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
            handler.close()
