"""Fetching a file over HTTP with a progress bar; offline, one clear error that says where to put the file."""

import os
import urllib.error
import urllib.request

from gptkit.cli import progress


def download(url, path):
    """Fetch url to path through a temporary file, so that a failed download leaves nothing behind.
    Raises FileNotFoundError naming the file to put at `path` by hand when the internet cannot be reached."""
    tmp = path + ".part"
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f, progress(
            total=int(r.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True, desc=path
        ) as bar:
            while chunk := r.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        reason = getattr(e, "reason", e)
        raise FileNotFoundError(f"could not download {url} ({reason}); offline, put the file at {path}") from None
    os.replace(tmp, path)
