"""Speaker identification as a worker serves it: encoders, streaming
embeddings, scoring and the streaming tracker, and the speaker API's service.
No module here imports Flask, a database driver or torch: the REST routes are
worker/routes/speakers.py, the voiceprints live in worker/storage/, and the
export tools that make the ONNX graphs (``python -m worker.export``) are
worker/export/.

- encoders.py: the Encoder protocol, where the weights are, why none loaded
- ge2e_features.py: GE2E's mel frames and partial utterances in numpy
- graphs.py: the ONNX graphs and their cache under <model-dir>/onnx
- loader.py: finds (or has the export tools make) the configured graph
- engine.py: the thread that loads the encoder and embeds batches of windows
- streaming.py: an account's speech as its encoder sees it while it streams
- scoring.py: the decision, and each account's voiceprints cached
- tracker.py: streaming decisions per account
- service.py: what the REST API does (enroll, verify, embed, compare, settings)

The encoder loads in the speaker engine's thread, after the worker already
serves frames.
"""
