"""The OpenAI-compatible realtime endpoint, /v1/realtime."""
