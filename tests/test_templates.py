from __future__ import annotations

import pytest

from erp_sms import templates
from erp_sms.errors import TemplateError
from erp_sms.events import event_for_template
from erp_sms.staff import sample_context

DEFAULTS = ["SMS S2P", "SMS PWOCOMP", "SMS SESHIP", "SMS SEDEL"]


@pytest.mark.parametrize("name", DEFAULTS)
def test_each_default_fits_one_gsm7_segment_with_realistic_data_and_says_stop_and_help(name):
    src = templates.default_source(name)
    assert src is not None and src.origin == "file"
    r = templates.check(src.source, sample_context(event_for_template(name)), name)
    assert (r.encoding, r.segments) == ("GSM-7", 1)
    assert len(r.body) <= 160
    assert "STOP" in r.body and "HELP" in r.body
    assert templates.warnings_for(r.body) == []


def test_warnings_name_what_to_fix():
    warns = templates.warnings_for("Your order ships today \u2014 thanks! " + "x" * 60)
    assert any("no opt-out text" in w for w in warns)
    assert any("no HELP text" in w for w in warns)
    assert any("UCS-2" in w and "'\u2014'" in w for w in warns)
    assert any("2 segments" in w for w in warns)


def test_an_empty_rendering_is_an_error():
    with pytest.raises(TemplateError, match="empty message"):
        templates.render("{{ '' }}", {}, "SMS X")


def test_a_template_that_raises_is_a_template_error():
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        templates.render("{{ 1 // 0 }}", {}, "SMS X")


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{{ 'x' * 100000000 }}", "builds a value of 100,000,000"),
        ("{{ 'x' * 1601 }}", "renders to 1,601 characters; Twilio's maximum is 1,600"),
        (
            "{% for i in range(9000) %}{% for j in range(9000) %}{% endfor %}{% endfor %}x",
            "loops more than 10,000 times",
        ),
        ("{{ 'x'|center(100000000) }}", "larger than 10,000"),
        ("{{ 'x'.ljust(100000000) }}", "larger than 10,000"),
        ("{{ '{:>100000000}'.format('x') }}", "format width"),
        ("{{ '%100000000s' % 'x' }}", "format width"),
        ("{{ range(100000)|join }}", "larger than 10,000"),
        ("x" * 10_001, "keep it under 10,000"),
    ],
)
def test_templates_are_bounded_in_size_and_time(source, fragment):
    with pytest.raises(TemplateError) as info:
        templates.check(source, {}, "SMS X")
    assert fragment in info.value.message


def test_ordinary_jinja_still_works_inside_the_bounds():
    r = templates.render(
        "{% for c in order.lines %}{{ loop.index }}:{{ c|upper }} {% endfor %}"
        "{{ '%05d' % 42 }} {{ [1, 2]|sum }} {{ 'a' ~ 'b' }} {{ 'x' * 3 }}",
        {"order": {"lines": ["oak", "ash"]}},
    )
    assert r.body == "1:OAK 2:ASH 00042 3 ab xxx"


def test_saving_a_huge_template_is_refused_quickly_with_one_line(settings, tmp_path):
    from click.testing import CliRunner

    from erp_sms.cli import cli

    path = tmp_path / "huge.txt"
    path.write_text("{{ 'x' * 100000000 }}")
    result = CliRunner().invoke(cli, ["templates", "set", "SMS S2P", "--file", str(path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "builds a value of 100,000,000" in result.stderr
    shown = CliRunner().invoke(cli, ["templates", "show", "SMS S2P"]).stdout
    assert "(file)" in shown  # nothing was saved
