"""Framework adapters (seed 000, way A): a framework's own module for an op, built standalone with
the framework's own caches and masks. See :mod:`align_mock.frameworks.base` for the interface."""

from align_mock.frameworks.base import FRAMEWORKS, Adapter, Built, Case, get_adapter

__all__ = ["FRAMEWORKS", "Adapter", "Built", "Case", "get_adapter"]
