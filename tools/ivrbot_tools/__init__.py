"""The developer harness: a real SIP/RTP caller, the local stack, the demo, the latency benchmark.

Nothing here ships in an image; `ivrbot stack|demo|bench` need the `[dev]` extra.
"""
