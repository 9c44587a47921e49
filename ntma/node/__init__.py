"""The NTM node: its runner (`run.py`) and what the adapter shares with it (`lifecycle.py`)."""
