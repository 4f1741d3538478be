"""The conversation benchmark, one concern per module: build (conversations
of enrolled speakers and a stranger, the reference), system (a real balancer
and workers: enrollment, streaming, the hypothesis from the frame log),
scoring (pyannote.metrics' identification error rate) and run (the command:
voicestream-conversation, python -m voicetools.conversation)."""
from __future__ import annotations


class ConversationError(RuntimeError):
    """Bad input or a system that could not be measured; the message says which."""


class EncoderUnavailable(ConversationError):
    """An encoder the workers could not load: the others can still be measured."""
