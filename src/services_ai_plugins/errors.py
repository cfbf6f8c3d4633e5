"""The exception tree of services-ai-plugins.

Everything the SDK raises on purpose derives from one root, so a host can catch
``PluginError`` at its outermost seam::

    PluginError
    ├── ProblemsError         (also ValueError) an input was refused: every problem, by path
    │   ├── ManifestError     a manifest was refused: each problem by JSON path
    │   ├── SettingsError     setting values were refused: each problem by field
    │   ├── PayloadError      from_wire refused data: each problem by path
    │   ├── RecordError       record_from refused a model's values: each problem by field
    │   └── HookCallError     ``services-ai-plugins call`` refused a call
    ├── SecretKeyError        a secret setting cannot be encrypted or decrypted: keys wrong
    ├── PackageError          a plugin folder or archive cannot be read, validated or packed
    │   ├── ArchiveError      an upload was refused (rule, member): nothing was installed
    │   └── IntegrityError    a plugin's files no longer match the code hash of its install
    ├── CompiledModuleRefused (also ImportError) a plugin imported bytecode or native code
    ├── PluginNotFound        (also LookupError) no plugin with that id is installed
    ├── TransitionError       a lifecycle step is not allowed in the plugin's current state
    ├── VersionError          a version refused: a downgrade without its flag, or one not kept
    ├── UpgradeError          an upgrade failed and was rolled back: the previous version serves
    ├── DependencyError       other enabled plugins still need this one
    ├── RequirementsError     a plugin's requirements (Python, host API, packages) are not met
    ├── ExtraNotInstalled     (also ImportError) a feature needs an extra of the SDK
    ├── PermissionDenied      (also PermissionError) an API call without its grant
    ├── EgressRefused         a plugin's outbound HTTP request was refused: its ``reason``
    ├── TenantScopeError      host services returned another tenant's data, or need a tenant
    ├── NotSupported          (also NotImplementedError) the app does not provide that data
    │   └── NoHostServices    ``call`` has no host application behind it
    ├── QuotaExceeded         a plugin's store for a tenant would go over its keys or bytes
    │   └── RateLimited       a rate-limited method (send_email, ...) called too often
    ├── ResultRefused         a plugin's hook returned a value the host does not accept
    ├── SandboxError          a sandboxed plugin's worker broke the protocol or cannot start
    │   ├── SandboxTimeout    the worker did not answer in time: killed, and restarts
    │   ├── WorkerCrashed     the worker died: its exit code or signal, and the likely cause
    │   └── RemoteError       the plugin raised in its worker: type, message, traceback
    ├── WorkerBusy            every worker of a sandboxed plugin stayed busy: the host's capacity
    ├── WireError             a value or a frame cannot cross the sandbox boundary
    │   └── FrameTooLarge     a frame over the limit: none of it was read or written
    ├── ConfinementError      a sandbox layer that probe() offered could not be applied
    ├── RequestTooLarge       (also ValueError) an HTTP request's body is over the limit: 413
    ├── ConfigError           (also ValueError) an adapter's setting is wrong: its key and why
    └── StorageError          the storage backend failed (the driver's error is the __cause__)
        └── ConflictError     another writer changed the record first: re-read and retry

Each exception carries the fields a handler needs, not only a message.
``ManifestError``, ``SettingsError``, ``PayloadError`` and ``HookCallError``
share a base, ``ProblemsError``, that holds ``problems`` (one :class:`Problem` each)
and ``source``. Every exception class of the package is defined here and drawn
above; ``tests/test_errors.py`` fails when one is not.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

import attrs

__all__ = [
    "ArchiveError",
    "CompiledModuleRefused",
    "ConfigError",
    "ConfinementError",
    "ConflictError",
    "DependencyError",
    "EgressRefused",
    "ExtraNotInstalled",
    "FrameTooLarge",
    "HookCallError",
    "IntegrityError",
    "ManifestError",
    "NoHostServices",
    "NotSupported",
    "PackageError",
    "PayloadError",
    "PermissionDenied",
    "PluginError",
    "PluginNotFound",
    "Problem",
    "ProblemsError",
    "QuotaExceeded",
    "RateLimited",
    "RecordError",
    "RemoteError",
    "RequestTooLarge",
    "RequirementsError",
    "ResultRefused",
    "SandboxError",
    "SandboxTimeout",
    "SecretKeyError",
    "SettingsError",
    "StorageError",
    "TenantScopeError",
    "TransitionError",
    "UpgradeError",
    "VersionError",
    "WireError",
    "WorkerBusy",
    "WorkerCrashed",
]


@attrs.frozen
class Problem:
    """One thing wrong with an input, located by its path.

    ``path`` uses JSON-path-like notation without the leading ``$``:
    ``settings[2].type``, ``requires_plugins.crm-sync``,
    ``requires_plugins['Bad Id']``; the empty string
    means the document itself.
    """

    #: Where the problem is (``""`` for the whole document).
    path: str
    #: What is wrong, in words a plugin author can act on.
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PluginError(Exception):
    """The root of every exception services-ai-plugins raises on purpose."""


class ProblemsError(PluginError, ValueError):
    """An input was refused: ``problems`` holds every problem found (one :class:`Problem`
    each, located by its path) and ``source`` the file or folder it came from, if any.

    The base of :class:`ManifestError`, :class:`SettingsError`, :class:`PayloadError` and
    :class:`HookCallError`: catch it to show any refused input's problems one by one.
    """

    #: What kind of thing was refused, for the message ("manifest", "settings").
    _what = "input"

    def __init__(self, problems: Iterable[Problem], *, source: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        #: The file, folder or archive the input came from, when there was one.
        self.source = source
        super().__init__(self._format())

    def _format(self) -> str:
        where = f"{self.source}: " if self.source else ""
        count = len(self.problems)
        if count == 1:
            return f"{where}invalid {self._what}: {self.problems[0]}"
        lines = "\n".join(f"  {p}" for p in self.problems)
        return f"{where}invalid {self._what} ({count} problems):\n{lines}"


class ManifestError(ProblemsError):
    """A plugin manifest was refused.

    ``problems`` lists every problem found, each with its JSON path
    (``settings[2].type: must be one of …``); ``source`` names the file, folder
    or archive when the manifest was read from one.
    """

    _what = "manifest"


class SettingsError(ProblemsError):
    """Setting values were refused by a plugin's settings schema.

    ``problems`` has one entry per offending setting, its ``path`` being the
    setting's name.
    """

    _what = "settings"


class SecretKeyError(PluginError):
    """A secret setting cannot be encrypted or decrypted with the configured keys.

    Raised when a secret is set and no key is configured (or the
    ``secrets`` extra, which brings ``cryptography``, is not installed), when
    the key text is not a Fernet key, and when a stored secret opens with
    none of the keys. ``plugin_id``, ``tenant`` and ``setting`` name the
    secret at fault when there is one (None otherwise); the value never
    shows in the message.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin_id: str | None = None,
        tenant: str | None = None,
        setting: str | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.tenant = tenant
        self.setting = setting
        where = ""
        if setting is not None:
            where = f"secret setting {setting!r} of plugin {plugin_id!r} for tenant {tenant!r}: "
        super().__init__(f"{where}{message}")


