"""Uploaded plugin archives: hostile ones refused by their rule, good ones installed atomically."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import MINIMAL_PLUGIN
from services_ai_plugins import (
    ManifestError,
    MemoryStorage,
    PackageError,
    Registry,
    TransitionError,
    pack_plugin,
)
from services_ai_plugins._sources._archive import (
    RULES,
    ArchiveError,
    ArchiveLimits,
    code_hash,
    extract_plugin,
    install_archive,
)
from services_ai_plugins.storage import SourceKind

PLUGIN_CODE = "class MyPlugin:\n    pass\n"
GOOD: dict[str, bytes] = {
    "manifest.json": json.dumps(MINIMAL_PLUGIN).encode(),
    "main.py": PLUGIN_CODE.encode(),
}

# -- building archives ---------------------------------------------------------------------------


def make_zip(
    entries: dict[str, bytes] | list[tuple[str | zipfile.ZipInfo, bytes]],
    *,
    method: int = zipfile.ZIP_DEFLATED,
    date_time: tuple[int, int, int, int, int, int] = (2020, 1, 1, 0, 0, 0),
) -> bytes:
    """A ZIP of the entries, in order; duplicate names are allowed."""
    items = list(entries.items()) if isinstance(entries, dict) else entries
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in items:
                info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
                if not isinstance(name, zipfile.ZipInfo):
                    info.date_time = date_time
                    info.compress_type = method
                archive.writestr(info, data)
    return buffer.getvalue()


def with_mode(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def headers(data: bytes, name: bytes) -> tuple[int, int]:
    """Offsets of the local and central headers of the member called ``name``."""
    central = data.index(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(name)] != name:
        central = data.index(b"PK\x01\x02", central + 4)
    local = struct.unpack_from("<L", data, central + 42)[0]
    return local, central


def patch(data: bytes, name: str, *, local: dict[int, int], central: dict[int, int]) -> bytes:
    """Overwrite header fields (offset -> value), 32-bit at the CRC, size and offset fields."""
    out = bytearray(data)
    where_local, where_central = headers(data, name.encode())
    for base, fields, wide in (
        (where_local, local, {14, 18, 22}),
        (where_central, central, {16, 20, 24, 38, 42}),
    ):
        for offset, value in fields.items():
            struct.pack_into("<L" if offset in wide else "<H", out, base + offset, value)
    return bytes(out)


def set_flag(data: bytes, name: str, bit: int) -> bytes:
    local, central = headers(data, name.encode())
    flags_local = struct.unpack_from("<H", data, local + 6)[0]
    flags_central = struct.unpack_from("<H", data, central + 8)[0]
    return patch(data, name, local={6: flags_local | bit}, central={8: flags_central | bit})


def rename_raw(data: bytes, placeholder: str, raw: bytes) -> bytes:
    """Replace a member's name bytes (same length) in both headers, flags untouched."""
    assert len(placeholder.encode()) == len(raw)
    return data.replace(placeholder.encode(), raw)


def good_with(**extra: bytes) -> dict[str, bytes]:
    return {**GOOD, **extra}


def local_size_lie() -> bytes:
    data = make_zip(GOOD)
    return patch(data, "main.py", local={22: len(PLUGIN_CODE) - 3}, central={})


def central_size_lie() -> bytes:
    data = make_zip(GOOD)
    smaller = len(PLUGIN_CODE) - 5
    return patch(data, "main.py", local={22: smaller}, central={24: smaller})


def overlapping() -> bytes:
    data = make_zip(GOOD)
    return patch(data, "main.py", local={}, central={42: 0})


def bad_crc() -> bytes:
    data = make_zip(GOOD)
    return patch(data, "main.py", local={14: 1234}, central={16: 1234})


def zip_bomb() -> bytes:
    return make_zip(good_with(**{"data.bin": bytes(50_000_000)}))


def tiny_members() -> bytes:
    return make_zip(good_with(**{f"m/{i}.py": b"" for i in range(3000)}))


