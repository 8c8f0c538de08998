"""What every handler of one server needs: the engine client and the server's settings."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from dsbox.chat_template import ChatTemplate
from dsbox.client import EngineClient
from dsbox.server.jobs import Job, Mailbox, WaitingGate


@dataclass(slots=True)
class ServerState:
    client: EngineClient
    model_name: str                  # the name clients use, echoed in every response
    chat_template: ChatTemplate
    gate: WaitingGate
    created: int = field(default_factory=lambda: int(time.time()))
    mailbox: Mailbox | None = None   # of the serving event loop, made at the first request

    def job(self, tag: str) -> Job:
        """A job for a request handled on the running event loop."""
        loop = asyncio.get_running_loop()
        if self.mailbox is None or self.mailbox.loop is not loop:
            self.mailbox = Mailbox(loop)
        return Job(self.client, self.gate, self.mailbox, tag)
