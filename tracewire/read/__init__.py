"""The read side: inference-table search, the Kafka consumer, push, the CLI, the viewer.

Never imported by the request path.
"""
