"""Embedded offline speech stages: VAD, language models, STT and TTS."""
