"""File listings of a plugin's archive and folder, for the version diff: complete for a
plugin as installs accept it, and bounded, never following links nor extracting, for a
hostile one."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Hosts, Installer
from services_ai_plugins import pack_plugin
from services_ai_plugins._versions import FileEntry, FileListing, archive_files, folder_files
from services_ai_plugins.errors import ArchiveError, PackageError

MANIFEST = json.dumps({"id": "demo", "name": "Demo", "version": "1.0.0"}).encode()


def entry(content: bytes) -> FileEntry:
    return FileEntry(len(content), hashlib.sha256(content).hexdigest())


def make_zip(members: dict[str, bytes], *, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(prefix + name, content)
    return buffer.getvalue()


FILES = {"manifest.json": MANIFEST, "main.py": b"print('hi')\n", "pkg/util.py": b"X = 1\n"}


@pytest.mark.parametrize("prefix", ["", "demo-1.0.0/"])
def test_an_archive_lists_the_plugins_files_relative_to_its_folder(prefix: str) -> None:
    listing = archive_files(make_zip(FILES, prefix=prefix))
    assert listing == {name: entry(content) for name, content in FILES.items()}
    assert listing.complete
    assert listing.notes == ()


def test_folders_in_an_archive_are_not_files() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("top/", b"")
        archive.writestr("top/pkg/", b"")
        archive.writestr("top/manifest.json", MANIFEST)
    assert archive_files(buffer.getvalue()) == {"manifest.json": entry(MANIFEST)}


def test_data_that_is_not_a_zip_is_refused() -> None:
    with pytest.raises(ArchiveError) as caught:
        archive_files(b"not a zip at all")
    assert caught.value.rule == "not-a-zip"


@pytest.mark.parametrize(
    "members",
    [
        {"main.py": b""},
        {"a/manifest.json": MANIFEST, "b/main.py": b""},
        {"deep/er/manifest.json": MANIFEST},
    ],
)
def test_an_archive_without_a_manifest_where_installs_look_is_refused(
    members: dict[str, bytes],
) -> None:
    with pytest.raises(ArchiveError) as caught:
        archive_files(make_zip(members))
    assert caught.value.rule == "no-manifest"


def test_an_archive_with_too_many_members_is_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its central directory is bounded before zipfile reads it (zipfile builds every entry
    at once): the listing says so and lists nothing."""
    data = make_zip({"manifest.json": MANIFEST, **{f"f{i}.py": b"" for i in range(60)}})

    def no_zipfile(*args: object, **kwargs: object) -> None:
        raise AssertionError("zipfile must not parse an oversized central directory")

    monkeypatch.setattr("services_ai_plugins._versions.zipfile.ZipFile", no_zipfile)
    listing = archive_files(data, max_members=50)
    assert listing == {}
    assert not listing.complete
    assert "61 members" in listing.notes[0]
    assert "not listed" in listing.notes[0]


def zip64(data: bytes) -> bytes:
    """The archive with a ZIP64 end record, as large archives have: the classic end record
    says 0xFFFF entries and 0xFFFFFFFF bytes, the ZIP64 one the real counts."""
    end = data[-22:]
    assert end[:4] == b"PK\x05\x06"
    _, _, _, _, entries, size, offset, _ = struct.unpack("<4s4H2LH", end)
    body = data[:-22]
    record = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    classic = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0
    )
    return body + record + locator + classic


def test_a_zip64_archive_is_bounded_by_its_zip64_counts() -> None:
    members = {"manifest.json": MANIFEST, **{f"f{i}.py": b"" for i in range(60)}}
    data = zip64(make_zip(members))
    listing = archive_files(data, max_members=70)
    assert listing == {name: entry(content) for name, content in members.items()}
    refused = archive_files(data, max_members=50)
    assert refused == {}
    assert "61 members" in refused.notes[0]


def test_the_default_member_limit_holds_for_a_real_upload() -> None:
    data = make_zip({"manifest.json": MANIFEST, **{f"f{i}": b"" for i in range(2001)}})
    listing = archive_files(data)
    assert listing == {}
    assert "2002 members" in listing.notes[0]


def test_an_over_long_name_is_left_out_and_said() -> None:
    long_name = "x" * 2000 + ".py"
    listing = archive_files(make_zip({"manifest.json": MANIFEST, long_name: b"1"}))
    assert set(listing) == {"manifest.json"}
    assert "over 1024 characters" in listing.notes[0]
    assert len(listing.notes[0]) < 300  # the note does not repeat the whole name


def test_a_symbolic_link_member_is_not_listed_nor_followed() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", MANIFEST)
        link = zipfile.ZipInfo("secret.txt")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/shadow")
    listing = archive_files(buffer.getvalue())
    assert set(listing) == {"manifest.json"}
    assert listing.notes == ("'secret.txt' is a symbolic link: not followed",)


