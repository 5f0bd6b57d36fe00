"""The `dvc plots` page: it renders with no internet (vega inlined in the page template DVC is
pointed at), and every chart says what it shows, with units."""
import json
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


def _template(name: str) -> dict:
    return json.loads((PLOTS / f"{name}.json").read_text())


def test_one_quantity_per_chart_and_log_axes_for_loss_and_kl():
    charts = _charts()
    columns = {name: [c for y in spec["y"].values() for c in ([y] if isinstance(y, str) else y)]
               for name, spec in charts.items()}
    assert columns["loss"] == ["loss"] and columns["kl"] == ["kl", "collapsed_below"]
    assert columns["beta"] == ["beta"] and columns["tfr"] == ["tfr"]
    assert charts["loss"]["template"] == charts["kl"]["template"] == "lines_log"
    for name in ("lines", "lines_log", "steps"):
        scale = _template(name)["encoding"]["y"].get("scale", {})
        assert (scale.get("type") == "log") == (name == "lines_log")


def test_beta_and_tfr_are_drawn_as_steps_the_rest_as_lines():
    """Beta and the teacher forcing ratio hold their value through a step or an epoch: a line
    between two steps' values would draw a ramp (a triangle wave for Cyclical) that never was."""
    charts = _charts()
    assert charts["beta"]["template"] == charts["tfr"]["template"] == "steps"
    assert _template("steps")["mark"]["interpolate"] == "step-after"
    assert "interpolate" not in _template("lines")["mark"]


def test_coinciding_revisions_stay_visible():
    """Each revision its own dash and width (vega-lite's `size` channel, which a line mark
    draws as its width; `strokeWidth` there is ignored), the first revision, drawn on top,
    the thinnest: two revisions with the same values show as a thin line over a thick dashed
    one, not as one line (checked in headless chromium)."""
    for name in ("lines", "lines_log", "steps"):
        template = _template(name)
        assert template["encoding"]["strokeDash"]["field"] == "rev"
        widths = template["encoding"]["size"]
        assert widths["field"] == "rev" and widths["type"] == "ordinal"
        assert widths["scale"]["range"][0] < widths["scale"]["range"][1]
        assert template["mark"]["opacity"] < 1


def test_the_kl_charts_collapse_line_is_in_its_unit(tmp_path):
    """0.1 nats a step, times the steps of a training sequence: the unit of the logged KL."""
    from cvae.training import _write_collapse_line

    _write_collapse_line(tmp_path, steps_per_sequence=11, last_step=1000)
    assert (tmp_path / "collapse.tsv").read_text() == \
        "step\tcollapsed_below\n0\t1.1\n1000\t1.1\n"


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
