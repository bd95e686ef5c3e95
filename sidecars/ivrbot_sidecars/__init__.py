"""The bot pod's speech sidecars: the Vosk and Piper WebSocket servers, llama-server, and where their models live."""
