"""python -m voicetools.conversation: the conversation benchmark (also voicestream-conversation)."""
import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
