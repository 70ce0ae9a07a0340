class IoUringUnavailable(OSError): ...

class Ring:
    def __init__(
        self,
        entries: int = ...,
        cq_entries: int = ...,
        *,
        defer_taskrun: bool = ...,
        no_sqarray: bool = ...,
        start_disabled: bool = ...,
    ) -> None: ...
    def close(self) -> None: ...

def probe_kernel() -> tuple[int, int, set[int]]: ...
