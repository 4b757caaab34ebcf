"""A single-node Apache Kafka broker in KRaft mode (no ZooKeeper), run from its jars on Maven Central.

The jars of ``org.apache.kafka:kafka_2.13`` and a log4j2 binding are fetched once with Maven into a cache
folder shared by every checkout; the broker's storage is formatted on first start and kept under the state
folder, so a restart keeps every topic and message.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from healthflow.settings import Settings
from healthflow.stack.processes import read_pid, start_detached, stop_process, wait_until

logger = logging.getLogger(__name__)

NAME = "kafka"
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.17"

POM_TEMPLATE = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.healthflow</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{slf4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

LOG4J_CONFIG = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.raft.name = org.apache.kafka.raft
logger.raft.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
"""


def cache_dir(settings: Settings) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "healthflow" / f"kafka-{settings.kafka_version}"


def home_dir(settings: Settings) -> Path:
    return (settings.state_dir / "kafka").resolve()


def log_file(settings: Settings) -> Path:
    return home_dir(settings) / "kafka.log"


def broker_port(settings: Settings) -> int:
    host_port = settings.kafka_bootstrap_servers.split(",")[0]
    return int(host_port.rsplit(":", 1)[1])


def fetch_jars(settings: Settings) -> Path:
    """Download the broker's jars with Maven into the cache folder, once; return the folder of jars."""
    cache = cache_dir(settings)
    libs = cache / "libs"
    marker = cache / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise FileNotFoundError(
            "Maven (mvn) is needed to fetch the Kafka jars from Maven Central; install it (apt-get install maven)"
        )
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "pom.xml").write_text(
        POM_TEMPLATE.format(kafka=settings.kafka_version, slf4j=SLF4J_VERSION, log4j=LOG4J_VERSION)
    )
    logger.info("fetching Apache Kafka %s jars with Maven into %s", settings.kafka_version, libs)
    subprocess.run(
        ["mvn", "-q", "-B", "-Dstyle.color=never", "dependency:copy-dependencies", f"-DoutputDirectory={libs}"],
        cwd=cache,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    (cache / "log4j2.properties").write_text(LOG4J_CONFIG)
    marker.touch()
    return libs


def _server_properties(settings: Settings) -> str:
    port = broker_port(settings)
    controller_port = port + 1
    data = home_dir(settings) / "data"
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={data}",
            f"num.partitions={settings.kafka_partitions}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=6",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.retention.hours=-1",
            "",
        ]
    )


def _java_command(settings: Settings, libs: Path, main_class: str, *args: str) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise FileNotFoundError(
            "Java 17 or newer is needed to run the Kafka broker; "
            "install a JDK (apt-get install openjdk-17-jre-headless)"
        )
    return [
        java,
        "-Xms256m",
        "-Xmx768m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={cache_dir(settings) / 'log4j2.properties'}",
        "-cp",
        f"{libs}/*",
        main_class,
        *args,
    ]


def _format_storage(settings: Settings, libs: Path, properties: Path) -> None:
    """Format the KRaft storage once, with a fresh cluster id (16 random bytes, base64url without padding)."""
    if (home_dir(settings) / "data" / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    subprocess.run(
        _java_command(settings, libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)),
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    logger.info("formatted Kafka storage in %s", home_dir(settings) / "data")


def start(settings: Settings) -> None:
    """Fetch the jars if needed, format storage on first start and start the broker; wait until it serves."""
    if is_healthy(settings):
        return
    libs = fetch_jars(settings)
    home = home_dir(settings)
    home.mkdir(parents=True, exist_ok=True)
    properties = home / "server.properties"
    properties.write_text(_server_properties(settings))
    _format_storage(settings, libs, properties)

    if read_pid(settings.state_dir, NAME) is None:
        start_detached(
            NAME,
            _java_command(settings, libs, "kafka.Kafka", str(properties)),
            state_dir=settings.state_dir,
            log_file=log_file(settings),
        )
    wait_until(lambda: is_healthy(settings), what="Kafka broker", timeout_seconds=90, log_file=log_file(settings))


def stop(settings: Settings) -> bool:
    return stop_process(settings.state_dir, NAME, timeout_seconds=60)


def is_healthy(settings: Settings) -> bool:
    try:
        metadata = AdminClient(
            # log_level 0: a probe of a broker that is still starting must not print "connection refused" lines.
            {"bootstrap.servers": settings.kafka_bootstrap_servers, "socket.timeout.ms": 2000, "log_level": 0}
        ).list_topics(timeout=3)
    except Exception:  # noqa: BLE001 - any client error means "not reachable" for a health probe
        return False
    return bool(metadata.brokers)
