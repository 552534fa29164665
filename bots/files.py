"""Files Switchboard writes under its data dir are owner-only: folders 0700, files 0600.

They hold conversations (personal data), staff accounts with password hashes and sessions, and
exported training data. Modes are set when a file or folder is created, whatever the process umask
(a container's is often 022: world-readable), so another account on the host, or a sidecar with the
volume mounted, cannot read them. Existing files and folders are left as they are (an operator's
mount point or an older file may be owned by someone else). SQLite creates a database's ``-wal``
and ``-shm`` files with the database file's mode, so creating the database file 0600 covers them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` and any missing parent created 0700; existing folders are not changed."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process created it meanwhile
            folder.mkdir(mode=DIR_MODE)
            os.chmod(folder, DIR_MODE)  # the umask may have taken bits off: exactly 0700
    return path


def private_file(path: Path) -> Path:
    """An empty file at ``path`` created 0600 if there is none (its folder with ``private_dir``)."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    return path


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a reader sees the old file or the new one, never half of
    one). The result is 0600 even when it replaces a file: the new content is a new file."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
