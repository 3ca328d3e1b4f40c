"""The emulated resources, one module per type: its state (dataclasses that persist as they are) and its
behaviour (a class bound to the ``World``, as moto's backends are, reaching the other types through it).

No HTTP in here: the handlers in ``vmssctl.emulator.handlers`` translate requests into these calls.
"""
