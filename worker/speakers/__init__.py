"""Speaker verification: encoders, voiceprint store, streaming tracker, REST API.

Nothing here imports torch at module level: a worker started with
``--encoder none`` stays VAD-only and small. The encoder (and torch) load in
the speaker engine's thread, after the worker already serves frames.
"""