CORPUS: list[tuple[str, Callable[[], bytes], ArchiveLimits]] = [
    ("not-a-zip", lambda: b"this is not a zip archive\n" * 40, ArchiveLimits()),
    ("too-many-members", tiny_members, ArchiveLimits()),
    ("empty-name", lambda: make_zip(good_with(**{"": b"x"})), ArchiveLimits()),
    (
        "bad-name",
        lambda: rename_raw(make_zip(good_with(aXb=b"x")), "aXb", b"a\0b"),
        ArchiveLimits(),
    ),
    ("bad-name", lambda: make_zip(good_with(**{"a/./b.py": b"x"})), ArchiveLimits()),
    ("bad-name", lambda: make_zip(good_with(**{"lib/a:stream": b"x"})), ArchiveLimits()),
    (
        "non-utf8-name",
        lambda: rename_raw(make_zip(good_with(**{"cafX.py": b"x"})), "cafX.py", b"caf\xe9.py"),
        ArchiveLimits(),
    ),
    ("absolute-path", lambda: make_zip(good_with(**{"/abs.py": b"x"})), ArchiveLimits()),
    ("absolute-path", lambda: make_zip(good_with(**{"C:/x.py": b"x"})), ArchiveLimits()),
    ("backslash", lambda: make_zip(good_with(**{"a\\b.py": b"x"})), ArchiveLimits()),
    ("path-traversal", lambda: make_zip(good_with(**{"../evil.py": b"x"})), ArchiveLimits()),
    ("path-traversal", lambda: make_zip(good_with(**{"lib/../../evil.py": b"x"})), ArchiveLimits()),
    (
        "symlink",
        lambda: make_zip([*GOOD.items(), (with_mode("link.py", stat.S_IFLNK | 0o777), b"/etc")]),
        ArchiveLimits(),
    ),
    (
        "not-regular",
        lambda: make_zip([*GOOD.items(), (with_mode("fifo", stat.S_IFIFO | 0o644), b"")]),
        ArchiveLimits(),
    ),
    ("encrypted", lambda: set_flag(make_zip(GOOD), "main.py", 0x1), ArchiveLimits()),
    (
        "unsupported-compression",
        lambda: make_zip(GOOD, method=zipfile.ZIP_BZIP2),
        ArchiveLimits(),
    ),
    (
        "duplicate-name",
        lambda: make_zip([*GOOD.items(), ("main.py", b"import os\n")]),
        ArchiveLimits(),
    ),
    ("case-collision", lambda: make_zip(good_with(**{"Main.py": b"x"})), ArchiveLimits()),
    ("path-conflict", lambda: make_zip(good_with(lib=b"x", **{"lib/a.py": b"y"})), ArchiveLimits()),
    (
        "too-large",
        lambda: make_zip(good_with(big=bytes(range(256)) * 8)),
        ArchiveLimits(max_member_bytes=1000),
    ),
    ("too-large", lambda: make_zip(GOOD), ArchiveLimits(max_total_bytes=50)),
    ("compression-ratio", zip_bomb, ArchiveLimits()),
    ("size-mismatch", local_size_lie, ArchiveLimits()),
    ("size-mismatch", central_size_lie, ArchiveLimits()),
    ("overlap", overlapping, ArchiveLimits()),
    ("corrupt", bad_crc, ArchiveLimits()),
    ("bytecode", lambda: make_zip(good_with(**{"main.pyc": b"x"})), ArchiveLimits()),
    (
        "bytecode",
        lambda: make_zip(good_with(**{"__pycache__/main.cpython-311.pyc": b"x"})),
        ArchiveLimits(),
    ),
    ("bytecode", lambda: make_zip(good_with(**{"lib/__PYCACHE__/": b""})), ArchiveLimits()),
    ("bytecode", lambda: make_zip(good_with(**{"lib/util.PYO": b"x"})), ArchiveLimits()),
    (
        "native-module",
        lambda: make_zip(good_with(**{"fast.cpython-311-x86_64-linux-gnu.so": b"x"})),
        ArchiveLimits(),
    ),
    ("native-module", lambda: make_zip(good_with(**{"lib/fast.pyd": b"x"})), ArchiveLimits()),
    ("native-module", lambda: make_zip(good_with(**{"libhelper.so.1": b"x"})), ArchiveLimits()),
    ("native-module", lambda: make_zip(good_with(**{"helper.DLL": b"x"})), ArchiveLimits()),
    ("native-module", lambda: make_zip(good_with(**{"helper.dylib": b"x"})), ArchiveLimits()),
    ("no-manifest", lambda: make_zip({"main.py": PLUGIN_CODE.encode()}), ArchiveLimits()),
    (
        "entry-point-outside",
        lambda: make_zip(
            {
                "manifest.json": json.dumps(
                    {**MINIMAL_PLUGIN, "entry_point": "lib/main.py"}
                ).encode(),
                "main.py": PLUGIN_CODE.encode(),
            }
        ),
        ArchiveLimits(),
    ),
]


