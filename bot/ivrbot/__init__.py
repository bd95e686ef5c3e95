"""On-prem IVR voice bot: SIP/RTP endpoint and Pipecat pipeline."""
