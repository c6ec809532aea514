from .trellis2_image_to_3d import Trellis2ImageTo3DPipeline

__all__ = ["Trellis2ImageTo3DPipeline"]