def corpus_ids() -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for rule, _, _ in CORPUS:
        seen[rule] = seen.get(rule, 0) + 1
        ids.append(rule if seen[rule] == 1 else f"{rule}-{seen[rule]}")
    return ids


# -- fixtures and checks -------------------------------------------------------------------------


def listing(root: Path) -> dict[str, bytes | None]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes() if path.is_file() else None
        for path in sorted(root.rglob("*"))
    }


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    return folder


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def staging_is_empty(plugins: Path) -> bool:
    staging = plugins / ".staging"
    return not staging.exists() or not any(staging.iterdir())


def assert_nothing_left(plugins: Path, before: dict[str, bytes | None], root: Path) -> None:
    after = listing(root)
    outside = {k: v for k, v in after.items() if not k.startswith("plugins/")}
    assert outside == {k: v for k, v in before.items() if not k.startswith("plugins/")}
    assert not (plugins / "my-plugin").exists()
    assert staging_is_empty(plugins)
    assert set(after) - {"plugins/.staging"} == set(before) - {"plugins/.staging"}


# -- the hostile corpus --------------------------------------------------------------------------


def test_the_corpus_covers_the_rules() -> None:
    """Every archive rule but already-installed has a hostile archive in the corpus."""
    assert {rule for rule, _, _ in CORPUS} == set(RULES) - {"already-installed"}


@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
@pytest.mark.parametrize(("rule", "build", "limits"), CORPUS, ids=corpus_ids())
def test_a_hostile_archive_is_refused_by_its_rule(
    tmp_path: Path,
    plugins: Path,
    *,
    rule: str,
    build: Callable[[], bytes],
    limits: ArchiveLimits,
    as_path: bool,
) -> None:
    """Each hostile archive is refused with its own rule, and nothing is left anywhere."""
    data = build()
    source: bytes | Path = data
    if as_path:
        source = tmp_path / "upload.zip"
        source.write_bytes(data)
    registry = Registry(MemoryStorage())
    before = listing(tmp_path)
    with pytest.raises(ArchiveError) as caught:
        install_archive(source, plugins, registry, actor="admin", limits=limits)
    assert caught.value.rule == rule
    assert f"[{rule}]" in str(caught.value)
    assert caught.value.path == ("<upload>" if not as_path else str(source))
    if caught.value.member is not None:
        assert caught.value.member in str(caught.value)
    assert registry.storage.get_plugin("my-plugin") is None
    assert_nothing_left(plugins, before, tmp_path)


def test_the_offending_member_is_named(plugins: Path) -> None:
    """The error names the member at fault."""
    with pytest.raises(ArchiveError) as caught:
        extract_plugin(make_zip(good_with(**{"../evil.py": b"x"})), plugins)
    assert caught.value.member == "../evil.py"
    assert str(caught.value).startswith("<upload>!../evil.py: ")


def test_a_manifest_error_passes_through(tmp_path: Path, plugins: Path) -> None:
    """A bad manifest is a ManifestError naming the archive member, and nothing is left."""
    before = listing(tmp_path)
    data = make_zip({"manifest.json": b'{"name": 3}', "main.py": PLUGIN_CODE.encode()})
    with pytest.raises(ManifestError) as caught:
        extract_plugin(data, plugins)
    assert caught.value.source == "<upload>!manifest.json"
    assert_nothing_left(plugins, before, tmp_path)


