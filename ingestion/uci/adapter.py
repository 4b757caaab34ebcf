"""Load the UCI Diabetes 130-US hospitals archive into one feature row per encounter, without a database.

Source: UCI Machine Learning Repository data set 296 (Strack et al., BioMed Research International 2014,
doi:10.1155/2014/781670), the archive ``dataset_diabetes.zip`` with ``diabetic_data.csv`` and
``IDs_mapping.csv``.

The data has no dates. Within a patient, stays are ordered by ``encounter_id``, and so are the synthetic
event timestamps that Feast needs: stay number k in the global ``encounter_id`` order gets
``SYNTHETIC_EPOCH + k hours``. These timestamps only order the rows; they are not real times, and the
30-day label comes from the data, not from them.
"""

from __future__ import annotations

import io
import logging
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from healthflow.errors import InvalidInputError
from healthflow.pseudonym import pseudonymise
from ingestion.featurizer import charlson
from ingestion.featurizer.demographics import UNKNOWN, age_band

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

DATA_MEMBER = "dataset_diabetes/diabetic_data.csv"
MAPPING_MEMBER = "dataset_diabetes/IDs_mapping.csv"

SYNTHETIC_EPOCH = datetime(1999, 1, 1, tzinfo=UTC)
SYNTHETIC_STEP = timedelta(hours=1)
LABEL_DELAY = timedelta(days=30)

# Pseudonym namespaces: a UCI patient_nbr never collides with a FHIR Patient id pseudonym.
PATIENT_KIND = "uci.patient_nbr"
ENCOUNTER_KIND = "uci.encounter_id"

REQUIRED_COLUMNS = (
    "encounter_id",
    "patient_nbr",
    "race",
    "gender",
    "age",
    "admission_type_id",
    "discharge_disposition_id",
    "admission_source_id",
    "time_in_hospital",
    "num_lab_procedures",
    "num_procedures",
    "num_medications",
    "number_outpatient",
    "number_emergency",
    "number_inpatient",
    "medical_specialty",
    "diag_1",
    "diag_2",
    "diag_3",
    "number_diagnoses",
    "max_glu_serum",
    "A1Cresult",
    "insulin",
    "change",
    "diabetesMed",
    "readmitted",
)

# Admission type 1 is "Emergency", 2 "Urgent", 7 "Trauma Center" in IDs_mapping.csv.
EMERGENCY_ADMISSION_TYPE_IDS = {"1", "2", "7"}

LABEL_COLUMNS = ["patient_pseudonym", "stay_id", "event_timestamp", "label", "label_available_at"]
AUDIT_COLUMNS = ["race", "ethnicity", "sex", "age_band"]
FEATURE_COLUMNS = [
    "age_band",
    "sex",
    "length_of_stay_days",
    "emergency_admission",
    "prior_inpatient_12m",
    "prior_outpatient_12m",
    "prior_ed_12m",
    "charlson_index",
    "num_diagnoses",
    "num_lab_procedures",
    "num_procedures",
    "num_medications",
    "admission_type",
    "admission_source",
    "discharge_disposition",
    "max_glu_serum",
    "a1c_result",
    "insulin",
    "medication_change",
    "diabetes_medication",
    "lace_score",
    "medical_specialty",
    "diagnosis_1_category",
    "diagnosis_2_category",
    "diagnosis_3_category",
    "previous_stay_readmitted_30d",
    "previous_stay_readmitted_later",
    "prior_stays_readmitted_30d",
    "prior_stays_readmitted_later",
]
ORDER_COLUMNS = ["encounter_rank", "encounter_order"]


