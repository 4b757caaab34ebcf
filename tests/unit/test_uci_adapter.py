"""UCI Diabetes 130-US adapter: columns, label, ordering, pseudonyms, decoding and the patient split."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from healthflow.errors import InvalidInputError
from ingestion.uci.adapter import DATA_MEMBER, MAPPING_MEMBER, load_uci, parse_id_mappings, patient_split

KEY = b"test-key"
HEADER = (
    "encounter_id,patient_nbr,race,gender,age,weight,admission_type_id,discharge_disposition_id,"
    "admission_source_id,time_in_hospital,payer_code,medical_specialty,num_lab_procedures,num_procedures,"
    "num_medications,number_outpatient,number_emergency,number_inpatient,diag_1,diag_2,diag_3,number_diagnoses,"
    "max_glu_serum,A1Cresult,insulin,change,diabetesMed,readmitted"
)
ROWS = [
    # Patient 7: encounters 300 then 100 in file order; encounter_id order is 100, 300.
    "300,7,Caucasian,Female,[70-80),?,1,1,7,5,?,?,40,1,10,0,2,1,428,250.4,?,3,None,>8,Up,Ch,Yes,<30",
    "100,7,Caucasian,Female,[70-80),?,3,6,1,2,?,?,30,0,5,1,0,0,250.83,401,?,2,None,None,No,No,Yes,NO",
    "200,9,?,Unknown/Invalid,[90-100),?,6,25,17,14,?,?,10,0,1,0,0,0,V57,42,196,3,Norm,None,Steady,No,No,>30",
]
MAPPING = """admission_type_id,description
1,Emergency
3,Elective
6,NULL
,
discharge_disposition_id,description
1,Discharged to home
6,Discharged/transferred to home with home health service
25,Not Mapped
,
admission_source_id,description
1, Physician Referral
7, Emergency Room
17,NULL
"""


def make_archive(tmp_path: Path, rows: list[str] = ROWS, header: str = HEADER) -> Path:
    path = tmp_path / "dataset_diabetes.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(DATA_MEMBER, "\n".join([header, *rows]) + "\n")
        archive.writestr(MAPPING_MEMBER, MAPPING)
    return path


def test_label_is_readmitted_under_30(tmp_path):
    frame = load_uci(make_archive(tmp_path), KEY)
    assert frame["label"].tolist() == [0, 0, 1]


def test_synthetic_time_follows_encounter_id(tmp_path):
    frame = load_uci(make_archive(tmp_path), KEY)
    assert frame["encounter_rank"].tolist() == [1, 2, 3]
    assert frame["event_timestamp"].is_monotonic_increasing
    patient = frame[frame["encounter_order"] > 0].groupby("patient_pseudonym")["encounter_order"].apply(list)
    assert sorted(patient.tolist()) == [[1], [1, 2]]
    assert (frame["label_available_at"] - frame["event_timestamp"]).dt.days.eq(30).all()


def test_ids_are_pseudonymised(tmp_path):
    frame = load_uci(make_archive(tmp_path), KEY)
    assert "encounter_id" not in frame.columns
    assert "patient_nbr" not in frame.columns
    assert frame["patient_pseudonym"].nunique() == 2
    assert not frame["stay_id"].isin(["100", "200", "300"]).any()
    assert (
        load_uci(make_archive(tmp_path), b"other-key")["patient_pseudonym"].iloc[0]
        != frame["patient_pseudonym"].iloc[0]
    )


def test_demographics_and_decoding(tmp_path):
    frame = load_uci(make_archive(tmp_path), KEY).set_index("encounter_rank")
    assert frame.loc[2, "race"] == "unknown"
    assert frame.loc[2, "sex"] == "unknown"
    assert frame.loc[2, "age_band"] == "90+"
    assert frame.loc[1, "age_band"] == "70-79"
    assert frame.loc[1, "admission_type"] == "Elective"
    assert frame.loc[3, "admission_source"] == "Emergency Room"
    assert frame.loc[2, "admission_type"] == "unknown"
    assert frame.loc[2, "discharge_disposition"] == "unknown"


def test_charlson_from_icd9(tmp_path):
    frame = load_uci(make_archive(tmp_path), KEY).set_index("encounter_rank")
    # 250.83 diabetes (1); 401 hypertension is not a Charlson category.
    assert frame.loc[1, "charlson_index"] == 1
    # HIV (42 is 042) 6 and metastatic tumour (196) 6.
    assert frame.loc[2, "charlson_index"] == 12
    # Heart failure 1 and diabetes with complication 2.
    assert frame.loc[3, "charlson_index"] == 3


def test_missing_column_rejected(tmp_path):
    header = HEADER.replace(",readmitted", "")
    rows = [row.rsplit(",", 1)[0] for row in ROWS]
    with pytest.raises(InvalidInputError, match="readmitted"):
        load_uci(make_archive(tmp_path, rows, header), KEY)


def test_missing_archive_rejected(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        load_uci(tmp_path / "absent.zip", KEY)


def test_mapping_skips_no_information():
    tables = parse_id_mappings(MAPPING)
    assert tables["admission_source_id"]["1"] == "Physician Referral"
    assert "17" not in tables["admission_source_id"]


def test_split_keeps_patient_on_one_side(tmp_path):
    frame = load_uci(make_archive(tmp_path), KEY)
    is_test = patient_split(frame, test_fraction=0.5, key=KEY)
    for _, sides in is_test.groupby(frame["patient_pseudonym"]):
        assert sides.nunique() == 1


@pytest.mark.slow
def test_full_archive_counts(shared_data):
    frame = load_uci(shared_data / "uci-diabetes-130" / "dataset_diabetes.zip", KEY)
    assert len(frame) == 101_766
    assert frame["patient_pseudonym"].nunique() == 71_518
    assert round(frame["label"].mean(), 3) == 0.112


def test_earlier_outcomes_exclude_own_stay(tmp_path):
    # Patient 5 appears in file order 30, 10, 20. In encounter_id order: 10 (">30"), 20 ("<30"), 30 ("NO").
    rows = [
        "30,5,Caucasian,Male,[60-70),?,1,1,7,3,?,Cardiology,40,1,10,0,0,2,428.1,250,?,3,None,None,No,No,Yes,NO",
        "10,5,Caucasian,Male,[60-70),?,1,1,7,3,?,?,40,1,10,0,0,0,V57,250,?,3,None,None,No,No,Yes,>30",
        "20,5,Caucasian,Male,[60-70),?,1,1,7,3,?,?,40,1,10,0,0,1,428,?,?,3,None,None,No,No,Yes,<30",
    ]
    frame = load_uci(make_archive(tmp_path, rows), KEY).set_index("encounter_order")
    columns = [
        "previous_stay_readmitted_30d",
        "previous_stay_readmitted_later",
        "prior_stays_readmitted_30d",
        "prior_stays_readmitted_later",
    ]
    assert frame.loc[1, columns].tolist() == [0, 0, 0, 0]
    # Stay 2 is itself readmitted within 30 days (label 1), and none of its own outcome shows in its features.
    assert frame.loc[2, "label"] == 1
    assert frame.loc[2, columns].tolist() == [0, 1, 0, 1]
    assert frame.loc[3, columns].tolist() == [1, 0, 1, 1]


def test_diagnosis_categories_and_specialty(tmp_path):
    rows = [
        "30,5,Caucasian,Male,[60-70),?,1,1,7,3,?,Cardiology,40,1,10,0,0,2,428.1,250.83,?,3,None,None,No,No,Yes,NO",
        "10,6,Caucasian,Male,[60-70),?,1,1,7,3,?,?,40,1,10,0,0,0,V57,E888,42,3,None,None,No,No,Yes,>30",
    ]
    frame = load_uci(make_archive(tmp_path, rows), KEY).set_index("encounter_rank")
    assert frame.loc[2, ["diagnosis_1_category", "diagnosis_2_category", "diagnosis_3_category"]].tolist() == [
        "428",
        "250",
        "unknown",
    ]
    # The source drops leading zeros: "42" is category 042.
    assert frame.loc[1, ["diagnosis_1_category", "diagnosis_2_category", "diagnosis_3_category"]].tolist() == [
        "V57",
        "E888",
        "042",
    ]
    assert frame.loc[2, "medical_specialty"] == "Cardiology"
    assert frame.loc[1, "medical_specialty"] == "unknown"
