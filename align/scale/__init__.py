"""Scale out on Dask: per-report analyses as tasks (reports.py) and a collection spread over GPU
workers (collect.py), on a local cluster by default or on one named by ``--scheduler`` /
``$ALIGN_SCHEDULER`` (cluster.py)."""
