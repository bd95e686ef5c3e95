import numpy as np

from ivrbot.audio.concealment import Concealer


def test_first_loss_fades_the_last_frame_out_then_silence() -> None:
    c = Concealer()
    good = (np.ones(160) * 1000).astype("<i2").tobytes()
    c.good(good)
    faded = np.frombuffer(c.lost(), dtype="<i2")
    assert faded[0] == 1000 and faded[-1] == 0 and np.all(np.diff(faded) <= 0)
    assert c.lost() == bytes(320)  # a second consecutive loss is silent


def test_loss_after_silence_is_silence_of_one_frame() -> None:
    c = Concealer()
    assert c.lost() == bytes(320)
    c.good(b"\x01\x00" * 240)
    c.silence()
    assert c.lost() == bytes(320)
