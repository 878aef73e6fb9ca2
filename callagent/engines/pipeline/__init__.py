"""The modular pipeline engine: VAD -> end of turn -> STT -> flow -> TTS, with barge-in."""
