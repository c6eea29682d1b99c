"""Pure batched tensor functions for inference (no model classes)."""
