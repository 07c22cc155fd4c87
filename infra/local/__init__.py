"""The local stack: SeaweedFS S3 and an MLflow server on loopback, for development, tests and benchmarks.

``stack.py`` (LocalStack), ``__main__.py`` (``python -m infra.local up|status|down``), ``state.py`` (the stack
folder's files), ``processes.py``, ``network.py``, ``s3_server.py``, ``errors.py``. See ``README.md`` here.
"""
