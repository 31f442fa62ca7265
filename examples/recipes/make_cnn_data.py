"""Writes ``data/digits.npy``, the CNN recipe's calibration data: 120 of scikit-learn's digits images, [0, 1].

python examples/recipes/make_cnn_data.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

images = load_digits().images[:120].astype(np.float32)[:, None] / 16.0  # [120, 1, 8, 8]
np.save(Path(__file__).parent / "data" / "digits.npy", images)
