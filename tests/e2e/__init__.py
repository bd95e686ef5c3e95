"""End-to-end tests: real `ivrbot serve` processes, real sipp and SIP/RTP callers, real sidecars."""
