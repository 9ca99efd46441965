"""The built site must not show the build machine's paths: a check that ``make docs`` runs after every build.

A page that prints ``/home/me/scratchnet/...`` or ``.../site-packages/...``
tells a reader about the machine that built it, not about scratchnet, and the
path is wrong on theirs. ``docs/conf.py`` calls :func:`leaks` when the build
finishes and fails the build on any; ``tests/test_docs.py`` plants a leak to
show that the check finds it.
"""
from __future__ import annotations

from pathlib import Path


def leaks(site, root):
    """``[(page, leaked text)]`` for every HTML page under ``site`` that shows a path of ``root``'s machine.

    ``root`` is the checkout; its parent folder, and any ``site-packages/``,
    count as the build machine's. The source listings (``_modules/``) are
    left out: the paths in them are the package's own module names.
    """
    site, found = Path(site), []
    needles = (str(Path(root).resolve().parent) + "/", "site-packages/")
    for page in sorted(site.rglob("*.html")):
        if "_modules" in page.relative_to(site).parts:
            continue
        text = page.read_text(encoding="utf-8", errors="replace")
        found += [(str(page.relative_to(site)), needle) for needle in needles if needle in text]
    return found