def load_uci(zip_path: Path | str, key: bytes) -> pd.DataFrame:
    """Read the UCI archive and return one row per encounter (101,766 for the original file).

    Columns, all pseudonymised (no ``encounter_id`` or ``patient_nbr`` leaves this function):

    - ``patient_pseudonym`` (str): HMAC-SHA256 pseudonym of ``patient_nbr`` with ``key``; group splits by it.
    - ``stay_id`` (str): pseudonym of ``encounter_id``.
    - ``event_timestamp`` (UTC datetime): synthetic, ``1999-01-01 + encounter_rank hours`` (see module doc).
    - ``label`` (int 0/1): 1 when ``readmitted == "<30"``.
    - ``label_available_at`` (UTC datetime): ``event_timestamp`` + 30 days.
    - audit attributes ``race`` (the source label, "unknown" for "?"), ``ethnicity`` (always "unknown":
      the source codes Hispanic as a race value), ``sex`` ("female", "male", "unknown"), ``age_band``
      ("0-9" ... "80-89", "90+", from the source's 10-year band).
    - ``encounter_rank`` (int): position of the encounter in ``encounter_id`` order over the whole file;
      ``encounter_order`` (int, from 1): position within the patient. These keep the source ordering.
    - features: ``length_of_stay_days`` (``time_in_hospital``, days), ``emergency_admission`` (0/1,
      admission type Emergency, Urgent or Trauma Center), ``prior_inpatient_12m``, ``prior_outpatient_12m``,
      ``prior_ed_12m`` (visits in the year before the encounter, as the source counts them),
      ``charlson_index`` (from ``diag_1..3`` as ICD-9-CM, Quan 2005), ``num_diagnoses``,
      ``num_lab_procedures``, ``num_procedures``, ``num_medications``, ``admission_type``,
      ``admission_source``, ``discharge_disposition`` (decoded with IDs_mapping.csv, "unknown" when the
      source has NULL, Not Available, Not Mapped or Unknown/Invalid), ``max_glu_serum``, ``a1c_result``,
      ``insulin``, ``medication_change`` (0/1), ``diabetes_medication`` (0/1), ``lace_score``,
      ``medical_specialty`` (of the admitting physician, "unknown" for "?"), ``diagnosis_1_category`` ..
      ``diagnosis_3_category`` (the 3-character ICD-9-CM category of ``diag_1..3``, "unknown" for "?").
    - history in the data set, from the patient's earlier encounters in ``encounter_id`` order:
      ``previous_stay_readmitted_30d`` and ``previous_stay_readmitted_later`` (0/1: the previous stay's outcome
      was "<30" or ">30"), ``prior_stays_readmitted_30d`` and ``prior_stays_readmitted_later`` (counts over all
      earlier stays). They are known when the stay starts: a readmission that followed an earlier stay happened
      at the latest at this admission, because every encounter of the data set is an inpatient stay.

    ``lace_score`` uses the prior-year emergency count for E, because the source has no 6-month count, so it
    is an approximation of LACE. Rows come back sorted by ``encounter_rank``.

    Raises InvalidInputError when the archive or a required column is missing.
    """
    import pandas as pd

    raw, mappings = _read_archive(Path(zip_path))
    frame = pd.DataFrame(index=raw.index)

    encounter_ids = pd.to_numeric(raw["encounter_id"], errors="raise")
    frame["encounter_rank"] = encounter_ids.rank(method="first").astype("int64")
    frame["encounter_order"] = encounter_ids.groupby(raw["patient_nbr"]).rank(method="first").astype("int64")
    frame["patient_pseudonym"] = [pseudonymise(key, PATIENT_KIND, value) for value in raw["patient_nbr"]]
    frame["stay_id"] = [pseudonymise(key, ENCOUNTER_KIND, value) for value in raw["encounter_id"]]
    frame["event_timestamp"] = SYNTHETIC_EPOCH + frame["encounter_rank"].to_numpy() * SYNTHETIC_STEP
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["label"] = (raw["readmitted"] == "<30").astype("int64")
    frame["label_available_at"] = frame["event_timestamp"] + LABEL_DELAY

    frame["race"] = raw["race"].replace({"?": UNKNOWN, "": UNKNOWN})
    frame["ethnicity"] = UNKNOWN
    frame["sex"] = raw["gender"].str.lower().where(raw["gender"].isin(["Female", "Male"]), UNKNOWN)
    frame["age_band"] = raw["age"].map(_age_band_of_source)

    frame["length_of_stay_days"] = _integer(raw, "time_in_hospital")
    frame["emergency_admission"] = raw["admission_type_id"].isin(EMERGENCY_ADMISSION_TYPE_IDS).astype("int64")
    frame["prior_inpatient_12m"] = _integer(raw, "number_inpatient")
    frame["prior_outpatient_12m"] = _integer(raw, "number_outpatient")
    frame["prior_ed_12m"] = _integer(raw, "number_emergency")
    frame["charlson_index"] = _charlson_indexes(raw)
    frame["num_diagnoses"] = _integer(raw, "number_diagnoses")
    frame["num_lab_procedures"] = _integer(raw, "num_lab_procedures")
    frame["num_procedures"] = _integer(raw, "num_procedures")
    frame["num_medications"] = _integer(raw, "num_medications")
    frame["admission_type"] = raw["admission_type_id"].map(mappings["admission_type_id"]).fillna(UNKNOWN)
    frame["admission_source"] = raw["admission_source_id"].map(mappings["admission_source_id"]).fillna(UNKNOWN)
    frame["discharge_disposition"] = (
        raw["discharge_disposition_id"].map(mappings["discharge_disposition_id"]).fillna(UNKNOWN)
    )
    frame["max_glu_serum"] = raw["max_glu_serum"]
    frame["a1c_result"] = raw["A1Cresult"]
    frame["insulin"] = raw["insulin"]
    frame["medication_change"] = (raw["change"] == "Ch").astype("int64")
    frame["diabetes_medication"] = (raw["diabetesMed"] == "Yes").astype("int64")
    frame["lace_score"] = _lace_scores(frame)
    frame["medical_specialty"] = raw["medical_specialty"].replace({"?": UNKNOWN, "": UNKNOWN})
    for number in (1, 2, 3):
        frame[f"diagnosis_{number}_category"] = raw[f"diag_{number}"].map(_icd9_category)
    frame = frame.join(_earlier_outcomes(raw, encounter_ids))

    columns = LABEL_COLUMNS + [c for c in AUDIT_COLUMNS if c not in FEATURE_COLUMNS] + ORDER_COLUMNS
    frame = frame[columns + FEATURE_COLUMNS].sort_values("encounter_rank", ignore_index=True)
    logger.info(
        "loaded %d UCI encounters of %d patients, label rate %.4f",
        len(frame),
        frame["patient_pseudonym"].nunique(),
        frame["label"].mean(),
    )
    return frame


