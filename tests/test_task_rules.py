"""The pure rules of tasks: the retry policy (Celery's formula) and the job-state table.
No loop, no store, no clock."""

from __future__ import annotations

import pytest
from django.tasks import TaskResultStatus

from headrace.tasks import InvalidTransition, MaxRetriesExceeded, Retry, RetryPolicy, backoff_delay
from headrace.tasks.states import FINISHED, MOVES, JobState, Move, advance


def identity(cap: float) -> float:
    return cap


# -- backoff -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "factor", "maximum", "expected"),
    [
        (0, 1, 600, 1),
        (1, 1, 600, 2),
        (5, 1, 600, 32),
        (10, 1, 600, 600),  # 1024 capped
        (3, 5, 600, 40),
        (2, 0.5, 600, 2),
        (3, 1, 5, 5),
        (10_000, 1, 60, 60),  # no overflow
    ],
)
def test_backoff_is_factor_times_two_to_the_retries_capped(
    retries: int, factor: float, maximum: float, expected: float
) -> None:
    assert backoff_delay(retries, factor=factor, maximum=maximum) == expected


def test_jitter_receives_the_cap_and_is_never_negative() -> None:
    seen: list[float] = []

    def jitter(cap: float) -> float:
        seen.append(cap)
        return -3.0

    assert backoff_delay(4, factor=1, maximum=600, jitter=jitter) == 0.0
    assert seen == [16.0]


def test_default_jitter_stays_between_zero_and_the_cap() -> None:
    policy = RetryPolicy(autoretry_for=(OSError,), retry_backoff=True)
    delays = [policy.decide(OSError(), retries=2).delay for _ in range(200)]
    assert all(0 <= d <= 4 for d in delays)
    assert len(set(delays)) > 1


# -- decisions ------------------------------------------------------------------------------------


def test_an_error_not_in_autoretry_for_fails() -> None:
    policy = RetryPolicy(autoretry_for=(OSError,))
    decision = policy.decide(ValueError("x"), retries=0)
    assert not decision.retry
    assert isinstance(decision.error, ValueError)


def test_nothing_is_retried_without_autoretry_for() -> None:
    assert not RetryPolicy().decide(OSError(), retries=0).retry


def test_autoretry_uses_default_retry_delay_without_backoff() -> None:
    decision = RetryPolicy(autoretry_for=(OSError,), default_retry_delay=42).decide(
        OSError(), retries=0
    )
    assert decision.retry
    assert decision.delay == 42


def test_autoretry_with_backoff_follows_celerys_schedule() -> None:
    policy = RetryPolicy(
        autoretry_for=(Exception,), retry_backoff=3, retry_backoff_max=20, max_retries=None
    )
    delays = [policy.decide(OSError(), retries=n, jitter=identity).delay for n in range(5)]
    assert delays == [3, 6, 12, 20, 20]


def test_retry_jitter_false_gives_exact_delays() -> None:
    policy = RetryPolicy(autoretry_for=(OSError,), retry_backoff=True, retry_jitter=False)

    def never(cap: float) -> float:
        raise AssertionError("jitter must not be called")

    assert policy.decide(OSError(), retries=2, jitter=never).delay == 4


def test_dont_autoretry_for_wins() -> None:
    policy = RetryPolicy(autoretry_for=(Exception,), dont_autoretry_for=(KeyError,))
    assert not policy.decide(KeyError("k"), retries=0).retry
    assert policy.decide(LookupError("l"), retries=0).retry


def test_max_retries_counts_retries_not_attempts() -> None:
    policy = RetryPolicy(autoretry_for=(OSError,), max_retries=2)
    assert policy.decide(OSError(), retries=1).retry
    final = policy.decide(OSError("last"), retries=2)
    assert not final.retry
    assert str(final.error) == "last"


def test_max_retries_none_retries_forever() -> None:
    policy = RetryPolicy(autoretry_for=(OSError,), max_retries=None)
    assert policy.decide(OSError(), retries=10_000).retry


def test_explicit_retry_uses_its_countdown_or_the_default_delay() -> None:
    policy = RetryPolicy(default_retry_delay=180)
    assert policy.decide(Retry(countdown=5), retries=0).delay == 5
    assert policy.decide(Retry(), retries=0).delay == 180


def test_explicit_retry_with_no_retries_left_fails_with_its_exc() -> None:
    policy = RetryPolicy(max_retries=1)
    error = RuntimeError("boom")
    decision = policy.decide(Retry(exc=error), retries=1)
    assert not decision.retry
    assert decision.error is error
    bare = policy.decide(Retry(), retries=1)
    assert isinstance(bare.error, MaxRetriesExceeded)


def test_explicit_retry_may_raise_its_own_limit() -> None:
    policy = RetryPolicy(max_retries=1)
    assert policy.decide(Retry(max_retries=5), retries=3).retry


# -- the state table ------------------------------------------------------------------------------


def test_the_happy_path_and_retries() -> None:
    state = advance(JobState.READY, Move.CLAIM)
    assert state is JobState.RUNNING
    assert advance(state, Move.RETRY) is JobState.READY
    assert advance(state, Move.LOSE) is JobState.READY
    assert advance(state, Move.SUCCEED) is JobState.SUCCESSFUL
    assert advance(state, Move.FAIL) is JobState.FAILED
    assert advance(state, Move.CANCEL) is JobState.CANCELLED
    assert advance(JobState.READY, Move.CANCEL) is JobState.CANCELLED
    assert advance(JobState.READY, Move.EXPIRE) is JobState.FAILED


@pytest.mark.parametrize("state", sorted(FINISHED, key=lambda s: s.value))
@pytest.mark.parametrize("move", list(Move))
def test_a_finished_job_never_moves(state: JobState, move: Move) -> None:
    with pytest.raises(InvalidTransition, match=f"got {state.name}"):
        advance(state, move)


def test_an_illegal_move_says_what_was_expected() -> None:
    with pytest.raises(
        InvalidTransition, match="cannot retry a job: expected state RUNNING, got READY"
    ):
        advance(JobState.READY, Move.RETRY)
    with pytest.raises(InvalidTransition, match="expected state READY, got RUNNING"):
        advance(JobState.RUNNING, Move.CLAIM)


def test_every_state_maps_to_one_of_djangos_four_statuses() -> None:
    assert JobState.CANCELLED.status == TaskResultStatus.FAILED
    assert {s.status for s in JobState} == set(TaskResultStatus)
    assert {target for target in MOVES.values()} | {JobState.READY} == set(JobState)
