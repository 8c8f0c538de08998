"""ChatPane: multi-turn chat with the model. The reply streams token by token into a
Markdown widget (``Markdown.get_stream``); Escape cancels it (leaving the stream aborts the
request, which frees its KV) and puts the message back in the input; each reply shows its
own TTFT and TPOT; temperature, top-p and max tokens are set in the pane."""

from __future__ import annotations

import asyncio

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Markdown
from textual.worker import Worker

from dsbox.tui.chat_session import ChatSession, ChatSettings
from dsbox.tui.format import ms
from dsbox.tui.widgets.chat_message import ChatMessage

CHAT_TAG = "chat"


class ChatPane(Vertical):
    BINDINGS = [Binding("escape", "cancel_reply", "Cancel")]

    def __init__(self, client, session: ChatSession, settings: ChatSettings, **kwargs) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.session = session
        self.settings = settings
        self.border_title = "Chat"
        self.reply_worker: Worker | None = None
        self.request_id: int | None = None   # of the reply streaming now
        self.num_chunks = 0                  # outputs with new text in the current reply
        self.last_output = None              # final RequestOutput of the last reply

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="messages")
        with Horizontal(id="chat-settings"):
            yield Label("temperature")
            yield Input(str(self.settings.temperature), id="temperature", type="number")
            yield Label("top-p")
            yield Input(str(self.settings.top_p), id="top-p", type="number")
            yield Label("max tokens")
            yield Input(str(self.settings.max_tokens), id="max-tokens", type="integer")
        yield Input(placeholder="Message the model (Enter sends, Escape cancels a reply)",
                    id="prompt")

    @property
    def replying(self) -> bool:
        return self.reply_worker is not None and self.reply_worker.is_running

    def _read_settings(self) -> ChatSettings:
        return ChatSettings.parse(self.query_one("#temperature", Input).value,
                                  self.query_one("#top-p", Input).value,
                                  self.query_one("#max-tokens", Input).value)

    @on(Input.Submitted, "#prompt")
    async def _send(self, event: Input.Submitted) -> None:
        text = event.value
        if not text.strip() or self.replying:
            return
        try:
            self.settings = self._read_settings()
            prompt, params = self.session.prompt_for(text, self.settings)
        except ValueError as exc:
            self.app.notify(str(exc), title="chat", severity="error")
            return
        event.input.value = ""
        messages = self.query_one("#messages", VerticalScroll)
        await messages.mount(ChatMessage("user", text))
        reply = ChatMessage("assistant")
        await messages.mount(reply)
        messages.scroll_end(animate=False)
        self.num_chunks = 0
        self.reply_worker = self._reply(text, prompt, params, reply)

    @work(exclusive=True, group="chat")
    async def _reply(self, user_text: str, prompt: str, params, message: ChatMessage) -> None:
        stream = Markdown.get_stream(message.body)
        messages = self.query_one("#messages", VerticalScroll)
        final = None
        cancelled = False
        try:
            async for out in self.client.stream(prompt, params, tag=CHAT_TAG):
                self.request_id = out.request_id
                if out.new_text:
                    self.num_chunks += 1
                    await stream.write(out.new_text)
                    messages.scroll_end(animate=False)
                final = out
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as exc:  # the engine refused or failed: say so, keep the pane
            message.set_footer(f"error: {exc}")
        finally:
            await stream.stop()
            self._finish(user_text, message, final, cancelled)

    def _finish(self, user_text: str, message: ChatMessage, final, cancelled: bool) -> None:
        self.request_id = None
        prompt = self.query_one("#prompt", Input)
        if cancelled or final is None or final.finish_reason in ("abort", "error"):
            why = "cancelled" if cancelled or final is None or final.finish_reason == "abort" \
                else f"error: {final.error}"
            message.set_footer(why)
            if not prompt.value:
                prompt.value = user_text  # restore the message, as it was not answered
            prompt.focus()
            return
        self.last_output = final
        message.text = final.text
        message.body.update(final.text)
        lc = final.lifecycle
        message.set_footer(f"TTFT {ms(lc.ttft)} · TPOT {ms(lc.tpot)} · "
                           f"{len(final.token_ids)} tokens · {final.finish_reason}")
        self.session.add_exchange(user_text, final.text)

    def action_cancel_reply(self) -> None:
        if self.replying:
            self.reply_worker.cancel()
