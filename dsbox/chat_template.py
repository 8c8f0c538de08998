"""The dsbox chat template: how a conversation becomes the prompt text of a model.

OPT ships no chat template, so dsbox defines one plain format; the bundled default model
(``dsbox-chat``) is trained on ShareGPT conversations rendered with exactly the defaults of
:class:`ChatTemplate`, so a reply generated after ``render(messages,
add_generation_prompt=True)`` is in-distribution for it::

    System: You are terse.
    User: What is the capital of France?
    Assistant: The capital of France is Paris.</s>
    User: And of Italy?
    Assistant:

Each message is its role's pattern with ``{content}`` replaced by the message text
(stripped of surrounding whitespace); the patterns are concatenated in order. A finished
assistant turn ends with ``</s>`` (OPT's EOS, id 2), so the engine stops a reply at EOS; the
generation prompt is the assistant pattern up to ``{content}`` without its trailing space,
so the reply's first token carries its leading space as in training. The engine prepends
BOS itself, so the template does not. A reply should also stop at any of :attr:`stop`
(``"\\nUser:"``: a model that forgets EOS and starts the user's next turn).

``system`` messages are rendered with their own pattern wherever they appear (usually
first); the default model saw few of them in training, so treat them as a hint.

A user's template file (:meth:`ChatTemplate.from_file`) is TOML with these keys, all
optional except that at least one must be given; missing ones keep the defaults::

    system = "System: {content}\\n"      # each pattern has {content} exactly once
    user = "User: {content}\\n"
    assistant = "Assistant: {content}</s>\\n"
    generation_prompt = "Assistant:"    # appended for add_generation_prompt=True
    stop = ["\\nUser:"]                  # strings a reply stops at (may be empty)

No other placeholder or key is allowed; mistakes raise ValueError naming the file and key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

__all__ = ["ROLES", "ChatTemplate"]

#: The message roles a template renders.
ROLES: tuple[str, ...] = ("system", "user", "assistant")
_PLACEHOLDER = "{content}"
_PATTERN_KEYS = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    """Patterns per role, the generation prompt and the stop strings (see the module doc)."""

    system: str = "System: {content}\n"
    user: str = "User: {content}\n"
    assistant: str = "Assistant: {content}</s>\n"
    generation_prompt: str = "Assistant:"
    stop: tuple[str, ...] = ("\nUser:",)

    def __post_init__(self) -> None:
        for key in _PATTERN_KEYS:
            pattern = getattr(self, key)
            if not isinstance(pattern, str):
                raise ValueError(f"chat template: {key} must be a string, got {pattern!r}")
            if pattern.count(_PLACEHOLDER) != 1:
                raise ValueError(f"chat template: {key} must contain {_PLACEHOLDER} exactly "
                                 f"once, got {pattern!r}")
            rest = pattern.replace(_PLACEHOLDER, "")
            if "{" in rest or "}" in rest:
                raise ValueError(f"chat template: {key} has a placeholder other than "
                                 f"{_PLACEHOLDER} (or a stray brace): {pattern!r}")
        if not isinstance(self.generation_prompt, str):
            raise ValueError("chat template: generation_prompt must be a string, got "
                             f"{self.generation_prompt!r}")
        if "{" in self.generation_prompt or "}" in self.generation_prompt:
            raise ValueError("chat template: generation_prompt takes no placeholder, got "
                             f"{self.generation_prompt!r}")
        if isinstance(self.stop, str) or not isinstance(self.stop, Sequence):
            raise ValueError(f"chat template: stop must be a list of strings, got {self.stop!r}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"chat template: stop strings must be non-empty strings, got "
                             f"{list(self.stop)!r}")
        object.__setattr__(self, "stop", tuple(self.stop))

    def render_message(self, role: str, content: str) -> str:
        """One message as text: its role's pattern around the stripped content."""
        if role not in ROLES:
            raise ValueError(f"chat message role must be one of {', '.join(ROLES)}, "
                             f"got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"chat message content must be a string, got {content!r}")
        return getattr(self, role).replace(_PLACEHOLDER, content.strip())

    def render(self, messages: Sequence[Mapping[str, str]],
               add_generation_prompt: bool = True) -> str:
        """The prompt text of a conversation: each ``{"role", "content"}`` message in order,
        then (with ``add_generation_prompt``) the cue for the assistant's next reply."""
        parts = []
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or "role" not in message \
                    or "content" not in message:
                raise ValueError(f"chat message {i} must be a mapping with 'role' and "
                                 f"'content', got {message!r}")
            parts.append(self.render_message(message["role"], message["content"]))
        if add_generation_prompt:
            parts.append(self.generation_prompt)
        return "".join(parts)

    @classmethod
    def from_file(cls, path: Path | str) -> ChatTemplate:
        """A template from a TOML file (format in the module docstring)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"chat template {path}: no such file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"chat template {path}: not valid TOML ({exc})") from None
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], source: str = "<mapping>") -> ChatTemplate:
        """A template from a dict of the file's keys; missing keys keep the defaults."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"chat template {source}: unknown key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(known)}")
        if not data:
            raise ValueError(f"chat template {source}: empty; give at least one of "
                             f"{', '.join(known)}")
        values = dict(data)
        if "stop" in values and isinstance(values["stop"], list):
            values["stop"] = tuple(values["stop"])
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"chat template {source}: {str(exc).removeprefix('chat template: ')}"
                             ) from None
