"""Errors meant for people: the CLI prints their message as one sentence, without a traceback."""

from __future__ import annotations


class UserError(RuntimeError):
    """A problem the user can fix (missing checkpoint, unreachable server, bad export file...).

    The message must name the file/item/setting and the problem, and never contain a secret.
    """


class ConfigError(UserError):
    """A setting in params.yaml or the environment is missing or invalid."""


# What to do about an operating-system error, by errno (the message names the path; this says the remedy).
_OS_REMEDIES: dict[str, str] = {
    "ENOSPC": "the disk is full: free space on it (or point paths in params.yaml to a larger disk) and rerun; "
              "finished items are kept",
    "EDQUOT": "the disk quota is exhausted: free space (or point paths in params.yaml elsewhere) and rerun; "
              "finished items are kept",
    "EROFS": "the file system is mounted read-only: remount it read-write or point paths in params.yaml to a "
             "writable folder, then rerun",
    "EACCES": "give this user write access to it (chmod/chown) or point paths in params.yaml to a folder you own, "
              "then rerun",
    "EPERM": "give this user write access to it (chmod/chown) or point paths in params.yaml to a folder you own, "
             "then rerun",
    "ENOENT": "check that the path exists (paths in params.yaml, or the file you named)",
    "ENOTDIR": "a file stands where a folder is expected: move it away or change paths in params.yaml",
    "EISDIR": "a folder stands where a file is expected: move it away or change paths in params.yaml",
    "EMFILE": "too many open files: raise `ulimit -n` or lower runner.workers",
    "ENFILE": "too many open files on this machine: lower runner.workers or retry later",
    "ENOMEM": "out of memory: lower runner.workers or ingest.max_pixels",
    "EIO": "the disk reported an I/O error: check the device (dmesg) before rerunning",
}


def describe_os_error(exc: OSError) -> str:
    """One sentence for an :class:`OSError`: the path, what went wrong and the remedy (never a traceback).

    ``OSError`` raised with a custom message and no errno (``FileNotFoundError("x: table not found")``) keeps its
    own message, which already names the file.
    """
    import errno as errno_mod

    if exc.errno is None or exc.strerror is None:
        return str(exc)
    name = errno_mod.errorcode.get(exc.errno, "")
    where = exc.filename if exc.filename is not None else "(a file this command writes; the OS did not say which)"
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    remedy = _OS_REMEDIES.get(name, "check the path and rerun")
    return f"{where}: {exc.strerror}{f' ({name})' if name else ''}; {remedy}"
