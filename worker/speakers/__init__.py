"""Speaker verification: encoders, voiceprint store, streaming tracker, REST API.

A worker never imports torch: it serves the encoders as ONNX graphs on
onnxruntime. The modules here are what a worker runs:

- encoders.py: the Encoder protocol, where the weights are, why none loaded
- ge2e_features.py: GE2E's mel frames and partial utterances in numpy
- graphs.py: the ONNX graphs and their cache under <model-dir>/onnx
- loader.py: finds (or has the export tools make) the configured graph
- engine.py: the thread that loads the encoder and embeds batches of windows
- store.py: voiceprints in SQLite, shared by all workers
- tracker.py: streaming decisions per account
- service.py, routes.py: the REST API

export/ holds everything that imports torch (the torch encoders and the
export, ``python -m worker.export``); no module above imports it.
The encoder loads in the speaker engine's thread, after the worker already
serves frames.
"""
