"""Network providers, one module per wire protocol: the OpenAI-compatible HTTP
APIs of the pipeline's stages (openai_stt, openai_tts, openai_chat, with sse,
errors and _http) and the duplex backends' realtime wire formats."""
