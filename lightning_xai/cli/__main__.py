"""``python -m lightning_xai.cli``: the ``lightning-xai`` command (see :func:`lightning_xai.cli.main`)."""

from lightning_xai.cli import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
