"""The model store through the Python API."""

from __future__ import annotations

import json
import os
import tarfile
import unicodedata

import onnx
import pytest

from modelforge.errors import (
    InvalidModelError,
    InvalidNameError,
    ModelNotFoundError,
    NotFoundError,
    StoreCorruptError,
    StoreError,
    UnsafeModelError,
)
from modelforge.store.add import add_model
from modelforge.store.archive import export_version, import_archive
from modelforge.store.catalog import find, list_models
from modelforge.store.layout import Store
from modelforge.store.names import parse_ref, validate_name
from modelforge.store.ops import remove, tag, untag, verify
from modelforge.store.resolve import resolve_model
from tests import builders


@pytest.fixture
def model_file(tmp_path):
    return builders.save(builders.linear(), tmp_path / "linear.onnx")


def store_files(root):
    """Every file under the store except lock files (for 'nothing was written' checks)."""
    out = set()
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".lock"):
                out.add(os.path.relpath(os.path.join(dirpath, f), root))
    return out


def test_add_records_metadata_and_versions(model_file, store_root):
    r1 = add_model(
        model_file,
        "lin",
        description="first",
        labels={"team": "ml"},
        columns=["a", "b", "c", "d"],
        aliases=["prod"],
    )
    assert (r1.name, r1.version, r1.created) == ("lin", 1, True)
    mv = find(Store(), "lin")
    meta = mv.meta
    assert meta["schema_version"] == 1
    assert meta["description"] == "first" and meta["labels"] == {"team": "ml"}
    assert meta["columns"] == ["a", "b", "c", "d"]
    assert meta["onnx"]["opset_imports"] == {"ai.onnx": 17}
    assert meta["onnx"]["ir_version"] == 8
    assert meta["schema"]["inputs"][0] == {
        "name": "x",
        "type": "tensor(float)",
        "dtype": "float32",
        "shape": ["N", 4],
    }
    assert set(meta["tool_versions"]) == {"modelforge", "onnx", "onnxruntime"}
    assert meta["validation"]["ok"] is True
    assert mv.aliases == ["prod"]
    assert mv.model_path.read_bytes() == model_file.read_bytes()
    # a second, different model gets version 2; latest follows what is on disk
    other = builders.save(builders.linear(seed=1), model_file.parent / "other.onnx")
    r2 = add_model(other, "lin")
    assert r2.version == 2 and r2.created
    assert find(Store(), "lin").version == 2
    assert find(Store(), "lin:prod").version == 1
    assert find(Store(), "lin:1").version == 1


