"""Nothing under this folder is a test module: the shim, the call patterns and any external copies of
third-party programs are run by tests/test_torchdiffeq_programs.py in subprocesses."""

collect_ignore_glob = ["*.py", "*/*", "external"]
