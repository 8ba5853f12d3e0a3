"""Loopback emulator of the Intron Health and Invox Medical HTTP contracts.

It lets tests, the demo and benchmarks drive the real vendor clients, with
fault injection controllable at runtime through ``/_sandbox/``.
"""

from ops.sandbox.app import RunningSandbox, build_app, running_sandbox
from ops.sandbox.config import DEFAULT_TRANSCRIPT_TURNS, ENDPOINTS, SandboxConfig
from ops.sandbox.faults import FaultRule, FaultSet
from ops.sandbox.state import SandboxState

__all__ = [
    "DEFAULT_TRANSCRIPT_TURNS",
    "ENDPOINTS",
    "FaultRule",
    "FaultSet",
    "RunningSandbox",
    "SandboxConfig",
    "SandboxState",
    "build_app",
    "running_sandbox",
]
