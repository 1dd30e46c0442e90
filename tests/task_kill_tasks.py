"""The task of the database kill test: it records its number in a table, then works a little."""

import time

from django.db import connection

from headrace.tasks import task


@task
def record_id(number: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO kill_record (n) VALUES (%s)", [number])
    time.sleep(0.05)  # stands for work, so that kills find jobs in flight
    return number