def _read_archive(zip_path: Path) -> tuple[pd.DataFrame, dict[str, dict[str, str]]]:
    import pandas as pd

    if not zip_path.is_file():
        raise InvalidInputError(
            f"UCI archive not found: {zip_path}; expected dataset_diabetes.zip from UCI data set 296"
        )
    try:
        with zipfile.ZipFile(zip_path) as archive:
            data_bytes = archive.read(DATA_MEMBER)
            mapping_text = archive.read(MAPPING_MEMBER).decode("utf-8")
    except (zipfile.BadZipFile, KeyError) as error:
        raise InvalidInputError(
            f"{zip_path} is not the UCI Diabetes 130-US archive: it needs {DATA_MEMBER} and {MAPPING_MEMBER}"
        ) from error

    raw = pd.read_csv(io.BytesIO(data_bytes), dtype=str, keep_default_na=False)
    missing = [column for column in REQUIRED_COLUMNS if column not in raw.columns]
    if missing:
        raise InvalidInputError(f"{zip_path}:{DATA_MEMBER} lacks the columns {missing}")
    if not raw["encounter_id"].is_unique:
        raise InvalidInputError(f"{zip_path}:{DATA_MEMBER} has duplicate encounter_id values")
    return raw, parse_id_mappings(mapping_text)


# Descriptions that mean "no information"; they become "unknown".
_NO_INFORMATION = {"NULL", "Not Available", "Not Mapped", "Unknown/Invalid", ""}


def parse_id_mappings(text: str) -> dict[str, dict[str, str]]:
    """Parse IDs_mapping.csv: three CSV tables, each with its own header, separated by a line ",".

    Returns {id column name: {id: description}}; descriptions are stripped, and ids whose description means
    "no information" are left out, so they decode to "unknown".
    """
    import csv

    tables: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for row in csv.reader(io.StringIO(text)):
        if not row or not any(cell.strip() for cell in row):
            current = None
            continue
        identifier, description = row[0].strip(), ",".join(row[1:]).strip()
        if current is None:
            current = tables.setdefault(identifier, {})
            continue
        if description not in _NO_INFORMATION:
            current[identifier] = description
    expected = {"admission_type_id", "discharge_disposition_id", "admission_source_id"}
    if not expected <= tables.keys():
        raise InvalidInputError(f"IDs_mapping.csv lacks the tables {sorted(expected - tables.keys())}")
    return tables


