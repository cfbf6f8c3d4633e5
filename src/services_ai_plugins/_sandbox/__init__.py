"""The process sandbox: plugins that run in confined worker processes.

Each module does one job; a module imports only the ones listed before it:

- :mod:`._confine`: the operating-system layers a worker applies to itself
  (one module per layer), and what this machine offers (the probe).
- :mod:`._wire`: frames over a socket, and the values inside them.
- :mod:`._messages`: the messages a frame carries, one typed record per kind,
  built and read by both sides (the shape checks of a hostile frame live here).
- :mod:`._worker`: the far side: the zygote, and the worker loop each plugin
  runs in (runs only in those processes).
- :mod:`._policy`: :class:`SandboxPolicy` (which plugins run in a worker, and
  within which limits) and :class:`WorkerInfo`.
- :mod:`._channel`: the host side of one worker's channel: a call, its
  deadline, the API requests served meanwhile, the output passed on, and the
  checks of what a worker reports.
- :mod:`._stand_in`: :class:`SandboxedPlugin`, the stand-in the host registers
  with pluggy, and the plugin's workers behind it (one per tenant).
- :mod:`._pool`: :class:`Sandbox`, the pool of workers and the zygote that
  forks them.
"""
