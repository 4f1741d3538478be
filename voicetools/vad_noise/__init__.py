"""VAD in noise (issue 11): raw silero, WebRTC VAD and this system's
decisions side by side, on the same 100 ms frames of the same mixes.

Material: the four recordings of ../shared/data/speech (en_example 16 kHz,
sample1-3 8 kHz), each resampled so that both 8 and 16 kHz cover all of it.
Conditions: clean, white noise (seeded) and babble (six voices from
../shared/data/speakers and the other speech files, never the recording being
mixed) at 20, 10 and 5 dB SNR (mixing.py says how SNR is measured). Mixes go
through PCM 16 as a WAV frame would.

Reference: an energy labelling of the clean recording (labels.py), a frame is
speech when active segments cover half of it; frames within one frame of a
change of reference label are not scored. Figures: frame F1 of the speech
class (precision, recall) pooled over the files of a condition, and on clean
audio the delay from each reference onset to the first voiced frame.

Detectors (detectors.py): raw silero (threshold 0.5 on each chunk, a frame is
voiced when any of its chunks is), WebRTC VAD modes 0-3 (10 ms sub-frames, a
frame is voiced when half of them are), "before" (the worker's decision before
issue 11: VADIterator's hysteresis only) and "system" (the worker's code path,
VadStream + VadEngine, with a worker's default options).
"""
