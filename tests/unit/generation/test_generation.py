"""Chat generation: causal always, token counts, streaming, stop strings, input checks."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from egtlm_core import ChatResult, EgtLM
from egtlm_core.generation.streaming import StopFilter

# A prompt for which the tiny random llama's greedy answer runs past 40 tokens without EOS.
LONG = [{"role": "user", "content": "Tell me about the fox"}]
SHORT = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def m(tiny_llama_dir) -> EgtLM:
    return EgtLM(str(tiny_llama_dir), torch_dtype="float32", attention="bidirectional")


@pytest.fixture(scope="module")
def fresh(tiny_llama_dir):
    """A private copy of the weights, loaded straight from disk with transformers' defaults."""
    return AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()


def prompt_ids(m: EgtLM, messages) -> list[int]:
    out = m.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(out["input_ids"])


def hf_greedy(model, ids: list[int], max_new_tokens: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
    return out[0, len(ids) :].tolist()


def ascii_stop(text: str, min_at: int = 4) -> str:
    """A 3-letter piece of `text` whose first occurrence is in its middle."""
    for i in range(min_at, len(text) - 3):
        piece = text[i : i + 3]
        if piece.isascii() and piece.isalpha() and text.find(piece) == i:
            return piece
    raise AssertionError(f"no usable stop string in {text!r}")


# --- causal generation, whatever the embedding does -------------------------------------------------
def test_generation_stays_causal_while_bidirectional_encodes_run(m, fresh):
    probe = torch.tensor([prompt_ids(m, LONG)])
    with torch.no_grad():
        reference_logits = fresh(input_ids=probe).logits
    flag = getattr(m.model.config, "is_causal", "absent")
    before = m.chat(LONG, max_new_tokens=24).text

    stop = threading.Event()
    errors: list[BaseException] = []
    encodes = [0]

    def encode_loop() -> None:
        try:
            while not stop.is_set():
                m.encode(["a cat sat on the mat", "the quick brown fox jumps over the lazy dog"])
                encodes[0] += 1
        except BaseException as err:  # reported below
            errors.append(err)

    worker = threading.Thread(target=encode_loop)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while encodes[0] == 0 and not errors and time.monotonic() < deadline:
            time.sleep(0.001)  # the encode loop is running before the first chat starts
        at_start = encodes[0]
        during, logit_diffs = [], []
        for _ in range(3):
            during.append(m.chat(LONG, max_new_tokens=24).text)
            with torch.no_grad():
                logit_diffs.append((m.model(input_ids=probe).logits - reference_logits).abs().max().item())
            assert getattr(m.model.config, "is_causal", "absent") == flag
    finally:
        stop.set()
        worker.join()
    after = m.chat(LONG, max_new_tokens=24).text
    assert not errors
    assert at_start > 0 and encodes[0] > at_start  # encodes ran while the chats did
    assert during == [before] * 3 and after == before
    assert max(logit_diffs) <= 1e-5
    with torch.no_grad():
        assert (m.model(input_ids=probe).logits - reference_logits).abs().max() <= 1e-5
    # And the chat text is what plain HF greedy decoding gives.
    assert before == m.tokenizer.decode(hf_greedy(fresh, probe[0].tolist(), 24), skip_special_tokens=True)


# --- ChatResult -------------------------------------------------------------------------------------
def test_chat_result_counts_and_length_finish(m, fresh):
    ids = prompt_ids(m, LONG)
    r = m.chat(LONG, max_new_tokens=12)
    assert isinstance(r, ChatResult)
    new = hf_greedy(fresh, ids, 12)
    assert m.tokenizer.eos_token_id not in new
    assert r.prompt_tokens == len(ids)
    assert r.completion_tokens == len(new) == 12
    assert r.total_tokens == len(ids) + 12
    assert r.finish_reason == "length"
    assert r.text == m.tokenizer.decode(new, skip_special_tokens=True)
    assert r.ttft_s is not None and 0 <= r.ttft_s <= r.total_s


def test_chat_finish_reason_stop_on_eos(m, fresh):
    ids = prompt_ids(m, SHORT)
    new = hf_greedy(fresh, ids, 60)
    assert new[-1] == m.tokenizer.eos_token_id, "the tiny model's greedy answer to 'hello' ends with EOS"
    r = m.chat(SHORT, max_new_tokens=60)
    assert r.finish_reason == "stop"
    assert r.completion_tokens == len(new) < 60
    assert r.text == m.tokenizer.decode(new, skip_special_tokens=True)


def test_chat_accepts_a_plain_string(m):
    assert m.chat("Tell me about the fox", max_new_tokens=8).text == m.chat(LONG, max_new_tokens=8).text


# --- streaming --------------------------------------------------------------------------------------
@pytest.mark.parametrize("messages", [LONG, SHORT])
def test_stream_pieces_join_to_chat_text(m, messages):
    pieces = list(m.stream_chat(messages, max_new_tokens=30))
    assert len(pieces) > 1
    assert all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == m.chat(messages, max_new_tokens=30).text


# --- stop strings -----------------------------------------------------------------------------------
def test_stop_string_ends_generation_and_is_cut(m):
    full = m.chat(LONG, max_new_tokens=40)
    stop = ascii_stop(full.text)
    cut = full.text[: full.text.find(stop)]
    r = m.chat(LONG, max_new_tokens=40, stop=[stop])
    assert r.text == cut
    assert stop not in r.text
    assert r.finish_reason == "stop"
    assert r.completion_tokens < full.completion_tokens  # generation really ended early
    # A stop string that never appears changes nothing.
    assert m.chat(LONG, max_new_tokens=40, stop=["\u2603never"]).text == full.text


def test_stop_string_in_stream(m):
    full = m.chat(LONG, max_new_tokens=40).text
    stop = ascii_stop(full)
    pieces = list(m.stream_chat(LONG, max_new_tokens=40, stop=[stop]))
    assert "".join(pieces) == full[: full.find(stop)]
    assert all(stop not in p for p in pieces)


def test_earliest_of_several_stop_strings_wins(m):
    full = m.chat(LONG, max_new_tokens=40).text
    first = ascii_stop(full)
    later = ascii_stop(full, min_at=full.find(first) + 3)
    r = m.chat(LONG, max_new_tokens=40, stop=[later, first])
    assert r.text == full[: full.find(first)]


def test_stop_filter_split_across_pieces():
    f = StopFilter(["STOP"])
    assert f.feed("hello ST") == "hello "  # "ST" might start the stop string: held back
    assert f.feed("O") == ""
    assert f.feed("P and more") == ""
    assert f.stopped
    assert f.feed("later") == "" and f.flush() == ""


def test_stop_filter_releases_a_false_alarm():
    f = StopFilter(["STOP"])
    assert f.feed("a S") == "a "
    assert f.feed("T") == ""
    assert f.feed("ART") == "START"  # "START" cannot become "STOP": all released
    assert f.feed(" ST") == " "
    assert f.feed("!") == "ST!"
    assert f.feed(" STO") == " "
    assert f.flush() == "STO"  # generation ended: what was held is text after all
    assert not f.stopped


def test_stop_filter_stop_inside_one_piece_and_several_stops():
    f = StopFilter(["</s>", "\nUser:"])
    assert f.feed("answer\nUs") == "answer"
    assert f.feed("er: next") == ""
    assert f.stopped
    g = StopFilter(["bb", "a"])
    assert g.feed("xxbba") == "xx"
    assert StopFilter([""]).feed("text") == "text"  # empty stop strings are ignored


# --- input checks -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("messages", "error", "match"),
    [
        ([], ValueError, "non-empty"),
        (None, ValueError, "non-empty"),
        ([{"content": "hi"}], ValueError, r"messages\[0\].*'role'"),
        ([{"role": "user"}], ValueError, r"messages\[0\].*'content'"),
        (
            [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}],
            ValueError,
            r"messages\[1\].*unknown role 'robot'",
        ),
        ([{"role": "user", "content": 5}], TypeError, r"messages\[0\]\['content'\] must be a string"),
        (["hi"], ValueError, r"messages\[0\]"),
    ],
)
def test_malformed_messages(m, messages, error, match):
    with pytest.raises(error, match=match):
        m.chat(messages)
    with pytest.raises(error, match=match):
        m.stream_chat(messages)  # checked at the call, before iteration starts


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": -3}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_bad_generation_settings(m, kwargs, match):
    with pytest.raises(ValueError, match=match):
        m.chat(LONG, **kwargs)
    with pytest.raises(ValueError, match=match):
        m.stream_chat(LONG, **kwargs)


