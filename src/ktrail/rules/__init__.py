"""Detection rules: the condition language, rule files, and the engine."""

from pathlib import Path

DEFAULT_RULES = Path(__file__).parent / "default" / "ktrail_rules.yaml"
DEFAULT_TESTS = Path(__file__).parent / "default" / "tests.yaml"
