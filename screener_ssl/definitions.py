"""The one Definitions object, loaded from the ``defs`` folder (the ``dg`` layout).

Top-level assets live in ``defs/data``, ``defs/probe`` and ``defs/scan``; the sweep's
objective x variant assets, jobs, schedule, sensors and the resources come from
``defs/sweep_partitions.py`` and the executor from ``defs/execution.py``, each reading the
settings (``ScreenerSettings.from_env``: the ``SCREENER_SSL_*`` variables) when the folder is loaded.
"""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(project_root=Path(__file__).resolve().parent.parent)
