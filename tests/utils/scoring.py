"""Progress hooks for the batch-scoring tests: they see each chunk once it is safely on disk."""
from __future__ import annotations

from batch_scoring import Chunk, LogProgress


class StopAfter(LogProgress):
    """The progress hook, interrupting the run as Ctrl-C would once ``chunks`` chunks are on disk."""

    def __init__(self, chunks: int, total: int, done: int) -> None:
        super().__init__(total, done)
        self.chunks = chunks

    def advance(self, chunk: Chunk) -> None:
        super().advance(chunk)
        self.chunks -= 1
        if self.chunks == 0:
            raise KeyboardInterrupt
