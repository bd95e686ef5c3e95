"""A real SIP/RTP caller (UAC) for the demo, the benchmark and end-to-end tests.

It shares no SIP, SDP or RTP code with the bot (`wire.py` is its own), so the bot is checked
against an independent implementation; only the G.711 codec comes from `ivrbot.audio`.
"""

from ivrbot_tools.caller.call import CallFailed, SipCaller
from ivrbot_tools.caller.record import AUDIBLE_LEVEL, CallRecord, HeardPacket

__all__ = ["AUDIBLE_LEVEL", "CallFailed", "CallRecord", "HeardPacket", "SipCaller"]