def test_same_bytes_reuse_version_and_dedupe_blobs(model_file, store_root):
    r1 = add_model(model_file, "lin")
    r2 = add_model(model_file, "lin")
    assert r2.version == r1.version and r2.created is False
    add_model(model_file, "copy")
    blobs = [p for p in (store_root / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1  # identical files under two names are stored once


def test_external_data_is_copied_verbatim(tmp_path, store_root):
    path = builders.with_external_data(tmp_path / "ext")
    r = add_model(path, "ext")
    stored = find(Store(), "ext")
    files = {f["path"] for f in stored.meta["files"]}
    assert files == {"model.onnx", "weights.bin"}
    assert (stored.directory / "files" / "weights.bin").read_bytes() == (
        tmp_path / "ext" / "weights.bin"
    ).read_bytes()
    assert r.validation["ok"] is True


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../x.bin"])
def test_unsafe_external_data_refused_and_nothing_written(tmp_path, store_root, location):
    folder = tmp_path / "m"
    path = builders.with_external_data(folder)
    model = onnx.load(path, load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save_model(model, path)
    (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
    before = store_files(store_root)
    with pytest.raises(UnsafeModelError):
        add_model(path, "bad")
    assert store_files(store_root) - before <= {"store.json"}
    assert not Store().versions("bad")


def test_hard_linked_external_data_refused(tmp_path, store_root):
    path = builders.with_external_data(tmp_path / "m")
    os.link(tmp_path / "m" / "weights.bin", tmp_path / "elsewhere.bin")
    with pytest.raises(UnsafeModelError, match="hard link"):
        add_model(path, "bad")


def test_symlink_escape_refused(tmp_path, store_root):
    path = builders.with_external_data(tmp_path / "m")
    real = tmp_path / "real.bin"
    (tmp_path / "m" / "weights.bin").rename(real)
    (tmp_path / "m" / "weights.bin").symlink_to(real)
    with pytest.raises(UnsafeModelError, match="outside"):
        add_model(path, "bad")


@pytest.mark.parametrize(
    "bad",
    ["../evil", "a/b", "", ".", "..", "a\0b", "a\nb", "x" * 500, "Upper", "-dash", "white space"],
)
def test_invalid_names_refused(model_file, store_root, bad):
    with pytest.raises(InvalidNameError, match=r"\^\[a-z0-9\]"):
        add_model(model_file, bad)
    assert not (store_root / "models").exists() or not any((store_root / "models").iterdir())


def test_name_nfc_normalisation():
    decomposed = unicodedata.normalize("NFD", "é")
    with pytest.raises(InvalidNameError):
        validate_name(decomposed)  # normalised to é, which is outside [a-z0-9]
    assert validate_name("iris-1.0_b") == "iris-1.0_b"
    assert parse_ref("iris:3").selector == 3
    assert parse_ref("iris:prod").selector == "prod"
    assert parse_ref("iris:latest").selector is None


def test_invalid_model_refused_unless_forced(tmp_path, store_root):
    bad = builders.linear()
    bad.graph.node[0].input[0] = "undefined_input"
    path = builders.save(bad, tmp_path / "bad.onnx")
    with pytest.raises(InvalidModelError, match="failed validation"):
        add_model(path, "bad")
    assert not Store().versions("bad")
    r = add_model(path, "bad", force=True)
    assert r.forced and r.validation["ok"] is False
    assert find(Store(), "bad").meta["forced"] is True


def test_not_a_model_never_stored(tmp_path, store_root):
    path = tmp_path / "x.onnx"
    path.write_bytes(b"")
    with pytest.raises(InvalidModelError, match="empty"):
        add_model(path, "x", force=True)
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    with pytest.raises(InvalidModelError, match="FIFO"):
        add_model(fifo, "x")
    with pytest.raises(InvalidModelError, match="directory"):
        add_model(tmp_path, "x")


def test_symlinked_model_is_resolved_and_reported(model_file, store_root, tmp_path):
    link = tmp_path / "link.onnx"
    link.symlink_to(model_file)
    r = add_model(link, "lin")
    assert r.symlink_resolved_to == str(model_file)
    assert find(Store(), "lin").meta["source_resolved"] == str(model_file)


def test_explicit_version_and_conflict(model_file, store_root, tmp_path):
    add_model(model_file, "lin", version=5)
    other = builders.save(builders.linear(seed=2), tmp_path / "o.onnx")
    with pytest.raises(StoreError, match="already exists"):
        add_model(other, "lin", version=5)
    assert add_model(other, "lin").version == 6


def test_refs_not_found_list_close_matches(model_file, store_root):
    add_model(model_file, "iris")
    with pytest.raises(ModelNotFoundError, match="did you mean iris"):
        find(Store(), "irsi")
    with pytest.raises(ModelNotFoundError, match="no version 9") as e:
        find(Store(), "iris:9")
    assert e.value.code == "version_not_found"
    with pytest.raises(ModelNotFoundError) as e:
        find(Store(), "iris:prod")
    assert e.value.code == "alias_not_found"


def test_tag_untag_rm(model_file, store_root, tmp_path):
    add_model(model_file, "lin")
    add_model(builders.save(builders.linear(seed=3), tmp_path / "b.onnx"), "lin")
    assert tag("lin:1", "prod").version == 1
    assert tag("lin:2", "prod").previous == 1
    assert find(Store(), "lin:prod").version == 2
    untag("lin", "prod")
    with pytest.raises(ModelNotFoundError):
        find(Store(), "lin:prod")
    tag("lin:2", "prod")
    assert remove("lin:2").removed == ["lin:2"]
    with pytest.raises(ModelNotFoundError):
        find(Store(), "lin:prod")  # the alias went with the version
    assert find(Store(), "lin").version == 1  # latest is derived from disk
    remove("lin", all_versions=True)
    assert Store().versions("lin") == []
    with pytest.raises(ModelNotFoundError):
        find(Store(), "lin")
    assert not [p for p in (store_root / "blobs").rglob("*") if p.is_file()]


def test_list_newest_first(model_file, store_root, tmp_path):
    add_model(model_file, "a")
    add_model(builders.save(builders.linear(seed=4), tmp_path / "b.onnx"), "b")
    listing = list_models()
    assert [m.name for m in listing.models] == ["b", "a"]
    assert list_models(name="a").models[0].name == "a"


def test_verify_detects_corruption_and_missing_files(model_file, store_root):
    add_model(model_file, "lin")
    assert verify().ok
    mv = find(Store(), "lin")
    path = mv.model_path
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    result = verify("lin")
    assert (
        not result.ok
        and "sha256" in result.problems[0]["problem"]
        or "size" in result.problems[0]["problem"]
    )
    path.unlink()
    assert verify().problems[0]["problem"] == "missing"


def test_verify_reports_hand_edited_metadata(model_file, store_root):
    add_model(model_file, "lin")
    meta_path = find(Store(), "lin").directory / "meta.json"
    meta_path.write_text('{"schema_version": 1, "name": "lin"')  # truncated JSON
    result = verify()
    assert not result.ok and "not valid JSON" in result.problems[0]["problem"]
    listing = list_models()
    assert listing.models == [] and listing.problems
    with pytest.raises(StoreCorruptError):
        find(Store(), "lin")


def test_resolver_paths_and_refs(model_file, store_root):
    loc = resolve_model(str(model_file))
    assert loc.origin == "file" and not loc.trusted
    add_model(model_file, "lin", columns=["a", "b", "c", "d"])
    loc = resolve_model("lin")
    assert loc.origin == "store" and loc.trusted and loc.version == 1
    assert loc.columns == ["a", "b", "c", "d"]
    with pytest.raises(NotFoundError):
        resolve_model("missing/model.onnx")
    with pytest.raises(InvalidNameError):
        resolve_model("Not A Ref")


def test_export_import_round_trip(tmp_path, store_root):
    path = builders.with_external_data(tmp_path / "ext")
    add_model(path, "ext", aliases=["prod"], description="d")
    archive = tmp_path / "ext.tar.gz"
    export_version("ext:prod", archive)
    r = import_archive(archive, name="copy")
    assert r.version == 1 and r.aliases == ["prod"]
    copied = find(Store(), "copy")
    assert copied.meta["description"] == "d"
    assert copied.meta["imported_from"]["name"] == "ext"
    assert {f["sha256"] for f in copied.meta["files"]} == {
        f["sha256"] for f in find(Store(), "ext").meta["files"]
    }
    assert verify().ok


def _tamper_archive(src, dst, mutate):
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin:
            data = tin.extractfile(m).read() if m.isreg() else None
            m, data = mutate(m, data)
            if m is not None:
                import io

                m.size = len(data) if data is not None else 0
                tout.addfile(m, io.BytesIO(data) if data is not None else None)


def test_import_refuses_unsafe_and_corrupt_archives(model_file, tmp_path, store_root):
    add_model(model_file, "lin")
    good = tmp_path / "good.tar.gz"
    export_version("lin", good)

    def traversal(m, data):
        if m.name.startswith("files/"):
            m.name = "../../evil.onnx"
        return m, data

    def flip(m, data):
        if m.name.startswith("files/"):
            data = data[:-1] + bytes([data[-1] ^ 1])
        return m, data

    def symlink(m, data):
        if m.name.startswith("files/"):
            m.type = tarfile.SYMTYPE
            m.linkname = "/etc/passwd"
            return m, None
        return m, data

    for mutate, err in (
        (traversal, UnsafeModelError),
        (flip, StoreCorruptError),
        (symlink, UnsafeModelError),
    ):
        bad = tmp_path / f"{mutate.__name__}.tar.gz"
        _tamper_archive(good, bad, mutate)
        before = store_files(store_root)
        with pytest.raises(err):
            import_archive(bad, name="imported")
        assert not Store().versions("imported")
        assert store_files(store_root) == before
    assert not (tmp_path.parent / "evil.onnx").exists()


def test_stale_staging_dirs_are_cleaned(model_file, store_root):
    st = Store()
    st.init()
    stale = st.tmp_dir / "999999999-add-deadbeef"
    stale.mkdir()
    (stale / "junk").write_bytes(b"x")
    add_model(model_file, "lin")
    assert not stale.exists()


def test_metadata_is_json_with_schema_version(model_file, store_root):
    add_model(model_file, "lin")
    raw = json.loads((find(Store(), "lin").directory / "meta.json").read_text())
    assert raw["schema_version"] == 1 and raw["version"] == 1


def test_removed_version_numbers_are_never_reused(model_file, store_root, tmp_path):
    add_model(model_file, "lin")
    add_model(builders.save(builders.linear(seed=5), tmp_path / "b.onnx"), "lin")
    remove("lin:2")
    # a deployment pinned to lin:2 must not silently get another model
    r = add_model(builders.save(builders.linear(seed=6), tmp_path / "c.onnx"), "lin")
    assert r.version == 3
    with pytest.raises(StoreError) as e:
        add_model(builders.save(builders.linear(seed=7), tmp_path / "d.onnx"), "lin", version=2)
    assert e.value.code == "version_retired"
    remove("lin", all_versions=True)
    assert add_model(model_file, "lin").version == 4


def _rewrite_manifest(src, dst, edit):
    import io

    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin:
            data = tin.extractfile(m).read()
            if m.name == "modelforge-export.json":
                manifest = json.loads(data)
                edit(manifest)
                data = json.dumps(manifest).encode()
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data))


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda m: m["meta"].update(schema_version=999), "schema_version"),
        (lambda m: m["meta"].update(columns=["\x1b[31mred", 5, None]), "columns"),
        (lambda m: m["meta"].update(labels={"k": ["not", "text"]}), "labels"),
        (lambda m: m["meta"].update(columns=["a", "a"]), "more than once"),
    ],
)
def test_import_rechecks_metadata_from_the_archive(model_file, tmp_path, store_root, edit, field):
    add_model(model_file, "lin")
    good = tmp_path / "good.tar.gz"
    export_version("lin", good)
    forged = tmp_path / "forged.tar.gz"
    _rewrite_manifest(good, forged, edit)
    with pytest.raises((InvalidModelError, StoreCorruptError, InvalidNameError)) as e:
        import_archive(forged, name="forged")
    assert field in str(e.value) or e.value.code in ("bad_archive", "store_corrupt")
    assert Store().versions("forged") == []


