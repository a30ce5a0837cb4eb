from __future__ import annotations

import pytest

from erp_sms import templates
from erp_sms.cli_templates import sample_context
from erp_sms.errors import TemplateError
from erp_sms.events import event_for_template

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
