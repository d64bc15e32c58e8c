"""The demo: its models trained, a gateway served, traffic simulated."""
