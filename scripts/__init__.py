"""Scripts of the reproduction suite; a package only so that ``python -m scripts.bench`` resolves here."""
