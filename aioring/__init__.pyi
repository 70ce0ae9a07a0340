import asyncio
import sys
from typing import Any, Callable, Coroutine, TypeVar

from aioring._ring.ring import IoUringUnavailable as IoUringUnavailable
from aioring.loop import Loop as Loop
from aioring.files import open as open

_T = TypeVar("_T")

__version__: str

def new_event_loop() -> Loop: ...
def run(
    main: Coroutine[Any, Any, _T],
    *,
    loop_factory: Callable[[], Loop] | None = ...,
    debug: bool | None = ...,
    **run_kwargs: Any,
) -> _T: ...

if sys.version_info < (3, 16):
    class EventLoopPolicy(asyncio.DefaultEventLoopPolicy): ...
    def install() -> None: ...
