"""Serving predictions: inputs, assignment, batching, the models and their engines."""
