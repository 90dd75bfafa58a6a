"""`gvlab report`: the results table from report.json files, the README's generated table, the HTML page."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gvlab import cli
from gvlab.report import index

ROOT = Path(__file__).resolve().parents[1]


def _report(name: str, profile: str, passed: bool, figures=()):
    claim = {"statement": f"{name} claim", "metric": "m", "op": ">", "threshold": 0.5, "reduce": "mean",
             "paper": None, "source": "", "n": 3, "mean": 0.7 if passed else 0.2, "std": 0.05, "min": 0.1,
             "max": 0.9, "values": [0.1, 0.2, 0.3], "measured": 0.7 if passed else 0.2, "passed": passed, "note": ""}
    return {"experiment": name, "profile": profile, "passed": passed, "claims": [claim], "results": {"m": 0.7},
            "figures": list(figures), "environment": {"git": "abc1234"}, "written": "2026-12-06T20:00:00+00:00"}


def _write(root: Path, data: dict) -> Path:
    folder = root / data["experiment"] / data["profile"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(data))
    return folder


def test_markdown_table_from_reports(tmp_path, capsys):
    _write(tmp_path, _report("b/two", "quick", False))
    _write(tmp_path, _report("a/one", "full", True))
    _write(tmp_path, _report("a/one", "quick", True))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "report.json").write_text("{not json")
    assert cli.main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| `")]
    assert [line.split("|")[1].strip() for line in lines] == ["`a/one`", "`a/one`", "`b/two`"]  # quick before full
    assert "| quick |" in lines[0] and "| full |" in lines[1] and "**FAIL**" in lines[2]
    assert "0.7 ± 0.05 (n=3)" in lines[0] and "2026-12-06" in lines[0] and "abc1234" in lines[0]
    assert out.startswith("2 experiments, 3 reports, 2/3 claim checks hold.")


def test_readme_table_agrees_with_the_committed_reports():
    reports = index.collect(ROOT / "results")
    assert reports, "results/ holds the committed report.json of every experiment"
    names = {r["experiment"] for r in reports}
    from gvlab import registry

    assert names == set(registry.names()), f"experiments without committed reports: {set(registry.names()) - names}"
    readme = (ROOT / "README.md").read_text()
    assert index.readme_section(reports) in readme, (
        "README's results table is out of date: run `python -m gvlab.report.index` and commit README.md")


def test_html_page_renders_in_a_headless_browser(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = _write(tmp_path, _report("a/one", "quick", True, figures=["figures/curve.png"]))
    (folder / "figures").mkdir()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [2, 1, 3])
    fig.savefig(folder / "figures" / "curve.png")
    plt.close(fig)
    _write(tmp_path, _report("b/two", "quick", False, figures=["figures/gone.png"]))
    assert cli.main(["report", str(tmp_path), "--format", "html"]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "a/one/quick/figures/curve.png" in page and "not in this folder" in page and "FAIL" in page
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium here (`apt-get install chromium`; .ci/run installs it where it can)")
    shot = tmp_path / "index.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,900", (tmp_path / "index.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000  # a rendered page, not an empty canvas


def test_retired_claims_are_shown_but_do_not_judge_and_before_after_lines_up(tmp_path):
    """A retired claim keeps its measured value and reason in every table but leaves the verdict and the counts;
    `--compare` puts two results folders side by side, claim by claim (negative control: a live failing claim
    still counts as failed)."""
    before, after = tmp_path / "before", tmp_path / "after"
    _write(before, _report("a/one", "quick", False))
    retired = _report("a/one", "quick", False)
    retired["claims"][0]["retired"] = "ill-posed here: a measured ceiling"
    fresh = dict(retired["claims"][0], metric="m2", statement="new claim", retired="", passed=True)
    retired["claims"].append(fresh)
    _write(after, retired)
    reports = index.collect(after)
    assert "1/1 (+1 retired) claim checks hold" in index.markdown(reports)
    assert "retired: ill-posed here" in index.markdown(reports)
    table = index.comparison(index.collect(before), reports)
    assert "before 0/1, after 1/1 (+1 retired)" in table
    row = next(line for line in table.splitlines() if "`m`" in line)
    assert "FAIL" in row and "RETIRED" in row
    assert "| - |" in next(line for line in table.splitlines() if "`m2`" in line)  # new: nothing before
    live = _report("a/one", "quick", False)
    assert "0/1 claim checks hold" in index.markdown([dict(live, _path=tmp_path)])
