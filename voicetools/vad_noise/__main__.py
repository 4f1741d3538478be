"""python -m voicetools.vad_noise: VAD in noise (also voicestream-vad-noise)."""
import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
