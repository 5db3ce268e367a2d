"""The two services of docker-compose.prod.yml, run as two real supervisors.

The commands and per-service settings come from the Compose file itself, so
the file and this test cannot drift apart. Docker is not needed: the two
supervisors share one data directory here as the two containers share
./data. Container paths under /app/data are mapped into the test's
directory, and the api listens on 127.0.0.1 instead of the container's
0.0.0.0. The settings of .env.prod (genesis mode) are not used, so the node
runs on the dev defaults.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from weall.config import ACTOR_NAMES

from .node import Node, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONTAINER_DATA = "/app/data"


def compose_services() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((ROOT / "docker-compose.prod.yml").read_text())
    services: dict[str, dict[str, Any]] = document["services"]
    return services


def service_actors(service: dict[str, Any]) -> list[str]:
    """Return the actors that a service's ``weall supervise --actors`` runs."""
    command = service["command"]
    assert command[:3] == ["weall", "supervise", "--actors"], command
    assert len(command) == 4, command
    actors: list[str] = command[3].split(",")
    return actors


def local_env(service: dict[str, Any], data_dir: Path, run_dir: Path) -> dict[str, str]:
    """Return a service's environment with container paths mapped to the test's."""
    env = {}
    for name, value in service.get("environment", {}).items():
        text = str(value)
        if name == "WEALL_CONTROL_SOCKET":
            # The run directory lives in /tmp, so socket paths stay short.
            env[name] = str(run_dir / Path(text).name)
        elif name == "WEALL_API_HOST":
            env[name] = "127.0.0.1"
        elif name == "WEALL_API_PORT":
            continue
        else:
            env[name] = text.replace(CONTAINER_DATA, str(data_dir))
    return env


def test_compose_services_split_actors() -> None:
    services = compose_services()
    actors = [service_actors(service) for service in services.values()]
    every = [name for subset in actors for name in subset]
    assert sorted(every) == sorted(ACTOR_NAMES)
    assert len(every) == len(set(every))
    assert service_actors(services["weall_api"]) == ["api"]


def test_compose_services_run_together(tmp_path: Path) -> None:
    services = compose_services()
    run_dir = Path(tempfile.mkdtemp(prefix="weall-run-", dir="/tmp"))
    port = free_port()
    nodes = {
        name: Node(
            tmp_path,
            command=service["command"],
            env=local_env(service, tmp_path / "data", run_dir),
            run_dir=run_dir,
            port=port,
            log_name=f"{name}.log",
        )
        for name, service in services.items()
    }
    # Both start at the same moment in an empty directory, as `docker compose
    # up` may start them.
    for name, node in nodes.items():
        node.start(stderr_path=tmp_path / f"{name}.stderr")
    try:
        api = nodes["weall_api"]
        api.wait_ready(90)
        _check_node(tmp_path, nodes)
        codes = {}
        for node in nodes.values():
            assert node.process is not None
            node.process.send_signal(signal.SIGTERM)
        for name, node in nodes.items():
            codes[name] = node.stop()
        assert codes == {name: 0 for name in nodes}
        for name in nodes:
            assert (tmp_path / f"{name}.stderr").read_text() == ""
    finally:
        for node in nodes.values():
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.stop()


def _check_node(tmp_path: Path, nodes: dict[str, Node]) -> None:
    api = nodes["weall_api"]
    services = compose_services()

    # Each supervisor runs its own actors and serves its own control socket.
    supervisor_pids = set()
    for name, node in nodes.items():
        result = node.cli("status", "--check", "--json", check=True)
        reply = json.loads(result.stdout)
        assert [actor["name"] for actor in reply["actors"]] == service_actors(
            services[name]
        )
        assert node.process is not None
        assert reply["pid"] == node.process.pid
        supervisor_pids.add(reply["pid"])
    assert len(supervisor_pids) == 2

    # One set of keys and one genesis, written by whichever started first.
    logs = "".join(node.log() for node in nodes.values())
    assert logs.count("wrote dev genesis") == 1, logs[-3000:]
    assert logs.count("created database") == 1, logs[-3000:]

    # A signed transaction through the api is committed by the producer of
    # the other supervisor.
    posted = api.tx("post", "through two supervisors")
    assert posted.returncode == 0, posted.stderr
    receipt = json.loads(posted.stdout.splitlines()[1])
    assert receipt["status"] == "committed"
    post_id = posted.stdout.split()[0]
    content = api.get(f"/v1/content/{post_id}").json()
    assert content["body"] == "through two supervisors"
    assert api.get("/v1/chain/head").json()["height"] >= 1
    status = api.actor_status()
    assert sorted(status) == sorted(ACTOR_NAMES)
    for name, node in nodes.items():
        assert node.process is not None
        for actor in service_actors(services[name]):
            assert status[actor]["supervisor_pid"] == node.process.pid
    # Waiting a moment shows that neither supervisor keeps restarting actors.
    time.sleep(1.0)
    for node in nodes.values():
        assert "restarting actor=" not in node.log(), node.log()[-3000:]
