"""Stand-in services for tests: small, real servers on loopback that record what they see.

(``tests.standins.workers`` starts, pauses and kills ``legato worker`` processes.)"""

from tests.standins.recorder import Call, Effect, Recorder

__all__ = ["Call", "Effect", "Recorder"]
