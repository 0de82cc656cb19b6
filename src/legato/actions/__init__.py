"""Built-in actions: what a task step runs when it names no host application activity.

Each action is a small module (``log``, ``set_values``, ``noop``, ``sleep``, ``fail``,
``http_request``, ``send_email``); :mod:`legato.actions.builtins` lists them under their
names.  :meth:`legato.activity.ActivityRegistry.include_builtins` adds them to a registry.
The reference is ``docs/reference/actions.md``.
"""

from legato.actions.send_email import EmailSettings

__all__ = ["EmailSettings"]
