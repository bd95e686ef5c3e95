"""The sans-IO parts of both servers: message classification, config merging, sentence splitting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivrbot.sidecars import piper_server as piper
from ivrbot.sidecars import vosk_server as vosk

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


def test_piper_frames_cover_the_audio_in_order() -> None:
    pcm = bytes(range(256)) * 40
    frames = list(piper.pcm_frames(pcm, 4410))
    assert b"".join(frames) == pcm and all(len(f) <= 4410 for f in frames)
