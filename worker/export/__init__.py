"""The export tools: torch reference encoders and their export to ONNX.

``python -m worker.export`` (__main__.py) makes the graphs workers
serve. Everything that imports torch, SpeechBrain or resemblyzer lives in this
package, and no serving module imports it: a worker process never loads torch.

- torch_encoders.py: EcapaEncoder, Ge2eEncoder and load_encoder, the torch
  models (the reference the graphs are checked against; voicestream-calibrate).
- onnx_export.py: the export itself, its check and the cache lock.
"""
