"""The dsbox chat template: rendering, the generation prompt, stop strings, user files."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsbox.chat_template import ChatTemplate

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "  And of Italy?\n"},
]


def test_default_render():
    text = ChatTemplate().render(CONVERSATION)
    assert text == ("System: You are terse.\n"
                    "User: What is the capital of France?\n"
                    "Assistant: Paris.</s>\n"
                    "User: And of Italy?\n"
                    "Assistant:")


def test_without_generation_prompt_and_empty():
    t = ChatTemplate()
    assert t.render(CONVERSATION[1:3], add_generation_prompt=False) == (
        "User: What is the capital of France?\nAssistant: Paris.</s>\n")
    assert t.render([]) == "Assistant:"
    assert t.render([], add_generation_prompt=False) == ""


def test_reply_continues_the_generation_prompt():
    """A generated reply appended to the prompt reads as a finished assistant turn in the
    next render (up to the EOS and newline the engine does not return)."""
    t = ChatTemplate()
    prompt = t.render(CONVERSATION[1:2])
    reply = " Paris."
    assert (prompt + reply + "</s>\n"
            == t.render(CONVERSATION[1:3], add_generation_prompt=False))
    assert t.assistant.startswith(t.generation_prompt)


def test_stop_strings():
    t = ChatTemplate()
    assert t.stop == ("\nUser:",)
    assert all(s in t.render(CONVERSATION) for s in t.stop)


def test_content_with_braces_is_literal():
    text = ChatTemplate().render([{"role": "user", "content": "use {content} and {x}"}])
    assert text == "User: use {content} and {x}\nAssistant:"


@pytest.mark.parametrize("message, needle", [
    ({"role": "robot", "content": "hi"}, "role"),
    ({"role": "user"}, "'role' and 'content'"),
    ({"role": "user", "content": 3}, "content must be a string"),
    ("hello", "'role' and 'content'"),
])
def test_bad_messages(message, needle):
    with pytest.raises(ValueError, match=needle):
        ChatTemplate().render([message])


def test_from_file(tmp_path: Path):
    path = tmp_path / "chat.toml"
    path.write_text('user = "### Q: {content}\\n"\n'
                    'assistant = "### A: {content}\\n"\n'
                    'generation_prompt = "### A:"\n'
                    'stop = ["\\n###"]\n')
    t = ChatTemplate.from_file(path)
    assert t.system == ChatTemplate().system  # not given: the default
    assert t.stop == ("\n###",)
    assert t.render(CONVERSATION[1:3]) == (
        "### Q: What is the capital of France?\n### A: Paris.\n### A:")


@pytest.mark.parametrize("text, needle", [
    ('user = "no placeholder"', "user must contain {content} exactly once"),
    ('user = "{content} {content}"', "exactly once"),
    ('assistant = "{content} {name}"', "placeholder other than {content}"),
    ('generation_prompt = "{content}"', "generation_prompt takes no placeholder"),
    ('stop = "x"', "stop must be a list"),
    ('stop = [""]', "non-empty"),
    ('stop = [1]', "non-empty strings"),
    ('user = 3', "user must be a string"),
    ('colour = "red"', "unknown key(s) colour"),
    ('', "empty"),
    ('user = ', "not valid TOML"),
])
def test_bad_files(tmp_path: Path, text, needle):
    path = tmp_path / "chat.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match="chat template .*chat.toml") as info:
        ChatTemplate.from_file(path)
    assert needle in str(info.value)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ValueError, match="no such file"):
        ChatTemplate.from_file(tmp_path / "nope.toml")


def test_frozen():
    with pytest.raises(AttributeError):
        ChatTemplate().user = "x {content}"  # type: ignore[misc]
