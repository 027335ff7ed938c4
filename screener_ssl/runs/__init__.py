"""The runs layer: the sweep file, and one run per (objective, variant) written by one run writer.

Above the library (data/, ssl/, probe/, scan/, tracking/), below defs/: it resolves a sweep
point once per partition and hands the library plain configs.
"""
