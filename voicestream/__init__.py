"""What the balancer and the workers agree on: the wire protocol between them
(account codes, frame batches and their answers, frame stamps, the frame
reply), the log line, the WAV frames clients send, and how options are
declared.

Neither ``balancer`` nor ``worker`` imports the other; both import this.
"""
