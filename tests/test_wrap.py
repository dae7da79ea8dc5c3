"""synth.wrap and synth.cache: chunks, prompts, clean-up, cache keys and files (no server)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from synth.cache import AnswerCache
from synth.wrap import (PRESETS, SYSTEM, Prompt, Sampling, cache_key, chunk_text, chunks_to_send, estimate_tokens,
                        prompts_for, sentences, strip_boilerplate, token_counter)


def test_sentences_rejoin_exactly_and_split_at_sentence_ends():
    text = "Dr. Smith went to Washington. He said hello!\n\nThen he left.  Twice.\n"
    parts = sentences(text)
    assert "".join(parts) == text
    assert [p.strip() for p in parts if p.strip()] == [
        "Dr. Smith went to Washington.", "He said hello!", "Then he left.", "Twice."]


def test_chunks_stay_under_the_limit_and_lose_nothing():
    text = ("A short sentence here. " * 40 + "\n") * 5 + "word " * 500 + "\n" + "x" * 2500 + " end."
    chunks = chunk_text(text, 60)
    assert "".join(chunks) == text
    assert all(estimate_tokens(c) <= 60 for c in chunks)
    # sentence boundaries where they fit: every chunk of the prose part ends a sentence
    prose = [c for c in chunks if "A short sentence" in c]
    assert all(c.rstrip().endswith(".") for c in prose)


def test_a_sentence_over_the_limit_is_split_never_dropped():
    long_sentence = "Lorem ipsum dolor sit amet " * 200 + "finis."
    chunks = chunk_text(long_sentence, 50)
    assert len(chunks) > 10 and "".join(chunks) == long_sentence
    one_word = "z" * 10_000
    assert "".join(chunk_text(one_word, 50)) == one_word and all(len(c) <= 200 for c in chunk_text(one_word, 50))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(list("ab .!?\n\tÉ字") + ["Mr. ", "e.g. ", "3.5 "]), max_size=200).map("".join),
       st.integers(min_value=1, max_value=40))
def test_chunking_is_lossless_for_any_text(text, limit):
    assert "".join(chunk_text(text, limit)) == text
    sent = chunks_to_send(text, limit)
    assert all(c.strip() == c and c for c in sent)


def test_token_counter_uses_a_tokenizer_file(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    count = token_counter(str(tmp_path))
    assert count("hello world hello") == 3
    with pytest.raises(ConfigError, match="no tokenizer.json"):
        token_counter(str(tmp_path / "missing"))


def test_presets_are_the_papers_prompts_and_templates_are_checked():
    qa = PRESETS["qa"].messages("The cat sat.")
    assert qa[0] == {"role": "system", "content": SYSTEM}
    assert qa[1]["content"].startswith('Convert the following paragraph into a conversational format with multiple '
                                       'tags of "Question:" followed by "Answer:":')
    assert qa[1]["content"].endswith("\nThe cat sat.")
    assert {p.version for p in PRESETS.values()} == {"wrap-easy-1", "wrap-medium-1", "wrap-hard-1", "wrap-qa-1"}
    mine = prompts_for(("legal",), {"legal": {"user": "Rewrite as a statute: {chunk} Thanks."}})[0]
    assert mine.version == "legal-1" and mine.messages("X")[1]["content"] == "Rewrite as a statute: X Thanks."
    appended = Prompt.from_template("x", {"user": "Summarise:", "system": ""})
    assert appended.messages("C") == [{"role": "user", "content": "Summarise:\nC"}]
    with pytest.raises(ConfigError, match="unknown style 'nope'"):
        prompts_for(("nope",))
    with pytest.raises(ConfigError, match="needs `user`"):
        prompts_for(("y",), {"y": {"system": "s"}})
    with pytest.raises(ConfigError, match="unknown key"):
        prompts_for(("y",), {"y": {"user": "u", "temperature": "1"}})


@pytest.mark.parametrize("answer, expected", [
    ("Sure! Here is a paraphrase of the paragraph:\n\nThe cat sat.\n\nI hope this helps!", "The cat sat."),
    ("Here's the conversational format:\nQuestion: a?\nAnswer: b.", "Question: a?\nAnswer: b."),
    ("Certainly. Here is a simplified version of the text: Cats sit.", "Cats sit."),
    ("Paraphrase: The dog ran.", "The dog ran."),
    ("**Rephrased text:**\nThe dog ran.", "The dog ran."),
    ("Sure enough, the dog ran.", "Sure enough, the dog ran."),
    ("Great, the river rose.", "Great, the river rose."),                        # content, not a preamble
    ("Here are three reasons: cost, time and risk.", "Here are three reasons: cost, time and risk."),
    ("Here is where the river rose: near the bridge.", "Here is where the river rose: near the bridge."),
    ("Sure!\nThe cat.", "The cat."),
    ("The dog ran.", "The dog ran."),
])
def test_boilerplate_is_stripped_from_the_start_and_end_only(answer, expected):
    assert strip_boilerplate(answer) == expected


def test_cache_key_depends_on_model_sampling_prompt_and_chunk_only():
    qa, easy = PRESETS["qa"], PRESETS["easy"]
    s = Sampling()
    base = cache_key("m", s, qa, "chunk")
    assert base == cache_key("m", Sampling(), qa, "chunk")
    others = {cache_key("m2", s, qa, "chunk"), cache_key("m", Sampling(temperature=0.1), qa, "chunk"),
              cache_key("m", s, easy, "chunk"), cache_key("m", s, qa, "chunk2"),
              cache_key("m", s, Prompt("qa", "wrap-qa-2", qa.system, qa.user), "chunk"),
              cache_key("m", s, Prompt("qa", "wrap-qa-1", qa.system, qa.user + " "), "chunk")}
    assert base not in others and len(others) == 6


def test_cache_files_are_whole_answers_and_bad_files_read_as_absent(tmp_path):
    cache = AnswerCache(tmp_path / "c")
    assert cache.get("ab" * 32) is None
    cache.put("ab" * 32, {"text": "answer", "finish_reason": "stop"})
    assert cache.get("ab" * 32)["text"] == "answer" and len(cache) == 1
    assert cache.path("ab" * 32).relative_to(tmp_path / "c").parts[:2] == ("ab", "ab")
    assert not list((tmp_path / "c").rglob(".tmp-*"))
    cache.path("cd" * 32).parent.mkdir(parents=True)
    cache.path("cd" * 32).write_text('{"text": ')  # as if written by something that did not rename
    assert cache.get("cd" * 32) is None
    cache.path("ef" * 32).parent.mkdir(parents=True)
    cache.path("ef" * 32).write_text(json.dumps({"no": "text"}))
    assert cache.get("ef" * 32) is None


def test_sampling_settings_are_checked():
    with pytest.raises(ConfigError, match="top_p"):
        Sampling(top_p=0)
    with pytest.raises(ConfigError, match="max_tokens"):
        Sampling(max_tokens=0)
    assert json.loads(Sampling(seed=3).as_json()) == {"max_tokens": 1024, "seed": 3, "temperature": 0.8, "top_p": 0.95}
