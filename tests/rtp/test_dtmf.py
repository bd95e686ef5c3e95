import pytest

from ivrbot.rtp.dtmf import DtmfDecoder, DtmfParseError, encode_event, key_press_payloads, parse_event


def test_one_press_with_end_retransmissions_is_one_key() -> None:
    dec = DtmfDecoder()
    keys = [dec.feed(1, 8000, p) for _, p in key_press_payloads("5")]
    assert [k for k in keys if k] == ["5"]
    assert dec.duplicates == len(keys) - 1


def test_press_whose_start_was_lost_still_counts_once() -> None:
    dec = DtmfDecoder()
    payloads = [p for _, p in key_press_payloads("#")][-3:]  # only the three end packets arrive
    assert [dec.feed(1, 100, p) for p in payloads] == ["#", None, None]


def test_same_key_twice_is_two_presses() -> None:
    dec = DtmfDecoder()
    keys = [dec.feed(1, ts, p) for ts in (1000, 3000) for _, p in key_press_payloads("1")]
    assert [k for k in keys if k] == ["1", "1"]


def test_encoder_fields_and_marker() -> None:
    payloads = key_press_payloads("*", packets=3)
    assert [m for m, _ in payloads] == [True] + [False] * 5
    ev = parse_event(payloads[-1][1])
    assert (ev.key, ev.end, ev.duration, ev.volume) == ("*", True, 480, 10)
    assert not parse_event(payloads[0][1]).end


def test_malformed_events_are_counted_not_raised() -> None:
    dec = DtmfDecoder()
    assert dec.feed(1, 1, b"\x01") is None
    assert dec.feed(1, 2, bytes([200, 0, 0, 0])) is None
    assert dec.malformed == 2
    with pytest.raises(DtmfParseError):
        parse_event(b"")
    with pytest.raises(ValueError):
        encode_event("x", 160)
