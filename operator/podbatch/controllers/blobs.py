"""Listing a blob container through its SAS URL (azure-storage-blob, aio): the blobs of a
resource file's storageContainerUrl, and the files of a task-per-file TaskCollection."""
from __future__ import annotations

import asyncio

TIMEOUT = 90   # seconds a listing may take


class ListingFailed(Exception):
    """The container could not be listed; the message says why (HTTP status, error code)."""


async def blob_names(url: str, prefix: str | None, limit: int | None = None) -> list[str]:
    """The names of the container's blobs under `prefix`, by name (at most `limit`)."""
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob.aio import ContainerClient

    async def names() -> list[str]:
        out: list[str] = []
        async with ContainerClient.from_container_url(url, retry_total=1, connection_timeout=10, read_timeout=30) as cc:
            async for b in cc.list_blobs(name_starts_with=prefix or None):
                out.append(b.name)
                if limit is not None and len(out) >= limit:
                    break
        return out
    try:
        return await asyncio.wait_for(names(), TIMEOUT)
    except HttpResponseError as e:
        raise ListingFailed(f"listing the container failed: HTTP {e.status_code} {e.reason or ''} "
                            f"{getattr(e, 'error_code', None) or ''}".strip()) from None
    except Exception as e:   # noqa: BLE001 - any failure is reported, never raised further
        raise ListingFailed(f"listing the container failed: {type(e).__name__}: {e}"[:500]) from None
