"""Request bodies of the scoring routes.

They live apart from ``serving.scoring`` so that importing the service definition stays light. BentoML's
supervisor process imports it only to read the service's configuration, and the scoring code would bring in
numpy, pandas and pyarrow (about 90 MB) that this process never uses.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

# Pseudonyms are 32 hex characters (128 bits of HMAC-SHA256); anything else is a malformed request.
PSEUDONYM_LENGTH = 32


class ScoreRequest(BaseModel):
    """Score request: exactly one of ``patient_id`` (never stored or logged) or ``pseudonym``; ``stay_id`` optional."""

    patient_id: str | None = Field(
        None, min_length=1, max_length=200, description="Hospital patient id; pseudonymised on arrival."
    )
    pseudonym: str | None = Field(None, min_length=PSEUDONYM_LENGTH, max_length=PSEUDONYM_LENGTH, pattern="^[0-9a-f]+$")
    stay_id: str | None = Field(
        None, min_length=1, max_length=200, description="Stay (encounter) id; empty: the latest stay."
    )

    @model_validator(mode="after")
    def _one_patient_reference(self) -> ScoreRequest:
        if (self.patient_id is None) == (self.pseudonym is None):
            raise ValueError("give exactly one of patient_id or pseudonym")
        return self


class BatchRequest(BaseModel):
    """Several patients scored in one request; the limit is ``serve_batch_max_patients``."""

    items: list[ScoreRequest] = Field(..., min_length=1)
