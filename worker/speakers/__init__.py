"""Speaker verification: encoders, voiceprint store, streaming tracker, REST API.

A worker never imports torch: it serves the encoders as ONNX graphs
(onnx_encoders.py) and runs torch only in the export subprocess that makes a
missing graph (export.py). The encoder loads in the speaker engine's thread,
after the worker already serves frames.
"""
