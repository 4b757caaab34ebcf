"""ProxyFHIR: the FHIR R4 ingestion stage (sources, R4 validation, raw zone, ``fhir.raw`` events)."""
