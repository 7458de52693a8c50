"""Deliberate bugs and the run that proves the default tier catches them (`run.py`)."""
