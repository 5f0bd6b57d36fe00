"""Writes `offline.html`, the page template of `dvc plots show` / `dvc plots diff` (`.dvc/config`:
`plots.html_template`), with vega, vega-lite and vega-embed inlined from their npm packages, so
the charts render with no internet. dvc-render's own page loads them from a CDN: offline every
chart is blank. The versions are the ones dvc-render 1.x loads (`dvc_render/vega.py`).

    cd /tmp && npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
    python .dvc/plots/make_offline_page.py /tmp/vega-5.20.2.tgz /tmp/vega-lite-5.2.0.tgz \
        /tmp/vega-embed-6.18.2.tgz

Each package's LICENSE (BSD-3-Clause) is copied to `vendor/LICENSE-<name>`."""
import json
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# DVC fills {plot_divs} and {refresh_tag}. Its third placeholder, the one for scripts, is left
# out on purpose: DVC would put the CDN's <script src=...> tags there.
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>cvae-video: DVC plots</title>
<!-- {versions}: inlined from their npm packages (BSD-3-Clause, .dvc/plots/vendor/LICENSE-*)
     by .dvc/plots/make_offline_page.py, so that the page renders with no internet. -->
VENDORED_SCRIPTS
<style>
  body { font-family: sans-serif; margin: 6px; }
  /* Image plots: the revisions side by side, 6 px apart. DVC's inline margins, borders and the
     spaces between its boxes are dropped, so that two revisions of a 680 px image fit in a
     1400 px window (with its scroll bar); a third one wraps. */
  div[style*="nowrap"] { display: flex; flex-wrap: wrap; column-gap: 6px; border: none !important; }
  div[style*="nowrap"] > p { flex-basis: 100%; margin: 8px 0 0 0; }
  div[style*="nowrap"] > div { margin: 0 !important; border: none !important; }
  div[style*="nowrap"] > div > p { margin: 4px 0; }
</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def read_package(tgz: Path) -> tuple[str, str, str, str]:
    """(name, version, minified build, licence) of an npm tarball."""
    with tarfile.open(tgz) as tar:
        def text(member):
            return tar.extractfile(f"package/{member}").read().decode("utf-8")
        package = json.loads(text("package.json"))
        script = text(package["jsdelivr"])  # what the CDN serves for name@version
        return package["name"], package["version"], script, text("LICENSE")


def inline(name: str, version: str, script: str) -> str:
    # The source map is not shipped; "</script" inside a string would end the tag early.
    script = "\n".join(line for line in script.splitlines()
                       if not line.startswith("//# sourceMappingURL="))
    assert "</script" not in script.lower(), name
    assert not any(f"{{{p}}}" in script for p in ("plot_divs", "refresh_tag", "scripts")), name
    return f"<script>/* {name} {version} */\n{script}\n</script>"


def main(tarballs: list[str]) -> None:
    packages = [read_package(Path(t)) for t in tarballs]
    (HERE / "vendor").mkdir(exist_ok=True)
    for name, _, _, licence in packages:
        (HERE / "vendor" / f"LICENSE-{name}").write_text(licence)
    versions = ", ".join(f"{name} {version}" for name, version, _, _ in packages)
    scripts = "\n".join(inline(name, version, script) for name, version, script, _ in packages)
    page = PAGE.replace("{versions}", versions).replace("VENDORED_SCRIPTS", scripts)
    (HERE / "offline.html").write_text(page)


if __name__ == "__main__":
    main(sys.argv[1:])
