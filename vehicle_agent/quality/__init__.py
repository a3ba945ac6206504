"""Analyze, third stage of the flow: image quality metrics and lens adhesion (pure numpy/OpenCV)."""
