"""The performance benchmark against torchdiffeq and torchode (issue 8): ``python -m scripts.bench``.

harness: timing and NFE counting; adapters: how each library is called; problems: the fields and
inputs; cases and memory: the measurements; targets (+ targets.yaml): the issue's goals; report: the
files written; config: the sizes; __main__: the command line.
"""
