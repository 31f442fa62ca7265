"""The one place the version lives: pyproject reads it from here, manifests and reports import it from here.

Nothing imports the package root for it, so writing a manifest never triggers ``edgekit/__init__``'s lazy names.
"""

from __future__ import annotations

__version__ = "0.1.0"
