"""Generated blocks of the docs: text between `<!-- NAME:start -->` and `<!-- NAME:end -->`
markers, replaced in place by the scripts that measure them (imported, not run)."""

import os
import stat
import tempfile


def markers(name):
    """The start and end markers of block NAME."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def check_block(path, name):
    """Exits with a message unless PATH holds exactly one well-ordered block NAME."""
    start, end = markers(name)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise SystemExit(f"{path} must contain exactly one {start} ... {end} block")
    return text


def replace_block(path, name, body):
    """Replaces block NAME of PATH by BODY, atomically: the new text goes to a temporary file in
    the same folder, renamed over PATH, so a reader never sees half a file."""
    text = check_block(path, name)
    start, end = markers(name)
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{body.strip()}\n{end}{tail}"
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new)
        # mkstemp creates the file readable by its owner only: keep the doc's own permissions.
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
