"""python -m voicetools.bench: the load benchmark (also voicestream-bench)."""
import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