def _age_band_of_source(value: str) -> str:
    # The source writes "[70-80)"; take the lower bound.
    digits = value.strip("[)").split("-")[0]
    return age_band(int(digits)) if digits.isdigit() else UNKNOWN


def _icd9_category(code: str) -> str:
    if code.strip() in ("", "?"):
        return UNKNOWN
    normalised = charlson.normalise_icd(code, charlson.ICD9)
    # ICD-9-CM categories have three characters (001-999, V01-V91), four for external causes (E800-E999).
    return normalised[:4] if normalised.startswith("E") else normalised[:3]


def _earlier_outcomes(raw: pd.DataFrame, encounter_ids: pd.Series) -> pd.DataFrame:
    """Return, per encounter, the outcomes of the same patient's earlier encounters (``encounter_id`` order)."""
    import pandas as pd

    ordered = pd.DataFrame(
        {
            "patient": raw["patient_nbr"],
            "encounter": encounter_ids,
            "within_30d": (raw["readmitted"] == "<30").astype("int64"),
            "later": (raw["readmitted"] == ">30").astype("int64"),
        }
    ).sort_values("encounter")
    by_patient = ordered.groupby("patient", sort=False)
    outcomes = pd.DataFrame(index=ordered.index)
    outcomes["previous_stay_readmitted_30d"] = by_patient["within_30d"].shift(1, fill_value=0)
    outcomes["previous_stay_readmitted_later"] = by_patient["later"].shift(1, fill_value=0)
    # Cumulative sums include the encounter itself, so its own outcome (its label) is subtracted.
    outcomes["prior_stays_readmitted_30d"] = by_patient["within_30d"].cumsum() - ordered["within_30d"]
    outcomes["prior_stays_readmitted_later"] = by_patient["later"].cumsum() - ordered["later"]
    return outcomes.astype("int64").reindex(raw.index)


def _integer(raw: pd.DataFrame, column: str) -> pd.Series:
    import pandas as pd

    return pd.to_numeric(raw[column], errors="raise").astype("int64")


def _charlson_indexes(raw: pd.DataFrame) -> list[int]:
    # About 900 distinct codes: map each once, then sum per row.
    codes = set(raw["diag_1"]) | set(raw["diag_2"]) | set(raw["diag_3"])
    categories = {code: charlson.categories_of_code(code, charlson.ICD9) for code in codes if code != "?"}
    empty: frozenset[str] = frozenset()
    return [
        charlson.charlson_index(categories.get(a, empty) | categories.get(b, empty) | categories.get(c, empty))
        for a, b, c in zip(raw["diag_1"], raw["diag_2"], raw["diag_3"], strict=True)
    ]


def _lace_scores(frame: pd.DataFrame) -> list[int]:
    from ingestion.featurizer.scores import lace_score

    return [
        lace_score(length_of_stay_days=los, emergency_admission=bool(acute), charlson_index=cci, ed_visits_6m=ed)
        for los, acute, cci, ed in zip(
            frame["length_of_stay_days"],
            frame["emergency_admission"],
            frame["charlson_index"],
            frame["prior_ed_12m"],
            strict=True,
        )
    ]


def patient_split(frame: pd.DataFrame, *, test_fraction: float, key: bytes) -> pd.Series:
    """Return a boolean Series, True for test rows, that keeps all stays of one patient on one side.

    The side is decided by a keyed hash of ``patient_pseudonym``, so it is stable across runs and row order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    threshold = int(test_fraction * 2**32)
    sides = {
        patient: int(pseudonymise(key, "split", patient)[:8], 16) < threshold
        for patient in frame["patient_pseudonym"].unique()
    }
    return frame["patient_pseudonym"].map(sides).astype(bool)
