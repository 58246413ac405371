"""Developer scripts of the Herald workspace (run them as ``python -m scripts.NAME``)."""
