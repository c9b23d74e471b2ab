"""Tools around the engine: the flash crowd (``crowd.py``), the demo's history, the auditor."""
