"""Pipecat services for the local sidecars: Vosk STT, llama-server LLM, Piper TTS."""
