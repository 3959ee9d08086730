"""A node whose API cannot write api.json stops with a clear error, at once.

``write_api_file`` raising left ``serve_api`` waiting, shielded, for a server
nobody had cancelled: the node hung without a ``ready`` line (the API bound and
answering, no api.json), and a later SIGTERM gave exit 70 ("internal error").
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gossipmind.api.server import serve_api
from gossipmind.core.errors import StoreError
from gossipmind.testing.fleet import fleet


async def test_an_api_json_that_cannot_be_written_is_a_store_error(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0, api=False) as (r,):
        (r.spec.dir / "api.json").mkdir()  # what a directory in its place does
        with trio.fail_after(30), pytest.raises(StoreError, match=r"cannot write .*api\.json"):
            await serve_api(r.node)
        assert (r.spec.dir / "api.json").is_dir()  # nothing removed that was not ours
