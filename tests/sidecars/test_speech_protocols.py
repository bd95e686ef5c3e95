"""The sans-IO parts of both servers: message classification, config merging, sentence splitting."""

from __future__ import annotations

import array
import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivrbot_sidecars import piper_protocol as piper
from ivrbot_sidecars import vosk_protocol as vosk
from ivrbot_sidecars.text_segments import speakable, split_phonemes, split_segments

DEFAULT = vosk.RecognizerConfig()


def test_vosk_eof_and_reset_exact_strings_and_json_equal_variants() -> None:
    assert vosk.parse_message('{"eof" : 1}', DEFAULT) == vosk.EndMessage(close=True)
    assert vosk.parse_message('{"reset" : 1}', DEFAULT) == vosk.EndMessage(close=False)
    assert vosk.parse_message('{"eof":1}', DEFAULT) == vosk.EndMessage(close=True)
    assert vosk.parse_message(b'{"eof" : 1}', DEFAULT) == vosk.EndMessage(close=True)
    assert vosk.parse_message(b"\x00\x00" * 10, DEFAULT) == vosk.AudioMessage(b"\x00\x00" * 10)


def test_vosk_config_merges_over_the_defaults() -> None:
    msg = vosk.parse_message('{"config": {"sample_rate": 16000, "words": 0, "phrase_list": ["네", "아니요"]}}',
                             DEFAULT)
    assert msg == vosk.ConfigMessage(vosk.RecognizerConfig(16000.0, False, 0, ("네", "아니요")))
    assert isinstance(msg, vosk.ConfigMessage)
    msg2 = vosk.parse_message('{"config": {"max_alternatives": 3}}', msg.config)
    assert msg2 == vosk.ConfigMessage(vosk.RecognizerConfig(16000.0, False, 3, ("네", "아니요")))


@pytest.mark.parametrize("cfg", [
    '"x"', '{"sample_rate": true}', '{"sample_rate": 0}', '{"sample_rate": 1e9}', '{"words": "yes"}',
    '{"max_alternatives": -1}', '{"max_alternatives": 1.5}', '{"phrase_list": "네"}', '{"phrase_list": [1]}',
])
def test_vosk_bad_config_is_refused_with_a_reason(cfg: str) -> None:
    msg = vosk.parse_message('{"config": ' + cfg + "}", DEFAULT)
    assert isinstance(msg, vosk.BadMessage) and msg.reason.startswith("config")


@given(st.text())
def test_vosk_any_text_frame_is_classified_never_raises(text: str) -> None:
    assert isinstance(vosk.parse_message(text, DEFAULT),
                      vosk.ConfigMessage | vosk.EndMessage | vosk.BadMessage)


def test_piper_messages() -> None:
    assert piper.parse_message('{"type": "speak", "id": "a", "text": "Hi."}') == piper.Speak("a", "Hi.", True)
    assert piper.parse_message('{"type": "speak", "id": 3, "text": "Hi", "flush": false}') == piper.Speak(
        3, "Hi", False)
    assert piper.parse_message('{"type": "cancel", "id": "a"}') == piper.Cancel("a")
    bad = piper.parse_message('{"type": "speak", "id": "a"}')
    assert isinstance(bad, piper.BadMessage) and bad.id == "a"
    assert isinstance(piper.parse_message(b"{}"), piper.BadMessage)


@given(st.one_of(st.text(), st.binary()))
def test_piper_any_frame_is_classified_never_raises(frame: str | bytes) -> None:
    assert isinstance(piper.parse_message(frame), piper.Speak | piper.Cancel | piper.BadMessage)


@pytest.mark.parametrize(("buffer", "complete", "tail"), [
    ("Hello there", "", "Hello there"),
    ("Hello there. How are", "Hello there. ", "How are"),
    ('He said "stop." Then', 'He said "stop." ', "Then"),
    ("Pi is 3.14 today", "", "Pi is 3.14 today"),
    ("One! Two? Three", "One! Two? ", "Three"),
    ("line one\nline two", "line one\n", "line two"),
    ("Done.", "", "Done."),
])
def test_piper_sentence_split(buffer: str, complete: str, tail: str) -> None:
    assert piper.split_complete(buffer) == (complete, tail)


