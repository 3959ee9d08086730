"""The API at its edges: ids that are exactly 64 hex digits, and JSON errors for
what Starlette answers itself (no such route, wrong method)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_api import acall

from conftest import fleet
from gossipmind.api.wire import hex_id
from gossipmind.core.errors import SchemaError

ID = "ab" * 32


@pytest.mark.parametrize(
    "bad",
    [
        ID[:62] + "  ",  # bytes.fromhex skips whitespace: these were 31-byte ids
        " " + ID[:62] + " ",
        ID[:32] + " " + ID[32:62] + " ",
        "\t" + ID[:62] + "\n",
        "ab " * 21 + " ",
        " " + ID[:63],
        "0x" + ID[:62],
        "+" + ID[1:],
        ID[:63] + "g",
        "\uff41" * 64,  # a fullwidth a
        "٣" * 64,  # an Arabic-Indic digit: str.isdigit says yes, hex says no
        ID[:63],
        ID + "0",
        None,
        64,
    ],
)
def test_a_hex_id_is_64_hex_digits_and_nothing_else(bad: object) -> None:
    with pytest.raises(SchemaError, match="64-character hex id"):
        hex_id(bad, "fix")


def test_a_hex_id_may_be_upper_case_like_on_the_cli() -> None:
    assert hex_id(ID.upper(), "fix") == hex_id(ID, "fix") == bytes.fromhex(ID)


async def test_whitespace_in_an_id_is_refused_over_http(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        spaced = ID[:10] + "%20" + ID[10:62] + "%20"  # 64 characters once decoded
        resp = await acall(r, "GET", f"/v1/fix?pattern={spaced}")
        assert resp.status_code == 422 and resp.json()["field"] == "pattern", resp.text
        resp = await acall(r, "GET", f"/v1/fix?pattern={ID.upper()}")
        assert resp.status_code == 404 and ID[:12] in resp.json()["error"], resp.text


async def test_unknown_routes_and_wrong_methods_answer_json(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        for token in ("ok", None):
            resp = await acall(r, "GET", "/v1/nosuch", token=token)
            assert resp.status_code == 404, resp.text
            assert resp.headers["content-type"] == "application/json"
            assert "Not Found" in resp.json()["error"] and "/v1/nosuch" in resp.json()["error"]
            resp = await acall(r, "DELETE", "/v1/status", token=token)
            assert resp.status_code == 405, resp.text
            assert resp.headers["content-type"] == "application/json"
            assert "Method Not Allowed" in resp.json()["error"]
            assert "GET" in resp.headers["allow"]
