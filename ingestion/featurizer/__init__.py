"""Featurizer: one row per inpatient stay, with features known at discharge and the 30-day readmission label."""
