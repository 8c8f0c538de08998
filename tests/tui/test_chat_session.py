"""ChatSession: the prompt of the next reply through the chat template, old turns dropped to
fit the model's length, the pane's settings validated."""

from __future__ import annotations

import pytest

from dsbox.chat_template import ChatTemplate
from dsbox.engine.model.tokenizer import bundled_tokenizer
from dsbox.tui.chat_session import ChatSession, ChatSettings


def test_prompt_renders_the_conversation_with_the_template():
    session = ChatSession(bundled_tokenizer(), 2048)
    session.add_exchange("Hi", "Hello!")
    prompt, params = session.prompt_for("How are you?", ChatSettings(0.5, 0.9, 64))
    assert prompt == ChatTemplate().render([
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"}])
    assert (params.temperature, params.top_p, params.max_tokens) == (0.5, 0.9, 64)
    assert params.stop == list(ChatTemplate().stop)


def test_oldest_turns_are_dropped_to_fit():
    tok = bundled_tokenizer()
    session = ChatSession(tok, 128)
    for i in range(10):
        session.add_exchange(f"question {i} " + "word " * 10, f"answer {i} " + "word " * 10)
    settings = ChatSettings(max_tokens=32)
    prompt, _ = session.prompt_for("last question", settings)
    assert len(tok.encode(prompt)) <= 128 - 32
    assert prompt.endswith("User: last question\nAssistant:")
    assert "question 9" in prompt and "question 0" not in prompt
    assert prompt.startswith("User: ")  # whole exchanges are dropped
    with pytest.raises(ValueError, match="longer than the model"):
        session.prompt_for("word " * 200, settings)
    with pytest.raises(ValueError, match="empty"):
        session.prompt_for("   ", settings)


@pytest.mark.parametrize("fields, match", [(("x", "0.9", "64"), "temperature"),
                                           (("0.7", "", "64"), "top-p"),
                                           (("0.7", "0.9", "1.5"), "max tokens"),
                                           (("-1", "0.9", "64"), "temperature"),
                                           (("0.7", "0.9", "0"), "max_tokens")])
def test_bad_settings(fields, match):
    with pytest.raises(ValueError, match=match):
        ChatSettings.parse(*fields)
