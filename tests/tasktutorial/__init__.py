"""The code of docs/tutorial/tasks.md, file for file (tests/test_tasks_tutorial.py checks it)."""
