"""The diagnosis: why a mock is not aligned, from the evidence its comparison already holds."""

from align.diagnose.causes import Cause, diagnose
from align.diagnose.rules import load_rules

__all__ = ["Cause", "diagnose", "load_rules"]
