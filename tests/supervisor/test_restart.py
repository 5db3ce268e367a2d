"""Unit tests of backoff, restart budget, restart types, states and exit statuses."""

from __future__ import annotations

import random

import pytest

from weall.supervisor import (
    TRANSITIONS,
    ActorSpec,
    ActorState,
    ExitStatus,
    InvalidTransition,
    RestartBudget,
    RestartPolicy,
    RestartType,
    backoff_delay,
    check_transition,
)


class _FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_doubles_from_base() -> None:
    policy = RestartPolicy(backoff_base_s=0.1, backoff_cap_s=5.0, backoff_jitter=0.2)
    no_jitter = _FixedRandom(0.0)
    delays = [backoff_delay(n, policy, no_jitter) for n in range(1, 7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])


def test_backoff_caps_at_max() -> None:
    policy = RestartPolicy(backoff_base_s=0.1, backoff_cap_s=5.0, backoff_jitter=0.2)
    no_jitter = _FixedRandom(0.0)
    assert backoff_delay(7, policy, no_jitter) == pytest.approx(5.0)
    assert backoff_delay(50, policy, no_jitter) == pytest.approx(5.0)
    assert backoff_delay(10_000, policy, no_jitter) == pytest.approx(5.0)


def test_backoff_jitter_stays_within_bounds() -> None:
    policy = RestartPolicy(backoff_base_s=0.1, backoff_cap_s=5.0, backoff_jitter=0.2)
    rng = random.Random(7)
    for failures in range(1, 30):
        nominal = min(5.0, 0.1 * 2 ** (failures - 1))
        for _ in range(50):
            delay = backoff_delay(failures, policy, rng)
            assert nominal * 0.8 - 1e-12 <= delay <= nominal + 1e-12


def test_backoff_jitter_varies_delays() -> None:
    policy = RestartPolicy()
    rng = random.Random(1)
    delays = {backoff_delay(3, policy, rng) for _ in range(20)}
    assert len(delays) > 1


def test_backoff_rejects_zero_failures() -> None:
    with pytest.raises(ValueError, match="failures must be >= 1"):
        backoff_delay(0, RestartPolicy())


def test_budget_allows_max_restarts_in_window() -> None:
    budget = RestartBudget(RestartPolicy(max_restarts=3, window_s=10.0))
    assert [budget.try_record(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert budget.try_record(3.0) is False
    assert budget.count(3.0) == 3


def test_budget_forgets_restarts_outside_window() -> None:
    budget = RestartBudget(RestartPolicy(max_restarts=2, window_s=10.0))
    assert budget.try_record(0.0)
    assert budget.try_record(5.0)
    assert not budget.try_record(9.9)
    assert budget.try_record(10.0)
    assert budget.count(15.0) == 1


def test_budget_zero_allows_no_restart() -> None:
    budget = RestartBudget(RestartPolicy(max_restarts=0))
    assert budget.try_record(0.0) is False


@pytest.mark.parametrize(
    ("restart", "returncode", "expected"),
    [
        (RestartType.PERMANENT, 0, True),
        (RestartType.PERMANENT, 1, True),
        (RestartType.PERMANENT, -9, True),
        (RestartType.TRANSIENT, 0, False),
        (RestartType.TRANSIENT, 1, True),
        (RestartType.TRANSIENT, -9, True),
        (RestartType.TRANSIENT, None, True),
        (RestartType.TEMPORARY, 0, False),
        (RestartType.TEMPORARY, 1, False),
    ],
    ids=lambda value: str(value),
)
def test_restart_type_decides_restart(
    restart: RestartType, returncode: int | None, expected: bool
) -> None:
    assert restart.restarts_after(returncode) is expected


def test_policy_rejects_invalid_values() -> None:
    with pytest.raises(ValueError, match="max_restarts"):
        RestartPolicy(max_restarts=-1)
    with pytest.raises(ValueError, match="backoff_cap_s"):
        RestartPolicy(backoff_base_s=2.0, backoff_cap_s=1.0)
    with pytest.raises(ValueError, match="backoff_jitter"):
        RestartPolicy(backoff_jitter=1.0)


def test_spec_rejects_invalid_values() -> None:
    with pytest.raises(ValueError, match="actor name"):
        ActorSpec(name="bad name", argv=("true",))
    with pytest.raises(ValueError, match="argv"):
        ActorSpec(name="api", argv=())
    with pytest.raises(ValueError, match="shutdown_grace_s"):
        ActorSpec(name="api", argv=("true",), shutdown_grace_s=-1)


def test_spec_stores_argv_as_tuple() -> None:
    spec = ActorSpec(name="api", argv=["python", "-V"])  # type: ignore[arg-type]
    assert spec.argv == ("python", "-V")


def test_transitions_cover_every_state() -> None:
    assert set(TRANSITIONS) == set(ActorState)
    assert TRANSITIONS[ActorState.FATAL] == frozenset()


def test_check_transition_rejects_invalid_change() -> None:
    check_transition("api", ActorState.STARTING, ActorState.RUNNING)
    with pytest.raises(InvalidTransition, match="STOPPED -> RUNNING"):
        check_transition("api", ActorState.STOPPED, ActorState.RUNNING)


def test_exit_status_from_signal() -> None:
    status = ExitStatus.from_returncode(-9, "heartbeat timeout")
    assert status.code is None
    assert status.signal == "SIGKILL"
    assert status.returncode == -9
    assert status.describe() == "killed by SIGKILL (heartbeat timeout)"


def test_exit_status_from_code() -> None:
    status = ExitStatus.from_returncode(78, None)
    assert status.code == 78
    assert status.signal is None
    assert status.describe() == "exit code 78"
    assert set(status.as_json()) == {"code", "signal", "reason", "at_ms"}