@pytest.mark.parametrize(
    "version, shown",
    [
        (2, "schema_version 2,"),
        (10**400, "schema_version 1000"),
        ("1", "schema_version 1,"),
        (None, "schema_version None,"),
        (True, "schema_version True,"),
    ],  # fmt: skip
)
def test_import_refuses_an_export_schema_it_cannot_read(model_file, tmp_path, store_root,
                                                        version, shown):  # fmt: skip
    """An archive from a newer ModelForge (or a forged schema_version) is refused by name,
    before anything reaches the store."""
    add_model(model_file, "lin")
    good = tmp_path / "good.tar.gz"
    export_version("lin", good)
    forged = tmp_path / "forged.tar.gz"
    _rewrite_manifest(good, forged, lambda m: m.update(schema_version=version))
    with pytest.raises(InvalidModelError) as e:
        import_archive(forged, name="forged")
    assert e.value.code == "bad_archive" and shown in str(e.value), str(e.value)
    assert "forged.tar.gz" in str(e.value)
    assert Store().versions("forged") == []


def test_import_derives_schema_from_the_model_not_the_archive(model_file, tmp_path, store_root):
    add_model(model_file, "lin")
    good = tmp_path / "good.tar.gz"
    export_version("lin", good)
    forged = tmp_path / "forged.tar.gz"

    def lie(m):
        m["meta"]["schema"] = {"inputs": [{"name": "evil", "type": "tensor(float)"}]}

    _rewrite_manifest(good, forged, lie)
    import_archive(forged, name="imported")
    assert find(Store(), "imported").meta["schema"]["inputs"][0]["name"] == "x"


def test_import_does_not_move_existing_aliases(model_file, tmp_path, store_root):
    add_model(model_file, "lin", aliases=["prod"])
    other = builders.save(builders.linear(seed=8), tmp_path / "o.onnx")
    add_model(other, "lin")
    tag("lin:1", "prod")
    archive = tmp_path / "lin2.tar.gz"
    export_version("lin:1", archive)  # carries alias prod
    remove("lin:1")
    tag("lin:2", "prod")
    r = import_archive(archive, name="lin")
    assert r.version == 3
    assert find(Store(), "lin:prod").version == 2  # not moved by the import
    # newest first means newest in this store: the import (made from v1) comes before v2
    assert [m.version for m in list_models(name="lin").models] == [3, 2]
