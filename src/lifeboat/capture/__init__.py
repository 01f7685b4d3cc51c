"""Continuous capture of etcd's history as segments (point-in-time recovery's input)."""

from lifeboat.capture.run import Capture, CaptureOptions, CaptureStatus, capture_options

__all__ = ["Capture", "CaptureOptions", "CaptureStatus", "capture_options"]