def test_an_entry_point_naming_a_parent_folder_is_a_manifest_error(plugins: Path) -> None:
    """An entry point such as ../main.py is refused by the manifest itself."""
    manifest = json.dumps({**MINIMAL_PLUGIN, "entry_point": "../main.py"}).encode()
    with pytest.raises(ManifestError):
        extract_plugin(make_zip({"manifest.json": manifest, "main.py": b""}), plugins)


def test_an_entry_module_that_does_not_compile_is_refused(tmp_path: Path, plugins: Path) -> None:
    """The content checks of validate_plugin run on the extracted files."""
    before = listing(tmp_path)
    with pytest.raises(ManifestError) as caught:
        extract_plugin(make_zip(good_with(**{"main.py": b"def broken(:\n"})), plugins)
    assert [p.path for p in caught.value.problems] == ["entry_point"]
    assert_nothing_left(plugins, before, tmp_path)


def test_a_failing_check_leaves_nothing(tmp_path: Path, plugins: Path) -> None:
    """The caller's check sees the manifest, and its exception propagates."""
    seen = []

    def refuse(manifest: object) -> None:
        seen.append(manifest)
        raise LookupError("needs crm-sync")

    before = listing(tmp_path)
    with pytest.raises(LookupError, match="crm-sync"):
        extract_plugin(make_zip(GOOD), plugins, check=refuse)
    assert [m.id for m in seen] == ["my-plugin"]  # type: ignore[attr-defined]
    assert_nothing_left(plugins, before, tmp_path)


