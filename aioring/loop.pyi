import asyncio
from typing import Any

class Loop(asyncio.AbstractEventLoop):
    slow_callback_duration: float
    def __init__(self) -> None: ...
    def _ring_info(self) -> dict[str, Any]: ...
