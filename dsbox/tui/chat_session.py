"""ChatSession: a multi-turn conversation with the model through a chat template.

It keeps the turns, renders the prompt of the next reply with the template (dropping the
oldest turns when the conversation no longer fits the model's length with room for the
reply), and makes the reply's SamplingParams from the pane's settings (temperature, top-p,
max tokens) with the template's stop strings. A cancelled or failed reply leaves the
conversation as it was before the user's message. No textual import.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsbox.chat_template import ChatTemplate
from dsbox.engine.core.sampling_params import SamplingParams


@dataclass(frozen=True, slots=True)
class ChatSettings:
    """The chat pane's sampling settings (validated like SamplingParams)."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 128

    def __post_init__(self) -> None:
        self.params(())  # SamplingParams raises ValueError for bad values

    def params(self, stop: tuple[str, ...]) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature,
                              top_p=self.top_p, stop=list(stop))

    @classmethod
    def parse(cls, temperature: str, top_p: str, max_tokens: str) -> ChatSettings:
        """From the pane's text fields; ValueError naming the field that is wrong."""
        values = {}
        for name, text, kind in (("temperature", temperature, float), ("top-p", top_p, float),
                                 ("max tokens", max_tokens, int)):
            try:
                values[name] = kind(text.strip())
            except ValueError:
                raise ValueError(f"{name} must be a number, got {text!r}") from None
        return cls(values["temperature"], values["top-p"], values["max tokens"])


class ChatSession:
    """The turns so far and the prompt of the next reply."""

    def __init__(self, tokenizer, max_model_len: int,
                 template: ChatTemplate | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.template = template or ChatTemplate()
        self.messages: list[dict[str, str]] = []

    def prompt_for(self, user_text: str, settings: ChatSettings) -> tuple[str, SamplingParams]:
        """The prompt text with ``user_text`` as the next turn (oldest turns dropped to fit
        ``max_model_len`` with room for ``max_tokens``), and the reply's params."""
        if not user_text.strip():
            raise ValueError("the message is empty")
        turns = [*self.messages, {"role": "user", "content": user_text}]
        budget = self.max_model_len - settings.max_tokens
        while True:
            prompt = self.template.render(turns, add_generation_prompt=True)
            if len(turns) == 1 or len(self.tokenizer.encode(prompt)) <= budget:
                break
            turns = turns[2:] if turns[0]["role"] == "user" else turns[1:]
        if len(self.tokenizer.encode(prompt)) >= self.max_model_len:
            raise ValueError(f"the message is longer than the model's {self.max_model_len} "
                             "tokens")
        return prompt, settings.params(self.template.stop)

    def add_exchange(self, user_text: str, reply: str) -> None:
        """Record a completed exchange (the user's message and the model's reply)."""
        self.messages.append({"role": "user", "content": user_text})
        self.messages.append({"role": "assistant", "content": reply})
