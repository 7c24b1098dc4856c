"""Thin entry points, one per arrow of the data flow; each is `rdt <job>`."""
