# One image for every HealthFlow stage; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY healthflow healthflow
COPY ingestion ingestion
COPY training training
COPY serving serving
COPY monitoring monitoring
COPY feature_repo feature_repo
RUN uv sync --frozen --no-dev && useradd --system --create-home healthflow
USER healthflow
ENTRYPOINT ["healthflow"]
