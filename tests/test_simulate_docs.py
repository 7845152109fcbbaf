"""The worked example in docs/simulate.md prints exactly what the docs say."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

from billhouse.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_documented_example_prints_what_the_docs_show() -> None:
    doc = (ROOT / "docs" / "simulate.md").read_text()
    block = re.search(r"<!-- simulate-output:start -->\n```text\n(.*?)```\n<!-- simulate-output:end -->", doc, re.S)
    assert block, "docs/simulate.md lost its output block"
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["simulate", str(ROOT / "docs" / "examples" / "graduated-preview.yml")]) == 0
    assert out.getvalue() == block.group(1)
    assert "€10.50" in block.group(1)


def test_simulate_reports_a_bad_scenario_in_one_line(tmp_path, capsys) -> None:
    scenario = tmp_path / "scenario.yml"
    scenario.write_text((ROOT / "docs" / "examples" / "graduated-preview.yml").read_text().replace(
        "from_value: 101, to_value: null", "from_value: 150, to_value: null"))
    assert main(["simulate", str(scenario)]) == 2
    err = capsys.readouterr().err
    assert "graduated_ranges[1]: field 'from_value': must continue the previous range: 100 or 101, got 150" in err
