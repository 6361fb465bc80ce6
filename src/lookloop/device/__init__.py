"""The glasses side: the SDK (``GlassesClient``), its durable outbox, and frame selection."""

from lookloop.device.client import AskResult, ClientError, FeedbackResult, GlassesClient, Pending
from lookloop.device.frames import FrameBuffer, pick_sharpest, sharpness
from lookloop.device.offline_queue import OfflineQueue, QueuedItem

__all__ = [
    "AskResult",
    "ClientError",
    "FeedbackResult",
    "FrameBuffer",
    "GlassesClient",
    "OfflineQueue",
    "Pending",
    "QueuedItem",
    "pick_sharpest",
    "sharpness",
]
