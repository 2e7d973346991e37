"""Headless training for napari-neuroseg models: ``python -m training <task> ...``."""

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line (see ``python -m training --help``)."""
    from training.cli import main as _main

    return _main(argv)
