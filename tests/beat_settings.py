"""Settings for the scheduler processes the tests start (``runbeat``, ``runworker --beat``):
the test suite's settings with a one-second schedule entry."""

from tests.settings import *  # noqa: F403

TIME_ZONE = "UTC"
HEADRACE_TASKS_SCHEDULE = {
    "second": {"task": "tests.taskapp.periodic.tick", "schedule": 1, "args": ["process"]},
}
