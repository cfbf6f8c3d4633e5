"""The ``services-ai-plugins`` command line, one module per command group.

``_main`` builds the parser and runs a command; ``_common`` holds what the groups
share (the registry options, opening the storage, results, durations);
``_authoring`` (validate, schema, pack, new), ``_docs`` (docs), ``_lifecycle``
(install ... audit), ``_settings`` (settings, grant, revoke), ``_host`` (call, hooks,
failures, metrics, suspend, resume, resolve) and ``_sandbox`` (sandbox-info) add their
commands.
"""
