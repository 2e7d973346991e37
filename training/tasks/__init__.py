"""The training tasks of ``python -m training``, one module each."""
