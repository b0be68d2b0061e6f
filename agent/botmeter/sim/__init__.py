"""A simulated Asterisk PBX (AMI over TCP) playing scripted voice-bot calls.

Used by `botmeter demo` and by live tests of the agent.
"""

from botmeter.sim.events import CallIds, SimEvent, call_events, is_marker
from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import Outcome, ScriptedCall, SignalVia, expected_record, mixed_calls

__all__ = [
    "CallIds",
    "Outcome",
    "ScriptedCall",
    "SignalVia",
    "SimEvent",
    "SimulatedPBX",
    "call_events",
    "expected_record",
    "is_marker",
    "mixed_calls",
]
