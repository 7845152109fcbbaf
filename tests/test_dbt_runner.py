"""How a close's settings reach dbt: environment variables (partial parsing), not --vars."""

from __future__ import annotations

import os

import pytest

from billhouse.dbt_runner import close_settings_environment, split_variables


def test_close_settings_become_environment_variables_and_the_rest_stays_vars() -> None:
    environment, remaining = split_variables(
        {"as_of": "2026-12-01T00:00:00Z", "close_timezone": "Asia/Tokyo", "ledger_schema": "other"}
    )
    assert environment == {
        "BILLHOUSE_AS_OF": "2026-12-01T00:00:00Z",
        "BILLHOUSE_CLOSE_FROM": "",  # not given: cleared, so the dbt var's default applies
        "BILLHOUSE_CLOSE_TIMEZONE": "Asia/Tokyo",
        "BILLHOUSE_FINANCE_AS_OF": "",
    }
    assert remaining == {"ledger_schema": "other"}


def test_the_environment_is_restored_after_a_dagster_style_dbt_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLHOUSE_CLOSE_FROM", "from-the-shell")
    monkeypatch.delenv("BILLHOUSE_AS_OF", raising=False)
    with close_settings_environment({"as_of": "2026-12-01T00:00:00Z"}) as remaining:
        assert remaining == {}
        assert os.environ["BILLHOUSE_AS_OF"] == "2026-12-01T00:00:00Z"
        assert "BILLHOUSE_CLOSE_FROM" not in os.environ  # a stale window never leaks into dbt
    assert "BILLHOUSE_AS_OF" not in os.environ
    assert os.environ["BILLHOUSE_CLOSE_FROM"] == "from-the-shell"
