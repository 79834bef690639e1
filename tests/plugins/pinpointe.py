"""Fixtures for the Pinpointe simulator (``inbox_poller.sandbox.simulator.server``).

``pinpointe_sim`` is a running simulator in the test's own directory; the mails it
sends collect in ``pinpointe_sim.delivered`` unless the test sets
``pinpointe_sim.deliver`` (for example to APPEND them to a Dovecot folder).
``pinpointe_sim_config(sim)`` builds a matching ``PinpointeConfig``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.config import PinpointeConfig
from inbox_poller.pinpointe.client import PinpointeApi
from inbox_poller.sandbox.localca import make_local_ca
from inbox_poller.sandbox.simulator.server import PinpointeSimulator

SIM_NOTIFY_EMAIL = "exports@inbox.example"
SIM_TOKEN_ENV = "INBOX_POLLER_TEST_PINPOINTE_TOKEN"


def pinpointe_sim_config(sim: PinpointeSimulator, **overrides: Any) -> PinpointeConfig:
    """Return a ``[pinpointe]`` section pointing at *sim* (token read from ``SIM_TOKEN_ENV``)."""
    values: dict[str, Any] = {
        "api_url": sim.api_url,
        "username": sim.username,
        "usertoken_env": SIM_TOKEN_ENV,
        "notify_email": SIM_NOTIFY_EMAIL,
        "ca_file": str(sim.ca_file),
        "timeout_s": 10.0,
    }
    values.update(overrides)
    return PinpointeConfig.parse(values)


@pytest.fixture(scope="session")
def pinpointe_sim_ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One local CA for every simulator of the session (openssl runs once)."""
    directory = tmp_path_factory.mktemp("pinpointe-sim-ca")
    make_local_ca(directory)
    return directory


@pytest.fixture
def pinpointe_sim(tmp_path: Path, pinpointe_sim_ca_dir: Path) -> Iterator[PinpointeSimulator]:
    """A running Pinpointe simulator, stopped at teardown."""
    with PinpointeSimulator(tmp_path / "pinpointe-sim", ca_dir=pinpointe_sim_ca_dir) as sim:
        yield sim


@pytest.fixture
def pinpointe_sim_api(pinpointe_sim: PinpointeSimulator) -> Iterator[PinpointeApi]:
    """A ``PinpointeApi`` client talking to ``pinpointe_sim`` over verified HTTPS."""
    api = PinpointeApi(
        pinpointe_sim_config(pinpointe_sim), pinpointe_sim.token, ca_file=pinpointe_sim.ca_file
    )
    yield api
    api.close()