def test_a_missing_plugins_folder_is_refused(tmp_path: Path) -> None:
    """The plugins folder must exist: nothing is created outside it."""
    with pytest.raises(PackageError, match="does not exist"):
        extract_plugin(make_zip(GOOD), tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


# -- good archives -------------------------------------------------------------------------------


def packed(tmp_path: Path, files: dict[str, bytes], name: str = "src") -> tuple[Path, Path]:
    folder = write_folder(tmp_path / name / "my-plugin", files)
    archive = pack_plugin(folder, tmp_path / name / "my-plugin.zip").path
    return folder, archive


def test_a_good_archive_is_installed(tmp_path: Path, plugins: Path) -> None:
    """A packed plugin lands in <plugins>/<id>/<version>/ with its files and code hash."""
    folder, archive = packed(tmp_path, good_with(**{"lib/util.py": b"X = 1\n"}))
    registry = Registry(MemoryStorage())
    record = install_archive(archive, plugins, registry, actor="admin")
    target = plugins / "my-plugin" / "1.0.0"
    assert listing(target) == listing(folder)
    assert record.code_hash == code_hash(folder) == code_hash(target)
    assert record.package_path == str(target)
    assert record.source is SourceKind.ARCHIVE
    assert registry.storage.get_plugin("my-plugin") == record
    assert staging_is_empty(plugins)


def test_a_plugin_in_one_top_folder_is_installed_at_its_root(plugins: Path) -> None:
    """Members under one top-level folder are installed without that folder."""
    entries: list[tuple[str | zipfile.ZipInfo, bytes]] = [
        ("my-plugin/", b""),
        ("my-plugin/lib/", b""),
    ]
    entries += [(f"my-plugin/{name}", content) for name, content in GOOD.items()]
    extracted = extract_plugin(make_zip(entries), plugins)
    assert set(listing(extracted.path)) == {"lib", "main.py", "manifest.json"}
    assert extracted.code_hash == code_hash(extracted.path)


def test_the_same_version_again_is_refused(tmp_path: Path, plugins: Path) -> None:
    """A second upload of the same id and version is refused and changes nothing."""
    _, archive = packed(tmp_path, GOOD)
    extract_plugin(archive, plugins)
    before = listing(tmp_path)
    with pytest.raises(ArchiveError) as caught:
        extract_plugin(archive, plugins)
    assert caught.value.rule == "already-installed"
    assert listing(tmp_path) == before


def test_reinstall_replaces_the_folder(tmp_path: Path, plugins: Path) -> None:
    """With reinstall=True the same version's folder is replaced, old files gone."""
    _, first = packed(tmp_path, good_with(**{"old.py": b""}), "one")
    folder, second = packed(tmp_path, good_with(**{"main.py": b"class MyPlugin: ...\n"}), "two")
    registry = Registry(MemoryStorage())
    install_archive(first, plugins, registry, actor="admin")
    record = install_archive(second, plugins, registry, actor="admin", reinstall=True)
    assert listing(plugins / "my-plugin" / "1.0.0") == listing(folder)
    assert record.code_hash == code_hash(folder)
    assert staging_is_empty(plugins)


def test_a_registry_refusal_leaves_no_folder(tmp_path: Path, plugins: Path) -> None:
    """Installing over a pending plugin without reinstall removes the new version's folder."""
    _, first = packed(tmp_path, GOOD, "one")
    manifest = {**MINIMAL_PLUGIN, "version": "2.0.0"}
    _, second = packed(
        tmp_path, good_with(**{"manifest.json": json.dumps(manifest).encode()}), "two"
    )
    registry = Registry(MemoryStorage())
    install_archive(first, plugins, registry, actor="admin")
    before = listing(tmp_path)
    with pytest.raises(TransitionError):
        install_archive(second, plugins, registry, actor="admin")
    assert listing(tmp_path) == before
    assert registry.storage.get_plugin("my-plugin").version == "1.0.0"  # type: ignore[union-attr]


def test_a_registry_refusal_on_reinstall_restores_the_old_folder(
    tmp_path: Path, plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the registry refuses a reinstall, the previous version's files come back."""
    _, first = packed(tmp_path, GOOD, "one")
    _, second = packed(tmp_path, good_with(**{"new.py": b""}), "two")
    registry = Registry(MemoryStorage())
    install_archive(first, plugins, registry, actor="admin")
    before = listing(tmp_path)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("storage is down")

    monkeypatch.setattr(registry, "install", fail)
    with pytest.raises(OSError, match="storage is down"):
        install_archive(second, plugins, registry, actor="admin", reinstall=True)
    assert listing(tmp_path) == before


# -- the code hash -------------------------------------------------------------------------------


def test_code_hash_follows_its_documented_definition(tmp_path: Path) -> None:
    """The hash is SHA-256 over path, NUL, 8-byte length and content, in sorted path order."""
    files = {"b.py": b"bee", "a/z.py": b"", ".hidden": b"h"}
    folder = write_folder(tmp_path / "p", files)
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + len(files[name]).to_bytes(8, "big") + files[name])
    assert code_hash(folder) == digest.hexdigest()


def test_code_hash_ignores_zip_metadata(tmp_path: Path) -> None:
    """The same files zipped with other timestamps, compression and order hash the same."""
    folder = write_folder(tmp_path / "src", good_with(**{"lib/a.py": b"A = 1\n" * 50}))
    variants = [
        make_zip(GOOD | {"lib/a.py": b"A = 1\n" * 50}),
        make_zip(
            dict(reversed(list((GOOD | {"lib/a.py": b"A = 1\n" * 50}).items()))),
            method=zipfile.ZIP_STORED,
            date_time=(1999, 12, 31, 23, 59, 58),
        ),
    ]
    hashes = set()
    for index, data in enumerate(variants):
        target = tmp_path / f"plugins{index}"
        target.mkdir()
        hashes.add(extract_plugin(data, target).code_hash)
    assert hashes == {code_hash(folder)}


def test_code_hash_changes_with_one_byte(tmp_path: Path) -> None:
    """Changing one byte of one file changes the hash."""
    one = write_folder(tmp_path / "one", GOOD)
    two = write_folder(tmp_path / "two", good_with(**{"main.py": PLUGIN_CODE.encode()[:-1] + b" "}))
    assert code_hash(one) != code_hash(two)


def test_code_hash_refuses_a_symlink(tmp_path: Path) -> None:
    """A folder holding a symbolic link has no code hash."""
    folder = write_folder(tmp_path / "p", GOOD)
    (folder / "link.py").symlink_to(folder / "main.py")
    with pytest.raises(PackageError, match="symbolic link"):
        code_hash(folder)