class PackageError(PluginError):
    """A plugin folder or archive cannot be read, validated or packed.

    ``path`` is the file or folder at fault; ``member`` names the file inside
    it when one is to blame.
    """

    def __init__(self, message: str, *, path: str, member: str | None = None) -> None:
        self.path = path
        self.member = member
        where = f"{path}!{member}" if member else path
        super().__init__(f"{where}: {message}")


class PluginNotFound(PluginError, LookupError):
    """No plugin with this id is installed (or it was uninstalled)."""

    def __init__(self, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        super().__init__(f"no plugin {plugin_id!r} is installed")


class TransitionError(PluginError):
    """A lifecycle step is not allowed in the plugin's current state.

    ``status`` is the state the plugin is in, ``action`` what was asked, and
    ``allowed`` the actions that state allows.
    """

    def __init__(
        self,
        plugin_id: str,
        action: str,
        status: str,
        allowed: Iterable[str],
        *,
        reason: str | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.action = action
        self.status = status
        self.allowed = tuple(allowed)
        choices = ", ".join(self.allowed) or "nothing"
        why = f": {reason}" if reason else ""
        super().__init__(
            f"cannot {action} plugin {plugin_id!r}: it is {status}{why} (allowed: {choices})"
        )


class VersionError(PluginError):
    """A version step was refused: installing an older version without the downgrade
    flag, rolling back to a version that is not kept, comparing versions not installed.

    ``version`` is the version asked for, ``reason`` says what is wrong.
    """

    def __init__(self, plugin_id: str, version: str | None, reason: str) -> None:
        self.plugin_id = plugin_id
        self.version = version
        self.reason = reason
        which = f" {version}" if version else ""
        super().__init__(f"plugin {plugin_id!r}{which}: {reason}")


class UpgradeError(PluginError):
    """An upgrade failed at its switch and was rolled back: the previous version serves.

    ``step`` says where it failed: ``"settings"`` (a required value could not be
    filled), ``"integrity"`` (the code or its archive does not match its hash),
    ``"load"`` (the new code cannot be loaded), ``"migration"`` (its
    ``plugin_upgraded`` raised) or ``"timeout"`` (it did not return in time);
    ``tenant`` the tenant it failed for, if any; ``reason`` what happened.
    """

    def __init__(
        self,
        plugin_id: str,
        from_version: str,
        to_version: str,
        step: str,
        reason: str,
        *,
        tenant: str | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.from_version = from_version
        self.to_version = to_version
        self.step = step
        self.reason = reason
        self.tenant = tenant
        where = f" for tenant {tenant!r}" if tenant else ""
        super().__init__(
            f"upgrade of plugin {plugin_id!r} from {from_version} to {to_version} failed "
            f"at {step}{where}: {reason}; {from_version} goes on serving"
        )


class DependencyError(PluginError):
    """A plugin cannot be removed or disabled while other enabled plugins require it."""

    def __init__(
        self,
        plugin_id: str,
        dependents: Iterable[str],
        *,
        action: str = "uninstall",
        tenant: str | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.dependents = tuple(sorted(dependents))
        self.action = action
        self.tenant = tenant
        where = f" for tenant {tenant!r}" if tenant else ""
        super().__init__(
            f"cannot {action} plugin {plugin_id!r}{where}: enabled plugins require it "
            f"({', '.join(self.dependents)}); disable them first"
        )


class RequirementsError(PluginError):
    """A plugin's requirements are not met, or its plugin requirements form a cycle.

    ``plugin_id`` names the plugin refused; ``problems`` lists every problem,
    each located by its manifest field (``requires_python``,
    ``dependencies[2]``, ``requires_plugins.crm-sync``) and, for plugin
    requirements, naming the chain of plugins that leads to it.
    """

    def __init__(self, plugin_id: str, problems: Iterable[Problem]) -> None:
        self.plugin_id = plugin_id
        self.problems: tuple[Problem, ...] = tuple(problems)
        count = len(self.problems)
        if count == 1:
            message = f"requirements of plugin {plugin_id!r} are not met: {self.problems[0]}"
        else:
            lines = "\n".join(f"  {problem}" for problem in self.problems)
            message = (
                f"requirements of plugin {plugin_id!r} are not met ({count} problems):\n{lines}"
            )
        super().__init__(message)


class StorageError(PluginError):
    """The storage backend failed; the driver's own exception is ``__cause__``."""


class ConflictError(StorageError):
    """Another writer changed a record since it was read: nothing was written.

    Re-read the record and retry the operation. ``record`` names what
    conflicted, ``expected`` the revision the write was based on and
    ``actual`` the revision found (0 when the record does not exist).
    """

    def __init__(self, record: str, *, expected: int, actual: int) -> None:
        self.record = record
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{record} changed since it was read (expected revision {expected}, "
            f"found {actual}): re-read and retry"
        )


class EgressRefused(PluginError):
    """A plugin's ``api.http_request`` was refused by the host: nothing (more) was sent.

    ``reason`` says which guard refused: ``"host"`` (not declared in the approved
    manifest's ``network``), ``"scheme"`` (not https, or not the rule's), ``"url"``
    (user info, an odd host form), ``"header"`` (a header the host writes, such as
    ``Host``), ``"method"``, ``"dns"`` (the name does not resolve), ``"address"`` (a
    private, loopback, link-local or reserved address), ``"redirect"`` (too many hops;
    a hop to an undeclared host is refused with that hop's reason), ``"too_large"``
    (request or response body over the limit), ``"timeout"`` or ``"connect"`` (the
    connection failed). ``url`` is the URL refused (a redirect's target for a hop).
    """

    def __init__(self, plugin_id: str, reason: str, url: str, message: str | None = None) -> None:
        self.plugin_id = plugin_id
        self.reason = reason
        self.url = url
        super().__init__(message or f"plugin {plugin_id!r}: request to {url!r} refused ({reason})")


class PermissionDenied(PluginError, PermissionError):
    """A plugin called an API method its grants do not allow.

    ``permission`` is what the method needs; nothing was done.
    """

    def __init__(self, plugin_id: str, permission: str, method: str, tenant: str | None) -> None:
        self.plugin_id = plugin_id
        self.permission = permission
        self.method = method
        self.tenant = tenant
        where = f" for tenant {tenant!r}" if tenant else ""
        super().__init__(
            f"plugin {plugin_id!r} may not call {method}(){where}: "
            f"it needs the {permission!r} permission"
        )


class TenantScopeError(PluginError):
    """A call crossed a tenant boundary: refused, whichever side caused it.

    Raised when host services hand back another tenant's record (a faulty
    adapter), or when a tenant-scoped method is called from a hook that has no
    tenant (such as ``register_routes``).
    """

    def __init__(
        self, plugin_id: str, method: str, expected: str | None, actual: str | None
    ) -> None:
        self.plugin_id = plugin_id
        self.method = method
        self.expected = expected
        self.actual = actual
        if expected is None:
            message = f"plugin {plugin_id!r} called {method}() where there is no tenant"
        else:
            message = (
                f"{method}() for plugin {plugin_id!r} returned data of tenant {actual!r} "
                f"in a call for tenant {expected!r}: refused"
            )
        super().__init__(message)


class QuotaExceeded(PluginError):
    """A plugin's call would take its store for a tenant past a limit: nothing was written.

    ``limit`` names the limit (``"store_keys"`` or ``"store_bytes"``, as in
    :class:`~services_ai_plugins.types.ApiLimits`), ``allowed`` its value and
    ``requested`` what the store would have held. Deleting keys makes room.
    """

    #: Seconds until the call may succeed (:class:`RateLimited` only).
    retry_after: float | None = None

    def __init__(
        self,
        plugin_id: str,
        tenant: str | None,
        limit: str,
        allowed: int,
        requested: int,
        *,
        message: str | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.tenant = tenant
        self.limit = limit
        self.allowed = allowed
        self.requested = requested
        unit = "keys" if limit == "store_keys" else "bytes"
        super().__init__(
            message
            or f"plugin {plugin_id!r} may keep at most {allowed} {unit} in its store for "
            f"tenant {tenant!r} ({limit}); this call would make it {requested}"
        )


class RateLimited(QuotaExceeded):
    """A plugin called a rate-limited API method (``send_email``, ...) too often: nothing was sent.

    ``limit`` is the method's name; it may be called ``allowed`` times per
    ``per`` seconds (in bursts of up to ``allowed``), and may be called again
    in ``retry_after`` seconds.
    """

    def __init__(
        self,
        plugin_id: str,
        tenant: str | None,
        method: str,
        allowed: int,
        *,
        per: float,
        retry_after: float,
    ) -> None:
        self.per = per
        self.retry_after = retry_after
        super().__init__(
            plugin_id,
            tenant,
            method,
            allowed,
            allowed + 1,
            message=f"plugin {plugin_id!r} called {method}() more than {allowed} times in "
            f"{per:g} s for tenant {tenant!r}: try again in {retry_after:.3g} s",
        )


class ResultRefused(PluginError):
    """A plugin's hook implementation returned a value the host does not accept.

    The value is dropped (a filter passes the value it got on unchanged) and the
    refusal is recorded as the plugin's failure, like an exception it raised:
    another tenant's record, or a filter that changed the type of its value.
    """

    def __init__(self, plugin_id: str, hook: str, reason: str) -> None:
        self.plugin_id = plugin_id
        self.hook = hook
        self.reason = reason
        super().__init__(f"plugin {plugin_id!r} returned from {hook}(): {reason}")


class SandboxError(PluginError):
    """A sandboxed plugin could not be run: its worker failed, or broke the protocol.

    Recorded as the plugin's failure, like an exception it raised.
    """

    def __init__(self, plugin_id: str, message: str) -> None:
        self.plugin_id = plugin_id
        super().__init__(f"plugin {plugin_id!r}: {message}")


class SandboxTimeout(SandboxError):
    """A sandboxed plugin did not answer a hook call within its time limit.

    Its worker (and every process it started) was killed; the next call starts
    a new one.
    """

    def __init__(self, plugin_id: str, hook: str, timeout: float) -> None:
        self.hook = hook
        self.timeout = timeout
        super().__init__(
            plugin_id,
            f"{hook}() did not return within {timeout:g} s; its worker was stopped",
        )


class WorkerCrashed(SandboxError):
    """A sandboxed plugin's worker process died (``os._exit``, a signal, a limit).

    ``cause`` says how, in words (``exit code 3``, ``killed by SIGABRT``,
    ``killed by SIGKILL: over its memory or CPU limit?``).
    """

    def __init__(self, plugin_id: str, hook: str, cause: str) -> None:
        self.hook = hook
        self.cause = cause
        super().__init__(plugin_id, f"its worker died during {hook}(): {cause}")


class RemoteError(SandboxError):
    """A sandboxed plugin raised an exception in its worker.

    ``remote_type`` is the exception's class name there and
    ``remote_traceback`` its traceback; a failure record shows them as if the
    plugin had raised in the host's process.
    """

    def __init__(
        self, plugin_id: str, remote_type: str, message: str, remote_traceback: str
    ) -> None:
        self.remote_type = remote_type
        self.remote_message = message
        self.remote_traceback = remote_traceback
        super().__init__(plugin_id, f"{remote_type}: {message}")


class WorkerBusy(PluginError):
    """A call found every worker of a sandboxed plugin busy, and waited in vain for one.

    A capacity problem of the host, not the plugin's failure: it is recorded as a
    host event (``worker-busy``), never as the plugin's failure, and never
    counted by the circuit breaker. The call loop skips the plugin's part (with
    ``strict``, it raises this); a route answers 503. More workers per plugin
    (``SandboxPolicy.workers_per_plugin``) or a longer wait
    (``SandboxPolicy.wait_timeout``) make it rarer.
    """

    def __init__(
        self,
        plugin_id: str,
        tenant: str | None,
        hook: str,
        waited: float,
        *,
        workers: int,
        wait_timeout: float,
    ) -> None:
        self.plugin_id = plugin_id
        self.tenant = tenant
        self.hook = hook
        #: Seconds the call waited for a free worker.
        self.waited = waited
        self.workers = workers
        self.wait_timeout = wait_timeout
        where = f"tenant {tenant!r}" if tenant is not None else "no tenant"
        super().__init__(
            f"plugin {plugin_id!r}: {hook} found all {workers} of its workers for {where} "
            f"busy and waited {waited:.2f} s in vain; a capacity problem of the host, not the "
            f"plugin's failure (SandboxPolicy.workers_per_plugin={workers}, "
            f"wait_timeout={wait_timeout:g})"
        )


class ArchiveError(PackageError):
    """An uploaded plugin archive was refused; nothing was installed.

    ``rule`` is a short stable code from :data:`RULES` (``"path-traversal"``,
    ``"symlink"``, ``"too-large"``, ...) for handlers and metrics; ``member``
    names the offending archive member when one is to blame, and ``path`` the
    archive (``"<upload>"`` for bytes).
    """

    def __init__(self, rule: str, message: str, *, path: str, member: str | None = None) -> None:
        #: The stable code of the broken rule, a key of :data:`RULES`.
        self.rule = rule
        super().__init__(f"{message} [{rule}]", path=path, member=member)


class IntegrityError(PackageError):
    """A plugin's files no longer match the code hash recorded when it was installed."""

    def __init__(
        self, plugin_id: str, path: str, expected: str, actual: str, *, member: str | None = None
    ) -> None:
        self.plugin_id = plugin_id
        self.expected = expected
        self.actual = actual
        found = f"{actual[:16]}..." if len(actual) == len(expected) else actual
        wanted = f"hash {expected[:16]}..." if expected else "no such file"
        super().__init__(
            f"the code of plugin {plugin_id!r} changed since it was installed "
            f"(expected {wanted}, found {found}): refusing to load it",
            path=path,
            member=member,
        )


class CompiledModuleRefused(PluginError, ImportError):
    """A plugin imported a module that exists only as bytecode or native code in its folder.

    ``path`` (as for any :class:`ImportError`) is the compiled file. Only
    source is reviewed, so only source is run.
    """


class WireError(PluginError):
    """A value or a frame that cannot cross the sandbox boundary (named, with what is wrong)."""


class FrameTooLarge(WireError):
    """A frame bigger than its receiver (or its sender) allows: none of it was read or written."""

    def __init__(self, size: int, limit: int, kind: str | None = None) -> None:
        #: The frame's size in bytes (its body; the 4-byte length not counted).
        self.size = size
        #: The most bytes it could have had.
        self.limit = limit
        #: Its kind, where it was known.
        self.kind = kind
        what = "a frame" if kind is None else f"a {kind!r} frame"
        super().__init__(f"{what} of {size} bytes is over the limit of {limit}")


class ConfinementError(PluginError):
    """A sandbox layer that :func:`probe` reported as available could not be applied.

    ``layer`` names the layer (one of :data:`LAYER_NAMES`) and ``errno`` the
    system's error number when there was one. The process is left partly
    confined: end it rather than run plugin code in it.
    """

    def __init__(self, layer: str, code: int | None, detail: str) -> None:
        #: The layer that failed.
        self.layer = layer
        #: The ``errno`` of the failure, or ``None``.
        self.errno = code
        #: What failed, in words.
        self.detail = detail
        reason = f"{detail} [{errno.errorcode.get(code, f'errno {code}')}]" if code else detail
        super().__init__(f"cannot apply the {layer} sandbox layer: {reason}")


class ConfigError(PluginError, ValueError):
    """A framework adapter's setting is wrong: ``key`` names it, the message says why.

    Raised when an adapter reads its ``SERVICES_AI_PLUGINS`` settings (Flask's
    ``app.config``, Starlette's keyword arguments); the Django app raises Django's
    ``ImproperlyConfigured`` with the same message.
    """

    def __init__(self, key: str, message: str, *, where: str = "SERVICES_AI_PLUGINS") -> None:
        #: The setting's key (``"SANDBOX"``), or ``""`` for the whole setting.
        self.key = key
        #: Where the setting lives, for the message.
        self.where = where
        super().__init__(f"{where}[{key!r}] {message}" if key else f"{where} {message}")


class RequestTooLarge(PluginError, ValueError):
    """An HTTP request's body is bigger than the adapter accepts: answer ``413``.

    Raised by the converters of :mod:`services_ai_plugins.web` before the body
    is read whole: from its declared length when it has one, else as soon as
    more than ``limit`` bytes have arrived. ``limit`` is the most bytes
    accepted, ``size`` the body's declared length when that was over the limit
    (``None`` when the body came without one, in chunks, or went past the one
    it declared), and ``status`` the HTTP status to answer with.
    """

    #: The HTTP status an adapter answers with.
    status = 413

    def __init__(self, limit: int, size: int | None = None) -> None:
        #: The most bytes a body may have.
        self.limit = limit
        #: The body's declared length (Content-Length) over the limit, or None.
        self.size = size
        if size is None:
            message = f"the request body is over the limit of {limit} bytes: more arrived"
        else:
            message = f"the request body of {size} bytes is over the limit of {limit} bytes"
        super().__init__(message)


class PayloadError(ProblemsError):
    """:func:`from_wire` refused the data: every problem, each with its path.

    ``problems`` holds one :class:`~services_ai_plugins.errors.Problem` per fault
    (``lines[0].quantity: must be a decimal number as a string ...``) and
    ``payload_type`` the record that was asked for. It is a
    :class:`ValueError` and a :class:`~services_ai_plugins.PluginError`.
    """

    def __init__(self, problems: Iterable[Problem], *, payload_type: type) -> None:
        #: The payload class the data was read as.
        self.payload_type = payload_type
        self._what = f"{payload_type.__name__} payload"
        super().__init__(problems)


class RecordError(ProblemsError):
    """:func:`~services_ai_plugins.tooling.record_from` refused an app's values for a record.

    ``record`` names the record type (``"Lead"``), ``field`` the first field
    at fault (``"value"``, ``"lines[1].unit_price"``; ``""`` for a rule
    across fields) and ``problems`` every one of them, each by field. It is
    a :class:`ValueError` and a :class:`~services_ai_plugins.PluginError`.

    .. versionadded:: 0.1.0
    """

    def __init__(self, record: str, problems: Iterable[Problem]) -> None:
        found = tuple(problems)
        #: The record type that could not be built.
        self.record = record
        #: The first field at fault.
        self.field = found[0].path if found else ""
        self._what = f"{record} record"
        super().__init__(found)


class HookCallError(ProblemsError):
    """``services-ai-plugins call`` was refused before the hook ran.

    ``source`` is the hook's name; ``problems`` has one entry per fault, its
    ``path`` naming the argument (``lead.value``), the option (``--tenant``,
    ``--data``) or nothing when the hook itself is at fault.
    """

    _what = "call"


class NotSupported(PluginError, NotImplementedError):
    """The host application does not provide what a plugin asked for (bookings, SMS, ...).

    Raised by the default body of every :class:`~services_ai_plugins.HostServices`
    method, so an app implements only what it has. ``method`` names the
    HostServices method (``"get_booking"``), ``what`` what it provides
    (``"bookings"``). A plugin sees it from the API call, in process and in
    the sandbox alike, and may catch it to do without::

        try:
            booking = api.get_booking(booking_id)
        except NotSupported:
            booking = None  # this app has no bookings

    It is not a refusal of the plugin's rights: it is not reported to the
    host's ``on_denied``.

    .. versionadded:: 0.1.0
    """

    def __init__(self, method: str, what: str | None = None) -> None:
        self.method = method
        self.what = what or f"{method}()"
        super().__init__(f"this app does not provide {self.what} (HostServices.{method})")


class NoHostServices(NotSupported):
    """A plugin asked ``services-ai-plugins call`` for the host application's data or channels.

    A :class:`NotSupported` (so a plugin that does without what an app lacks
    does without it here too), and a ``RuntimeError`` as every
    ``NotImplementedError`` is.
    """

    def __init__(self, method: str) -> None:
        super().__init__(method)
        self.args = (
            f"no host services in the command line: {method}() needs the host application",
        )


class ExtraNotInstalled(PluginError, ImportError):
    """A feature of the SDK needs one of its extras, which is not installed.

    ``feature`` names what was asked for (``"check"``), ``extra`` the extra
    that brings what it needs (``"testing"``) and ``module`` the module that
    could not be imported (``"hypothesis"``); the message says what to install.
    """

    def __init__(self, *, feature: str, extra: str, module: str) -> None:
        self.feature = feature
        self.extra = extra
        self.module = module
        super().__init__(
            f"{feature} needs the SDK's {extra!r} extra ({module} is not installed): "
            f"pip install 'services-ai-plugins[{extra}]'",
            name=module,
        )
