"""The local stack: PostgreSQL, an Apache Kafka broker (KRaft) and an MLflow tracking server run as processes.

``docker-compose.yml`` describes the same services for production; this package runs them on a machine
without a container engine, on 127.0.0.1, with their data under ``settings.state_dir``.
"""
