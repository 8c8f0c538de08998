"""ChatMessage: one turn of the chat: who speaks, the text (Markdown, streamed for replies)
and, for a finished reply, its own TTFT and TPOT."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown, Static


class ChatMessage(Vertical):
    def __init__(self, role: str, text: str = "", **kwargs) -> None:
        super().__init__(classes=f"message -{role}", **kwargs)
        self.role = role
        self.text = text
        self.border_title = "you" if role == "user" else "model"

    def compose(self) -> ComposeResult:
        yield Markdown(self.text, classes="body")
        yield Static("", classes="latency")

    @property
    def body(self) -> Markdown:
        return self.query_one(".body", Markdown)

    def set_footer(self, text: str) -> None:
        self.query_one(".latency", Static).update(text)
