"""The identity book as the gateway sees it: loaded at start, reloaded when it changes."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from gateway.identity import IdentityBook, IdentityError

__all__ = ["BookWatcher"]

log = logging.getLogger(__name__)


class BookWatcher:
    """Holds the current ``IdentityBook``; ``refresh()`` reloads it if the file changed.

    A book that fails to load keeps the previous one in force (and says why in ``error``),
    so a half-written or broken file never locks every device out; the provisioning tool
    writes atomically anyway.
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._book: IdentityBook | None = None
        self._stamp: tuple[int, int, int] | None = None
        self.error: str | None = None
        self.refresh()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def book(self) -> IdentityBook | None:
        return self._book

    def refresh(self) -> bool:
        """Reload when the file's mtime, size or inode changed; True if a new book is in force."""
        try:
            st = os.stat(self._path)
        except OSError as exc:
            self.error = f"identity book {self._path}: {exc.strerror}"
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp == self._stamp:
                return False
            try:
                book = IdentityBook.load(self._path)
            except IdentityError as exc:
                self.error = str(exc)
                log.error("identity book not reloaded: %s", exc)
                self._stamp = stamp
                return False
            self._book, self._stamp, self.error = book, stamp, None
        log.info("identity book loaded: %d devices from %s", len(book), self._path)
        return True