@pytest.mark.parametrize(
    "name", ["../evil.py", "a/../../evil.py", "/etc/evil.py", "a\\b.py", "ok\x1b[2J.py", "a//b.py"]
)
def test_an_unsafe_name_is_left_out_and_shown_escaped(name: str) -> None:
    listing = archive_files(make_zip({"manifest.json": MANIFEST, name: b"1"}))
    assert set(listing) == {"manifest.json"}
    assert "unsafe name" in listing.notes[0]
    assert listing.notes[0].isprintable()


def test_a_zip_bomb_stops_the_listing_at_the_byte_limit() -> None:
    """Sizes are checked as declared before anything is decompressed."""
    data = make_zip(
        {"manifest.json": MANIFEST, "a.py": b"1", "bomb.bin": bytes(8 * 1024 * 1024), "z.py": b"2"}
    )
    assert len(data) < 100_000
    listing = archive_files(data, max_bytes=1024 * 1024)
    assert set(listing) == {"manifest.json", "a.py"}
    assert listing.notes == (
        "stopped at 'bomb.bin': the files listed so far and this one hold over 1048576 bytes",
    )


def test_a_member_whose_header_lies_about_its_size_is_not_listed() -> None:
    data = bytearray(make_zip({"manifest.json": MANIFEST, "main.py": b"x" * 1000}))
    central = data.index(
        b"PK\x01\x02main.py".replace(b"main.py", b""), data.index(b"PK\x01\x02") + 1
    )
    assert data[central + 46 : central + 53] == b"main.py"
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")  # uncompressed size
    listing = archive_files(bytes(data))
    assert set(listing) == {"manifest.json"}
    assert listing.notes[0].startswith("'main.py' cannot be read: ")


def test_a_corrupt_member_is_said_and_the_others_listed() -> None:
    content = os.urandom(4000)
    data = bytearray(make_zip({"manifest.json": MANIFEST, "blob.bin": content, "z.py": b"z"}))
    start = data.index(b"blob.bin") + len("blob.bin") + 100
    data[start : start + 50] = bytes(50)
    listing = archive_files(bytes(data))
    assert set(listing) == {"manifest.json", "z.py"}
    assert listing.notes[0].startswith("'blob.bin' cannot be read: ")


def test_an_encrypted_member_is_said_and_not_read() -> None:
    data = bytearray(make_zip({"manifest.json": MANIFEST, "main.py": b"x"}))
    central = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 1)
    data[central + 8] |= 0x1  # the encrypted flag
    listing = archive_files(bytes(data))
    assert set(listing) == {"manifest.json"}
    assert listing.notes[0].startswith("'main.py' cannot be read: ")


def test_a_name_twice_is_listed_once_and_said() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", MANIFEST)
        archive.writestr("main.py", b"first")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("main.py", b"second")
    listing = archive_files(buffer.getvalue())
    assert listing["main.py"] == entry(b"first")
    assert listing.notes == ("'main.py' appears twice in the archive: the first is listed",)


# -- folders -------------------------------------------------------------------------------------


def write(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_a_folder_lists_its_regular_files_and_dotfiles_but_not_pycache(tmp_path: Path) -> None:
    write(tmp_path, {**FILES, ".hidden": b"h", "pkg/__pycache__/util.cpython-311.pyc": b"\0"})
    listing = folder_files(tmp_path)
    assert listing == {name: entry(content) for name, content in {**FILES, ".hidden": b"h"}.items()}
    assert listing.complete


def test_symbolic_links_in_a_folder_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, {"secret.txt": b"the host's secret"})
    plugin = tmp_path / "plugin"
    write(plugin, FILES)
    (plugin / "stolen.txt").symlink_to(outside / "secret.txt")
    (plugin / "stolen_dir").symlink_to(outside, target_is_directory=True)
    listing = folder_files(plugin)
    assert set(listing) == set(FILES)
    assert listing.notes == (
        "'stolen.txt' is a symbolic link: not followed",
        "'stolen_dir' is a symbolic link: not followed",
    )


def test_a_fifo_is_never_opened(tmp_path: Path) -> None:
    """Opening a FIFO would block the listing until a writer comes."""
    write(tmp_path, FILES)
    os.mkfifo(tmp_path / "pipe")
    listing = folder_files(tmp_path)
    assert set(listing) == set(FILES)
    assert listing.notes == ("'pipe' is not a regular file: not opened",)


def test_a_folder_that_is_a_link_or_not_a_folder_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "real", FILES)
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(PackageError, match="symbolic link"):
        folder_files(tmp_path / "link")
    with pytest.raises(PackageError, match="is not a folder"):
        folder_files(tmp_path / "real" / "main.py")
    with pytest.raises(PackageError, match="cannot be read"):
        folder_files(tmp_path / "missing")


