#!/bin/sh
# Start the tracking server. MLFLOW_BACKEND_STORE_URI (with the database password) comes from the
# environment, so it never appears on the command line or in `ps`.
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql+psycopg://user:password@postgres:5432/mlflow}"
exec mlflow server \
    --host 0.0.0.0 \
    --port 5000 \
    --artifacts-destination /mlartifacts \
    --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost,localhost:5000}" \
    --workers "${MLFLOW_WORKERS:-2}"
