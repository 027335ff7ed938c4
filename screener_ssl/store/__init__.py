"""The ground floor: atomic writes, run directories and stable fingerprints.

Every layer above writes through these; this package imports nothing else of screener_ssl.
"""
