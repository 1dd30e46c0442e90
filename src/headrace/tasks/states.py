"""A job's life: one enum and one table of legal moves.

::

    READY --claim--> RUNNING --succeed--> SUCCESSFUL
      ^                 |  \\--fail-----> FAILED
      |---retry/lose----|   \\--cancel---> CANCELLED
    READY --cancel--> CANCELLED
    READY --expire--> FAILED          (its ``expires`` time passed before it started)

Every store (the in-memory one here, Redis and SQL later) applies :func:`advance` and nothing
else, so a job can never be, say, retried after it succeeded. Django's
:class:`~django.tasks.TaskResultStatus` has four statuses; ``CANCELLED`` shows there as
``FAILED`` (with a :class:`~headrace.tasks.exceptions.TaskCancelled` error), see
:attr:`JobState.status`.
"""

from __future__ import annotations

import enum
from typing import Final

from django.tasks import TaskResultStatus

from headrace.tasks.exceptions import InvalidTransition

__all__ = ["FINISHED", "MOVES", "JobState", "Move", "advance"]


class JobState(enum.Enum):
    READY = "READY"  #: waiting to run (maybe not before its due time)
    RUNNING = "RUNNING"  #: a worker is running it
    SUCCESSFUL = "SUCCESSFUL"  #: it returned
    FAILED = "FAILED"  #: it raised and will not be retried, expired, or could not start
    CANCELLED = "CANCELLED"  #: ``cancel()`` ended it; never retried

    # Members are singletons compared by identity: hash them by identity too (in C), instead
    # of Enum's hash of the name (a Python call; a job's moves look states up ~10 times).
    __hash__ = object.__hash__

    @property
    def status(self) -> TaskResultStatus:
        """The state as Django's four-valued status."""
        return _STATUS[self]

    @property
    def is_finished(self) -> bool:
        return self in FINISHED


class Move(enum.Enum):
    CLAIM = "claim"  #: a worker takes the job
    SUCCEED = "succeed"
    FAIL = "fail"
    RETRY = "retry"  #: the attempt failed and the policy allows another
    LOSE = "lose"  #: the worker running it was lost (its lease lapsed)
    CANCEL = "cancel"
    EXPIRE = "expire"

    __hash__ = object.__hash__  # see JobState


S = JobState
#: (state, move) -> next state. A pair not in the table is an illegal move.
MOVES: Final[dict[tuple[JobState, Move], JobState]] = {
    (S.READY, Move.CLAIM): S.RUNNING,
    (S.READY, Move.CANCEL): S.CANCELLED,
    (S.READY, Move.EXPIRE): S.FAILED,
    (S.RUNNING, Move.SUCCEED): S.SUCCESSFUL,
    (S.RUNNING, Move.FAIL): S.FAILED,
    (S.RUNNING, Move.RETRY): S.READY,
    (S.RUNNING, Move.LOSE): S.READY,
    (S.RUNNING, Move.CANCEL): S.CANCELLED,
}
del S

FINISHED: Final = frozenset({JobState.SUCCESSFUL, JobState.FAILED, JobState.CANCELLED})

_STATUS: Final = {
    JobState.READY: TaskResultStatus.READY,
    JobState.RUNNING: TaskResultStatus.RUNNING,
    JobState.SUCCESSFUL: TaskResultStatus.SUCCESSFUL,
    JobState.FAILED: TaskResultStatus.FAILED,
    JobState.CANCELLED: TaskResultStatus.FAILED,
}


def advance(state: JobState, move: Move) -> JobState:
    """The state after ``move``, or :class:`InvalidTransition` ("expected X, got Y")."""
    try:
        return MOVES[state, move]
    except KeyError:
        allowed = sorted(s.name for (s, m) in MOVES if m is move)
        raise InvalidTransition(
            f"cannot {move.value} a job: expected state {' or '.join(allowed)}, got {state.name}"
        ) from None