@given(st.text())
def test_piper_split_loses_no_text(buffer: str) -> None:
    complete, tail = piper.split_complete(buffer)
    assert complete + tail == buffer


@given(
    st.lists(st.integers(-63, 63), max_size=400),
    st.lists(st.integers(-32768, 32767), max_size=400),
)
def test_piper_leading_quiet_is_trimmed_to_one_block_and_nothing_after_it(
    quiet: list[int], rest: list[int]
) -> None:
    """Only the quiet before the first audible block goes; everything from one block before it stays."""
    rate, block = 22050, 110  # 5 ms blocks
    pcm = array.array("h", quiet + rest).tobytes()
    out = piper.trim_leading_silence(pcm, rate)
    assert pcm.endswith(out)
    loud = [i for i, v in enumerate(quiet + rest) if abs(v) >= piper.LEAD_PEAK]
    if not loud:
        assert out == pcm  # all quiet: kept, not dropped
        return
    first_block = loud[0] // block
    assert len(pcm) - len(out) == max(0, first_block - 1) * block * 2


def test_piper_frames_cover_the_audio_in_order() -> None:
    pcm = bytes(range(256)) * 40
    frames = list(piper.pcm_frames(pcm, 4410))
    assert b"".join(frames) == pcm and all(len(f) <= 4410 for f in frames)


# --- Piper: cutting run-on text into bounded segments ----------------------------------------------

_PAUSE = ",;:，；：、"
_CLOSERS = "\"'”’)]"
_WORD = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=12)
# Text like an LLM's run-on answer: words, clause marks, dashes, odd whitespace, the odd sentence end,
# and now and then one enormous "word" that only a hard cut can split.
_RUN_ON = st.lists(
    st.one_of(
        _WORD, _WORD, _WORD,
        st.sampled_from([" ", " ", " ", ", ", "; ", ": ", " - ", " -- ", "—", " – ", ". ", "? ", "\n", "\t", "  ",
                         "\u00a0", "、", '," ']),
        st.text(st.characters(categories=["L"]), min_size=30, max_size=400),
    ),
    max_size=80,
).map("".join)


def _ends_at_pause(segment: str) -> bool:
    core = segment.rstrip(_CLOSERS)
    return bool(core) and (core[-1] in _PAUSE + ".!?。！？—–" or core.endswith("-"))


def _word_ends(segment: str, after: str) -> bool:
    """Whether ``segment`` holds a character followed by whitespace (a place a space cut could go)."""
    s = segment + after[:1]
    return any(not a.isspace() and b.isspace() for a, b in itertools.pairwise(s))


@given(st.one_of(_RUN_ON, st.text()), st.integers(1, 120))
def test_piper_segments_are_bounded_lossless_and_cut_at_pauses_first(text: str, cap: int) -> None:
    segments = split_segments(text, cap)
    assert "".join(segments) == text  # nothing lost, added or reordered
    assert all(1 <= len(s) <= cap for s in segments)
    for seg, nxt in itertools.pairwise(segments):
        assert len(seg) == cap or _ends_at_pause(seg) or nxt[0].isspace(), "cut short for no reason"
        # A clause mark followed by whitespace inside the segment: the cut is at such a mark (or a sentence end).
        marked = any(c in _PAUSE and (seg + nxt[:1])[i + 1 :][:1].isspace()
                     for i, c in enumerate(seg.rstrip(_CLOSERS)))
        if marked:
            assert _ends_at_pause(seg), (seg, nxt)
        # ...and at the last one that fits: no clause mark + whitespace in what the cap still allowed.
        if _ends_at_pause(seg) and seg.rstrip(_CLOSERS)[-1] in _PAUSE:
            room = nxt[: cap - len(seg)]
            assert not any(c in _PAUSE and nxt[i + 1 : i + 2].isspace() for i, c in enumerate(room)), (seg, nxt)
        # Only a segment without any word end in it is cut inside a word.
        if not (nxt[0].isspace() or _ends_at_pause(seg)):
            assert not _word_ends(seg, ""), (seg, nxt)


