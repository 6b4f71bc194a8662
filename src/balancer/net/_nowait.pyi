# net/_nowait.c: socket calls whose "nothing now" is a value, not BlockingIOError.
from typing import Any

# (descriptor, peer address) from a non-blocking listening descriptor, None when none waits.
def accept(fd: int, /) -> tuple[int, Any] | None: ...

# Bytes read and discarded from a connected descriptor (0: none waited), -1 at its end.
def drain(fd: int, /) -> int: ...
