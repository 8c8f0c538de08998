"""What every handler of one server needs: the engine client and the server's settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dsbox.chat_template import ChatTemplate
from dsbox.client import EngineClient
from dsbox.server.jobs import WaitingGate


@dataclass(slots=True)
class ServerState:
    client: EngineClient
    model_name: str                  # the name clients use, echoed in every response
    chat_template: ChatTemplate
    gate: WaitingGate
    created: int = field(default_factory=lambda: int(time.time()))
