"""ServerConfig: how ``dsbox serve`` listens and admits requests (the CLI's options)."""

from __future__ import annotations

from dataclasses import dataclass

API_KEY_ENV = "DSBOX_API_KEY"


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"            # address to bind (loopback unless told otherwise)
    port: int = 8000                   # TCP port (0: any free one, printed at start-up)
    api_key: str | None = None         # require 'Authorization: Bearer KEY' (or $DSBOX_API_KEY)
    served_model_name: str | None = None  # model name clients use (default: the model's)
    chat_template: str | None = None   # TOML chat template file (default: the TUI's)
    max_waiting: int = 1024            # requests admitted without a first token; more get 429

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {self.max_waiting}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty")
        if self.served_model_name is not None and not self.served_model_name.strip():
            raise ValueError("served_model_name must not be empty")