def test_piper_segment_cut_examples() -> None:
    assert split_segments("Short enough.", 300) == ["Short enough."]
    assert split_segments("one, two three four", 12) == ["one,", " two three", " four"]
    assert split_segments("first clause; second clause", 20) == ["first clause;", " second clause"]
    assert split_segments("abc — def ghi", 8) == ["abc —", " def ghi"]
    assert split_segments("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


@given(st.lists(st.tuples(_RUN_ON, st.booleans()), min_size=1, max_size=8), st.integers(20, 200))
def test_piper_utterance_queues_only_bounded_segments_and_keeps_all_text(
    parts: list[tuple[str, bool]], cap: int
) -> None:
    """Streamed text without sentence ends is cut as it arrives: the tail never outgrows a segment."""
    utt = piper.Utterance("u", cap)
    sent, queued = "", []
    for text, flush in [*parts, ("", True)]:
        if utt.flushed:
            break
        utt.add(text, flush)
        sent += text
        assert len(utt.tail) <= cap
        while not utt.segments.empty():
            seg = utt.segments.get_nowait()
            if seg is not None:
                utt.taken(seg)
                queued.append(seg)
                assert len(seg) <= cap and seg.strip()
        assert utt.pending == len(utt.tail)
    assert utt.flushed and utt.pending == 0

    def squash(s: str) -> str:
        return "".join(s.split())

    assert squash("".join(queued)) == squash(sent)


_PHONEMES = st.lists(st.one_of(st.sampled_from([" ", " ", ",", ";", "—", "ˈ", "ə", "n", "t", "a"]),
                                st.characters(categories=["L"])), max_size=600)


@given(_PHONEMES, st.integers(1, 120))
def test_piper_phoneme_passes_are_bounded_lossless_and_cut_at_word_breaks(phonemes: list[str], cap: int) -> None:
    parts = split_phonemes(phonemes, cap)
    assert [p for part in parts for p in part] == phonemes
    assert all(1 <= len(part) <= cap for part in parts)
    for part in parts[:-1]:
        if " " in part:
            assert part[-1] == " ", part  # a word break was available: the cut is at one
        else:
            assert len(part) == cap
        pause_breaks = [i for i in range(2, len(part) + 1) if part[i - 1] == " " and part[i - 2] in ",;:—–"]
        if pause_breaks:
            assert pause_breaks[-1] == len(part), part  # ...after the last pause, when there is one


def test_piper_control_characters_become_spaces() -> None:
    assert speakable("a\x00b\x07c\x7fd\te\nf\rg") == "a b c d\te\nf\rg"


# --- Both servers: lone surrogates, deep nesting, huge numbers --------------------------------------

@pytest.mark.parametrize("frame", [
    '{"type":"speak","id":"\\ud800","text":"hi"}',
    '{"type":"cancel","id":"a\\udfffb"}',
    '{"type":"speak","id":' + "9" * 40 + ',"text":"hi"}',
    '{"type":"speak","id":"' + "i" * 300 + '","text":"hi"}',
    '{"type":"speak","id":1e400,"text":"hi"}',
    '{"type":"speak","id":"a","text":"hi \\udc00 there"}',
    '{"type":"speak","id":"a","text":"hi","flush":NaN}',
    '{"type":"\\ud800","id":"a"}',
    "[" * 100000,
    '{"a":' * 100000,
])
def test_piper_hostile_frames_are_bad_messages_that_can_be_sent(frame: str) -> None:
    msg = piper.parse_message(frame)
    assert isinstance(msg, piper.BadMessage)
    reply = {"type": "error", "message": msg.reason} | ({"id": msg.id} if msg.id is not None else {})
    json.dumps(reply, ensure_ascii=False).encode("utf-8")  # what the server sends must be sendable
    assert len(msg.reason) < 200


@pytest.mark.parametrize("cfg", [
    '{"sample_rate": 7999.5}', '{"sample_rate": "7999.5"}', '{"sample_rate": 7999}', '{"sample_rate": 48001}',
    '{"sample_rate": "16000x"}', '{"sample_rate": "١٦٠٠٠"}', '{"sample_rate": " 16000"}',
    '{"sample_rate": 1e400}', '{"sample_rate": NaN}', '{"sample_rate": ' + "9" * 400 + "}",
    '{"sample_rate": null}', '{"sample_rate": [16000]}', '{"words": 2}', '{"words": "1"}',
    '{"max_alternatives": 1e9}', '{"max_alternatives": 101}', '{"phrase_list": ["\\ud800"]}',
    '{"phrase_list": [["네"]]}', '{"phrase_list": ["' + "가" * 1001 + '"]}',
])
def test_vosk_config_values_kaldi_cannot_take_are_refused(cfg: str) -> None:
    msg = vosk.parse_message('{"config": ' + cfg + "}", DEFAULT)
    assert isinstance(msg, vosk.BadMessage) and msg.reason.startswith("config"), msg
    vosk.error_reply(msg.reason).encode("utf-8")


@pytest.mark.parametrize(("value", "rate"), [
    (16000, 16000.0), (16000.0, 16000.0), ("16000", 16000.0), ("8000", 8000.0), (48000, 48000.0), (44100, 44100.0),
])
def test_vosk_whole_sample_rates_are_accepted_as_upstream_does(value: object, rate: float) -> None:
    msg = vosk.parse_message(json.dumps({"config": {"sample_rate": value}}), DEFAULT)
    assert msg == vosk.ConfigMessage(vosk.RecognizerConfig(rate))


@pytest.mark.parametrize("frame", ["[" * 100000, '{"config":' * 100000])
def test_vosk_deeply_nested_json_is_a_bad_message(frame: str) -> None:
    assert isinstance(vosk.parse_message(frame, DEFAULT), vosk.BadMessage)


_JSON_SCALAR = st.one_of(
    # aimed at what broke: fractional and out-of-range rates, numbers in strings, non-ASCII digits
    st.none(), st.booleans(), st.integers(), st.floats(), st.floats(7000, 50000), st.integers(-2, 200000),
    st.integers(-10, 10**6).map(str), st.floats(7000, 50000).map(str),
    st.text(st.sampled_from("0123456789.-+e ٥²")), st.text(st.characters(categories=["Cs", "L", "N"]), max_size=5),
)
_JSON = st.recursive(_JSON_SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner),
                     max_leaves=8)


@given(st.dictionaries(st.sampled_from(["sample_rate", "words", "max_alternatives", "phrase_list", "other"]), _JSON))
def test_vosk_every_accepted_config_is_safe_for_kaldi(cfg: dict[str, object]) -> None:
    """Whatever a client sends, only values Kaldi takes without aborting get through."""
    msg = vosk.parse_message(json.dumps({"config": cfg}), DEFAULT)
    if isinstance(msg, vosk.BadMessage):
        assert msg.reason.startswith("config")
        return
    assert isinstance(msg, vosk.ConfigMessage)
    c = msg.config
    assert c.sample_rate.is_integer() and vosk.MIN_RATE <= c.sample_rate <= vosk.MAX_RATE
    assert isinstance(c.words, bool)
    assert type(c.max_alternatives) is int and 0 <= c.max_alternatives <= vosk.MAX_ALTERNATIVES
    if c.phrase_list is not None:
        json.dumps(list(c.phrase_list), ensure_ascii=False).encode("utf-8")
