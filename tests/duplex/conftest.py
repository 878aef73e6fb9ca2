"""The realtime service fixture (create_app under uvicorn) shared with tests/realtime."""

from tests.realtime.conftest import realtime_service

__all__ = ["realtime_service"]
