from __future__ import annotations

import pytest

from erp_sms import templates, wording
from erp_sms.errors import TemplateError
from erp_sms.events import event_for_template
from erp_sms.models import Channel
from erp_sms.staff import sample_context

DEFAULTS = ["SMS S2P", "SMS PWOCOMP", "SMS SESHIP", "SMS SEDEL"]


REALISTIC = {"sender": {"name": "Northwind Machining", "phone_number": "(312) 555-0100"}}


@pytest.mark.parametrize("name", DEFAULTS)
@pytest.mark.parametrize("channel", [Channel.TWILIO, Channel.EMAIL_GATEWAY])
def test_each_default_fits_one_gsm7_segment_on_each_channel_with_its_opt_out_line(name, channel):
    """With our company name and realistic data, each default text — with the opt-out line
    its channel adds — is one GSM-7 segment; a Twilio text says STOP and HELP, a gateway
    text never says STOP but how else to opt out."""
    src = templates.default_source(name)
    assert src is not None and src.origin == "file"
    ctx = {**sample_context(event_for_template(name)), **REALISTIC}
    r = templates.check(src.source, ctx, name)
    assert r.body.startswith("Northwind Machining: ")
    rules = wording.Rules(opt_out_contact="+13125550100")
    done = wording.finish(r.body, channel, rules, wording.keep_from(ctx))
    assert (done.encoding, done.segments) == ("GSM-7", 1) and len(done.body) <= 160
    if channel == Channel.TWILIO:
        assert done.body.endswith("Reply STOP to opt out, HELP for help.")
    else:
        assert done.body.endswith("To opt out, call (312) 555-0100.") and "STOP" not in done.body


def test_without_a_company_name_the_defaults_start_with_the_news():
    src = templates.default_source("SMS S2P")
    assert src is not None
    ctx = sample_context(event_for_template("SMS S2P"))
    ctx["sender"] = {**ctx["sender"], "name": ""}
    assert templates.check(src.source, ctx).body.startswith("Your order SO-104233 has gone")


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


def test_the_1600_limit_counts_as_twilio_does_in_utf16_units():
    """Twilio counts UTF-16 code units: 801 emoji are 1,602 of them (21617), though only
    801 characters to Python."""
    assert templates.check("a" * 1600, {}, "SMS X").body == "a" * 1600
    with pytest.raises(TemplateError, match="1,602"):
        templates.check("😀" * 801, {}, "SMS X")
    assert templates.check("😀" * 800, {}, "SMS X").body == "😀" * 800  # 1,600 units
