"""RTP media layer: sans-IO packet codec, jitter buffer, DTMF, packetizer, and the asyncio session."""
