"""Token estimates: the safe-side one for holds, the calibrated one for charges."""

from __future__ import annotations

import pytest
from tollgate_core import Message
from tollgate_core.tokens import (
    calibrated_messages_tokens,
    calibrated_text_tokens,
    estimate_completion_tokens,
    estimate_messages_tokens,
    estimate_text_tokens,
)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("hello", 1),
        ("hello world", 2),  # the space joins the second word
        ("internationalisation", 3),  # 20 letters: 7 + 7 + 6
        ("12345", 2),  # digits in groups of three
        ("Привет мир", 3),  # 6 Cyrillic letters are 2 pieces, 3 are 1
        ("日本語", 3),
        ("a != b;", 4),
        ("def f():\n    return 1", 7),
    ],
)
def test_calibrated_pieces(text: str, tokens: int) -> None:
    assert calibrated_text_tokens(text) == tokens


def test_the_hold_estimate_stays_on_the_safe_side() -> None:
    # The hold's rule is unchanged (one token per 3 bytes) and above the calibrated one.
    text = "Объясни разницу между процессом и потоком."
    assert estimate_text_tokens(text) == -(-len(text.encode()) // 3)
    assert estimate_text_tokens(text) > calibrated_text_tokens(text)
    messages = (Message(role="user", content=text),)
    assert estimate_messages_tokens(messages) > calibrated_messages_tokens(messages)


def test_a_short_prompt_is_estimated_near_its_count() -> None:
    # The case: a short prompt the upstream counted as 5 was estimated at 21.
    messages = (Message(role="user", content="Say hi in three words"),)
    assert calibrated_messages_tokens(messages) <= 12


def test_completion_estimate_is_at_least_one_token_a_delta() -> None:
    assert estimate_completion_tokens("tok0 tok1 tok2", 3) == 6  # "tok" and "0" each
    assert estimate_completion_tokens("a", 4) == 4
    assert estimate_completion_tokens("one two three four five", 1) == 5
