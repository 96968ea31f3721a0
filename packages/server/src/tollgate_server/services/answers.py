"""A finished generation's answers, as the engine hands them to a sink to write last.

Apart from the engine (`services.gateway`) so that the formats' writers can name them without
importing the engine, which imports the request formats.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollgate_core import TokenLogprob, ToolCall, Usage


@dataclass(frozen=True, slots=True)
class AnswerChoice:
    """One of a finished generation's answers (one per choice of ``n``)."""

    text: str
    finish_reason: str
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] | None = None
    """The tokens' log-probabilities, when the request asked for them."""
    reasoning: str = ""
    """The model's thinking, for a sink that `writes_reasoning` (empty otherwise)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A finished generation, as the sink writes it last: encoded while the settlement is at
    the database, written once it has committed.

    `choices` holds one answer per choice the request asked for (``n``); `text`,
    `finish_reason` and `tool_calls` are the first one's, for the formats that have one."""

    choices: tuple[AnswerChoice, ...]
    usage: Usage
    charge: int

    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def finish_reason(self) -> str:
        return self.choices[0].finish_reason

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self.choices[0].tool_calls

    @property
    def reasoning(self) -> str:
        return self.choices[0].reasoning
