"""rules/ and email_templates/ ship inside the wheel: a plain (non-editable) install finds
them, not only a checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_wheel_carries_the_data_and_a_plain_install_finds_it(tmp_path):
    # Built from a clean copy: setuptools reuses a checkout's build/ folder, where a module
    # since moved or deleted would still be found and hide a stale setup.cfg.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("erp_sms-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in (
        "erp_sms/rules/carriers.toml",
        "erp_sms/rules/twilio_errors.toml",
        "erp_sms/rules/rule_types.toml",
        "erp_sms/rules/options.toml",
        "erp_sms/rules/keywords.toml",
        "erp_sms/email_templates/SMS_S2P.txt",
        "erp_sms/email_templates/SMS_SEDEL.txt",
        "erp_sms/migrations/script.py.mako",
        "erp_sms/py.typed",
        "erp_sms/web/static/template_edit.js",
        "erp_sms/web/static/erp_sms.css",
    ):
        assert data in names, data
    # Every module and page of the checkout, so a new package or file can't be left out
    # of the wheel (setup.cfg lists the packages by hand).
    package = ROOT / "erp_sms"
    shipped = [
        "erp_sms/" + path.relative_to(package).as_posix()
        for path in package.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix in {".py", ".html", ".css", ".js", ".mako"}
    ]
    missing = sorted(set(shipped) - names)
    assert not missing, missing
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    probe = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        "import erp_sms, erp_sms.catalog as c, erp_sms.templates as t\n"
        "assert erp_sms.__version__ == '0.2.0.dev0', erp_sms.__version__\n"
        "assert erp_sms.__file__.startswith(sys.argv[1]), erp_sms.__file__\n"
        "print(len(c.carriers()), t.file_default('SMS S2P')[:30])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(target)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("8 {% if sender.name %}{{ sender.")


def test_the_readme_is_short_and_leads_into_the_docs_site():
    """Issue 31: the README was a 582-line reference manual; it is what a newcomer needs
    first, with the two commands and links into the docs (built by `make test`)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 80
    assert "make demo" in readme and "make test" in readme
    links = re.findall(r"\]\((docs/[^)]+\.md)\)", readme)
    assert len(links) >= 5 and all((root / link).is_file() for link in links), links
    nav = (root / "mkdocs.yml").read_text(encoding="utf-8")
    assert all(Path(link).name in nav for link in links)
