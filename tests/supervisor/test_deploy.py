"""The deploy files: Procfile, compose file, env example, Dockerfile, proxy, unit."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from weall.config import load, load_env_file

ROOT = Path(__file__).resolve().parents[2]

# Every setting that the operator runbook names.
RUNBOOK_SETTINGS = (
    "WEALL_MODE",
    "WEALL_CHAIN_ID",
    "WEALL_GENESIS_PATH",
    "WEALL_DB_PATH",
    "WEALL_NODE_KEY_PATH",
    "WEALL_API_HOST",
    "WEALL_API_PORT",
    "WEALL_ALLOW_UNSIGNED_TXS",
    "WEALL_IPFS_BACKEND",
    "WEALL_IPFS_API_URL",
    "WEALL_IPFS_PIN_ON_UPLOAD",
    "WEALL_MEDIA_AUTO_PIN_REQUEST",
    "WEALL_IPFS_ENABLE_HEAL",
    "WEALL_IPFS_HEAL_INTERVAL_BLOCKS",
    "WEALL_IPFS_MAX_UPLOAD_BYTES",
    "WEALL_MAX_REQUEST_BYTES",
    "WEALL_WAL_MAX_BYTES",
    "WEALL_BACKUP_DIR",
    "WEALL_BACKUP_INTERVAL_S",
    "WEALL_BACKUP_KEEP_DAILY",
    "WEALL_BACKUP_KEEP_WEEKLY",
    "WEALL_LOG_LEVEL",
    "WEALL_LOG_FORMAT",
)
# Variables the example sets for docker compose, not for the node.
COMPOSE_ONLY = ("WEALL_UID", "WEALL_GID")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.prod.yml").read_text())


def test_procfile_runs_supervisor() -> None:
    lines = (ROOT / "Procfile").read_text().splitlines()
    assert lines == ["web: exec weall supervise"]


def test_compose_defines_two_containers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"weall_producer", "weall_api"}
    for name, service in services.items():
        assert service["container_name"] == name


def test_compose_healthcheck_checks_actors(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        assert service["healthcheck"]["test"] == ["CMD", "weall", "status", "--check"]


def test_compose_shared_settings(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        assert "./data:/app/data" in service["volumes"]
        assert service["env_file"] == ".env.prod"
        assert service["restart"] == "unless-stopped"
        assert service["stop_grace_period"] == "30s"
        assert service["build"]["dockerfile"] == "ops/Dockerfile"
        assert service["init"] is True


def test_compose_publishes_api_on_loopback_only(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["weall_api"]["ports"] == ["127.0.0.1:8000:8000"]
    assert "ports" not in services["weall_producer"]
    assert services["weall_api"]["environment"]["WEALL_API_HOST"] == "0.0.0.0"


def test_compose_control_sockets_differ(compose: dict[str, Any]) -> None:
    sockets = {
        service["environment"]["WEALL_CONTROL_SOCKET"]
        for service in compose["services"].values()
    }
    assert len(sockets) == 2


def test_env_example_names_every_setting() -> None:
    text = (ROOT / ".env.prod.example").read_text()
    for name in RUNBOOK_SETTINGS:
        assert re.search(rf"^{name}=", text, re.MULTILINE), name


def test_env_example_names_only_known_settings() -> None:
    values = load_env_file(ROOT / ".env.prod.example")
    config_source = (ROOT / "weall" / "config.py").read_text()
    for name in values:
        if name in COMPOSE_ONLY:
            continue
        assert f'"{name}"' in config_source, f"{name} is not a setting of weall.config"


def test_env_example_is_valid_genesis_config(tmp_path: Path) -> None:
    values = load_env_file(ROOT / ".env.prod.example")
    assert values["WEALL_MODE"] == "genesis"
    assert values["WEALL_ALLOW_UNSIGNED_TXS"] == "0"
    key = tmp_path / "node.key"
    key.write_text("{}")
    os.chmod(key, 0o600)
    config = load({**values, "WEALL_NODE_KEY_PATH": str(key)})
    assert config.mode == "genesis"
    assert config.api_bind == "127.0.0.1:8000"
    assert config.restart_max == 5
    assert config.restart_window_s == 30


def test_dockerfile_runs_as_non_root() -> None:
    text = (ROOT / "ops" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", text, re.MULTILINE)
    assert re.search(r"^USER weall", text, re.MULTILINE)
    assert 'VOLUME ["/app/data"]' in text
    assert 'CMD ["weall", "supervise"]' in text
    assert 'CMD ["weall", "status", "--check"]' in text


def test_nginx_proxies_to_loopback_api() -> None:
    text = (ROOT / "ops" / "nginx" / "weall.conf").read_text()
    assert "server 127.0.0.1:8000;" in text
    assert "proxy_pass http://weall_api;" in text
    for directive in (
        "ssl_certificate ",
        "client_max_body_size ",
        "limit_req_zone ",
        "limit_req zone=",
        "proxy_read_timeout ",
        "client_body_timeout ",
    ):
        assert directive in text, directive


def test_systemd_unit_stops_supervisor_only() -> None:
    text = (ROOT / "ops" / "systemd" / "weall.service").read_text()
    assert "ExecStart=/srv/weall/.venv/bin/weall supervise" in text
    assert "KillMode=mixed" in text
    assert "RestartPreventExitStatus=78" in text
    timeout = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.MULTILINE).group(1))
    assert timeout > 27
