from .memory import SavedTensorCounter, saved_tensor_bytes

__all__ = ["SavedTensorCounter", "saved_tensor_bytes"]
