from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erp_sms.segments import GSM7, GSM7_BASIC, GSM7_EXTENSION, UCS2, analyse


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, GSM7, 1),
        ("a" * 161, GSM7, 2),
        ("a" * 306, GSM7, 2),
        ("a" * 307, GSM7, 3),
        ("€" * 80, GSM7, 1),
        ("€" * 81, GSM7, 2),
        ("ê" * 70, UCS2, 1),
        ("ê" * 71, UCS2, 2),
        ("😀" * 35, UCS2, 1),
        ("😀" * 36, UCS2, 2),
        ("", GSM7, 0),
    ],
)
def test_expected_figures_from_design(text: str, encoding: str, segments: int) -> None:
    info = analyse(text)
    assert (info.encoding, info.segments) == (encoding, segments)


def test_one_curly_quote_turns_the_whole_message_ucs2_and_is_named() -> None:
    info = analyse("Your order is ready \u2014 thanks")
    assert info.encoding == UCS2
    assert info.non_gsm == ("\u2014",)


def test_backtick_is_not_gsm7() -> None:
    assert analyse("`").encoding == UCS2


def test_extension_character_is_never_split_across_segments() -> None:
    # 152 plain characters then '€' (2 septets): the first segment holds 152, the euro
    # starts the second rather than being split.
    text = "a" * 152 + "€" + "a" * 152
    assert analyse(text).segments == 3
    assert analyse("a" * 151 + "€" + "a" * 153).segments == 2


@given(st.text(alphabet=sorted(GSM7_BASIC), max_size=1000))
def test_basic_gsm_text_segments_match_the_formula(text: str) -> None:
    n = len(text)
    expected = 0 if n == 0 else 1 if n <= 160 else -(-n // 153)
    assert analyse(text).segments == expected


@given(st.text(alphabet=sorted(GSM7_BASIC | GSM7_EXTENSION), max_size=600))
def test_gsm_segments_hold_at_most_153_septets(text: str) -> None:
    info = analyse(text)
    assert info.encoding == GSM7
    assert info.segments * 153 >= info.units or info.units <= 160
