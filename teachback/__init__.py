"""teachback: distil knowledge from a teacher model into a small local student model by conversation."""

__version__ = "0.2.0"
