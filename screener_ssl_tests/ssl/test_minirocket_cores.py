"""MiniRocket's transform runs on every core by default (its features do not depend on the count)."""

from __future__ import annotations

import os

import numpy as np

from screener_ssl.ssl.minirocket import MiniRocketConfig, MiniRocketEncoder


def test_the_transform_uses_every_core_by_default_and_features_do_not_depend_on_it():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 16, 3)).astype(np.float32)
    observed = np.ones_like(x, dtype=bool)
    assert MiniRocketConfig().n_jobs == -1
    every = MiniRocketEncoder(MiniRocketConfig(n_kernels=84), 3).fit_prepared(x, observed)
    one = MiniRocketEncoder(MiniRocketConfig(n_kernels=84, n_jobs=1), 3).fit_prepared(x, observed)
    import numba

    # -1 resolves to every core this process may run numba threads on
    assert every.transform_.n_jobs == min(os.cpu_count(), numba.config.NUMBA_NUM_THREADS) and one.transform_.n_jobs == 1
    np.testing.assert_array_equal(every.encode_prepared(x, observed), one.encode_prepared(x, observed))