def test_a_folder_walk_stops_at_the_member_limit(tmp_path: Path) -> None:
    write(tmp_path, {f"d{i}/f{j}.py": b"" for i in range(10) for j in range(10)})
    listing = folder_files(tmp_path, max_members=25)
    assert 0 < len(listing) < 25
    assert listing.notes == ("stopped after 25 files and folders",)


def test_a_folder_walk_stops_at_the_byte_limit(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": b"1" * 600, "b.py": b"2" * 600, "c.py": b"3"})
    listing = folder_files(tmp_path, max_bytes=1000)
    assert set(listing) == {"a.py"}
    assert listing.notes[0].startswith("stopped at 'b.py'")


def test_a_file_swapped_for_a_link_after_the_walk_saw_it_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: the walk sees a regular file, a link takes its place before it is read."""
    write(tmp_path / "plugin", FILES)
    write(tmp_path, {"secret.txt": b"the host's secret"})
    from services_ai_plugins import _versions

    real_hash = _versions._hash_file

    def swap_then_hash(path: Path, budget: int) -> FileEntry | None:
        if path.name == "main.py":
            path.unlink()
            path.symlink_to(tmp_path / "secret.txt")
        return real_hash(path, budget)

    monkeypatch.setattr(_versions, "_hash_file", swap_then_hash)
    listing = folder_files(tmp_path / "plugin")
    assert "main.py" not in listing
    assert listing.notes[0].startswith("'main.py' cannot be read")


def test_a_name_that_is_not_utf8_is_left_out(tmp_path: Path) -> None:
    write(tmp_path, FILES)
    (tmp_path / os.fsdecode(b"bad\xff.py")).write_bytes(b"1")
    listing = folder_files(tmp_path)
    assert set(listing) == set(FILES)
    assert "not UTF-8" in listing.notes[0]


# -- through the real host -----------------------------------------------------------------------


def test_an_installed_archive_and_its_folder_list_the_same_files(
    tmp_path: Path, hosts: Hosts
) -> None:
    """What a host installed from an upload lists alike from the stored archive and from
    the folder it extracted: the diff does not depend on where the code is read."""
    host = hosts()
    install = Installer(tmp_path, "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n")
    install(host, "lister", "@hookimpl\ndef lead_created(self, lead, api):\n    pass\n")
    record = host.registry.plugin("lister")
    assert record.package_path is not None
    from_folder = folder_files(record.package_path)
    from_archive = archive_files((tmp_path / "lister.zip").read_bytes())
    assert from_folder == from_archive
    assert set(from_folder) == {"manifest.json", "main.py"}
    assert from_folder.complete
    assert from_archive.complete


def test_a_packed_folder_lists_as_its_archive(tmp_path: Path) -> None:
    write(tmp_path / "src", {**FILES, "pkg/data/x.json": b"{}"})
    packed = pack_plugin(tmp_path / "src", tmp_path / "demo.zip").path
    assert archive_files(Path(packed).read_bytes()) == folder_files(tmp_path / "src")


def test_a_listing_is_a_dict_of_entries() -> None:
    listing = FileListing([("a", FileEntry(1, "0" * 64))], ["left out"])
    assert dict(listing) == {"a": FileEntry(1, "0" * 64)}
    assert listing.notes == ("left out",)
    assert "left out" in repr(listing)


# -- properties ----------------------------------------------------------------------------------

VALID = make_zip({**FILES, "pkg/data.bin": bytes(range(256)) * 8})


@given(st.binary(max_size=2000))
def test_any_bytes_give_a_listing_or_an_archive_error(data: bytes) -> None:
    try:
        listing = archive_files(data)
    except ArchiveError as error:
        assert error.rule in {"not-a-zip", "no-manifest", "non-utf8-name"}
    else:
        assert all(isinstance(value, FileEntry) for value in listing.values())


@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8))
def test_a_damaged_archive_gives_a_listing_or_an_archive_error(
    damage: list[tuple[int, int]],
) -> None:
    """Any bytes of a real archive changed: never another exception, never a wrong hash."""
    data = bytearray(VALID)
    for offset, value in damage:
        data[offset] = value
    try:
        listing = archive_files(bytes(data))
    except ArchiveError as error:
        assert error.rule in {"not-a-zip", "no-manifest", "non-utf8-name"}
        return
    expected = {name: entry(content) for name, content in FILES.items()}
    expected["pkg/data.bin"] = entry(bytes(range(256)) * 8)
    for path, found in listing.items():
        if path in expected:
            assert found == expected[path], path
    for note in listing.notes:
        assert note.isprintable()
