"""The `dvc plots` page: it renders with no internet (vega inlined in the page template DVC is
pointed at), and every chart says what it shows, with units."""
import re
import subprocess
import sys
from pathlib import Path

import yaml
from configobj import ConfigObj
from dvc_render.vega import VegaRenderer

REPO = Path(__file__).resolve().parents[1]
PLOTS = REPO / ".dvc" / "plots"
CDN_SCRIPT = re.compile(r"<script[^>]*\ssrc\s*=\s*[\"']?https?:", re.IGNORECASE)


def _charts() -> dict[str, dict]:
    """dvc.yaml's plots drawn from data (the others are images)."""
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    return {name: spec for plot in plots if isinstance(plot, dict) for name, spec in plot.items()}


def test_dvc_is_pointed_at_the_offline_page():
    template = ConfigObj(str(REPO / ".dvc" / "config"))["plots"]["html_template"]
    assert (REPO / ".dvc" / template).resolve() == PLOTS / "offline.html"


def test_the_page_template_inlines_the_scripts_dvc_render_loads():
    page = (PLOTS / "offline.html").read_text()
    assert not CDN_SCRIPT.search(page)
    assert page.count("{plot_divs}") == 1
    assert "{scripts}" not in page  # DVC would put the CDN's script tags there
    wanted = re.findall(r"npm/(vega[a-z-]*)@([\d.]+)", VegaRenderer.SCRIPTS)
    assert {name for name, _ in wanted} == {"vega", "vega-lite", "vega-embed"}
    for name, version in wanted:
        assert f"<script>/* {name} {version} */" in page, f"{name} {version} is not inlined"
        assert (PLOTS / "vendor" / f"LICENSE-{name}").read_text().startswith("Copyright")


def test_every_chart_has_its_axes_titled_and_a_template_of_ours():
    charts = _charts()
    assert len(charts) >= 6
    for name, spec in charts.items():
        for label in ("x_label", "y_label"):
            assert spec.get(label) and spec[label] not in ("x", "y"), f"{name}: {label}"
        assert (PLOTS / f"{spec['template']}.json").is_file(), name


def test_one_quantity_per_chart_and_log_axes_for_loss_and_kl():
    charts = _charts()
    columns = {name: [c for y in spec["y"].values() for c in ([y] if isinstance(y, str) else y)]
               for name, spec in charts.items()}
    assert columns["loss"] == ["loss"] and columns["kl"] == ["kl"]
    assert columns["beta"] == ["beta"] and columns["tfr"] == ["tfr"]
    assert charts["loss"]["template"] == charts["kl"]["template"] == "lines_log"
    for name in ("lines", "lines_log"):
        text = (PLOTS / f"{name}.json").read_text()
        assert ('"type": "log"' in text) == (name == "lines_log")


def test_every_report_output_is_declared():
    """The report's figures and the folder of GIFs all appear on the plots page."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    images = {plot for plot in dvc["plots"] if isinstance(plot, str)}
    outs = {next(iter(out)) if isinstance(out, dict) else out
            for out in dvc["stages"]["report"]["outs"]}
    assert outs - {"reports/summary.md"} <= images


def test_dvc_plots_show_writes_a_page_with_no_cdn_script(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "index.html").read_text()
    assert not CDN_SCRIPT.search(page)
    assert "vegaEmbed(" in page and "<script>/* vega 5.20.2 */" in page
