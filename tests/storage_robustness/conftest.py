"""Fixtures shared by the storage robustness tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from weall import config as config_module
from weall.bootstrap import create_database, dev_genesis
from weall.protocol import keys


@pytest.fixture
def small_db(tmp_path: Path) -> Path:
    """A dev database with only its genesis block, made in-process."""
    data = tmp_path / "data"
    node, founder = keys.generate("@node"), keys.generate("@founder")
    document = dev_genesis(node, founder, chain_id="weall-dev")
    config = config_module.load({"WEALL_DB_PATH": str(data / "weall.db")})
    create_database(config, document, node)
    return config.db_path