def test_sampling_runs(m):
    torch.manual_seed(0)
    r = m.chat(LONG, max_new_tokens=6, temperature=1.0, top_p=0.9)
    assert r.completion_tokens <= 6 and isinstance(r.text, str)


def test_embedding_mode_refuses_chat_and_has_no_lm_head(tiny_llama_dir):
    e = EgtLM(str(tiny_llama_dir), mode="embedding", torch_dtype="float32")
    assert not hasattr(e.model, "lm_head")
    with pytest.raises(RuntimeError, match="embedding"):
        e.chat(LONG)
    with pytest.raises(RuntimeError, match="embedding"):
        e.stream_chat(LONG)
    assert e.encode("fox").shape == (64,)


def test_no_chat_template_is_a_clear_error(m, monkeypatch):
    monkeypatch.setattr(m.tokenizer, "chat_template", None)
    with pytest.raises(ValueError, match="chat template"):
        m.chat(LONG)


def test_a_prompt_past_the_context_is_refused_at_the_call(m):
    limit = m.model.config.max_position_embeddings  # 512 for the tiny models
    long = [{"role": "user", "content": "word " * (2 * limit)}]
    for call in (
        lambda: m.chat(long, max_new_tokens=4),
        lambda: m.stream_chat(long, max_new_tokens=4),  # before the first piece is asked for
        lambda: m.answer("What is it?", documents=["word " * (2 * limit)], max_new_tokens=4),
    ):
        with pytest.raises(ValueError, match=f"context holds {limit}"):
            call()


def test_max_new_tokens_is_capped_to_the_room_left(m):
    limit = m.model.config.max_position_embeddings

    def tokens(n: int) -> int:
        return len(prompt_ids(m, [{"role": "user", "content": "word " * n}]))

    per_word = (tokens(101) - tokens(1)) / 100
    n = int((limit - 20 - tokens(0)) / per_word)
    words = "word " * n
    prompt_tokens = tokens(n)
    room = limit - prompt_tokens
    assert 0 < room < 64
    with pytest.warns(UserWarning, match=f"generating at most {room} tokens"):
        r = m.chat([{"role": "user", "content": words}], max_new_tokens=64)
    assert r.prompt_tokens == prompt_tokens and r.completion_tokens <= room
