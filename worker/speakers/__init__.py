"""Speaker identification as a worker serves it: encoders, the speaker
tracker's windows and decoder, scoring, and the speaker API's service.
No module here imports Flask, a database driver or torch: the REST routes are
worker/routes/speakers.py, the voiceprints live in worker/storage/, and the
export tools that make the ONNX graphs (``python -m worker.export``) are
worker/export/.

- encoders.py: the Encoder protocol, where the weights are, why none loaded
- ge2e_features.py: GE2E's mel frames and partial utterances in numpy
- graphs.py: the ONNX graphs and their cache under <model-dir>/onnx
- loader.py: finds (or has the export tools make) the configured graph
- engine.py: the thread that loads the encoder and embeds batches of windows
- windows.py: an account's voiced speech cut into the tracker's windows (1 s, every 0.2 s)
- hmm.py: how a window's scores become evidence, and how likely a turn changes
- decoder.py: forward filtering (immediate labels) and fixed-lag smoothing (final ones)
- scoring.py: /verify's decision, and each account's voiceprints cached (the Roster)
- tracker.py: the windows, encoder and decoder of every account, frame by frame
- service.py: what the REST API does (enroll, verify, embed, compare, settings)

The encoder loads in the speaker engine's thread, after the worker already
serves frames.
"""
