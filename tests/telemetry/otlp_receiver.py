"""The real OTLP receiver the telemetry tests use; it lives in the tools so `ivrbot bench` reuses it."""

from ivrbot_tools.otlp_receiver import HAVE_GRPC, OtlpReceiver, ReceivedEvent, ReceivedSpan, children

__all__ = ["HAVE_GRPC", "OtlpReceiver", "ReceivedEvent", "ReceivedSpan", "children"]
