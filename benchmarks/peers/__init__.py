"""Peer servers for benchmarks/serve.py; each runs in a separate virtualenv."""
