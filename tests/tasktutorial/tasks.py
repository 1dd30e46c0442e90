import asyncio

from headrace.tasks import task


class UpstreamBusy(Exception):
    """The service we import into asked us to come back later."""


async def send_row(row: str) -> None:
    """Send one row to that service (here it only pretends, for a tenth of a second)."""
    await asyncio.sleep(0.1)


@task(
    takes_context=True,
    autoretry_for=(UpstreamBusy,),  # retry on this error, and only on it
    retry_backoff=2,  # wait up to 2 s, then 4, 8... (a random time up to that)
    max_retries=5,
)
async def import_rows(context, rows: list[str]) -> dict:
    for done, row in enumerate(rows, 1):
        await send_row(row)
        context.progress(done, len(rows), row=row)
    return {"imported": len(rows), "attempts": context.attempt}
