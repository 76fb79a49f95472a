"""bert-verify on good and bad artifacts, hostile tarballs included; and the CI flow
export -> package -> verify, run as a CI job would."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
import tensorflow as tf

from export.publish.package import CardMetadata, package_export

BIN = os.path.dirname(sys.executable)


def verify(*args, tmpdir=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run([os.path.join(BIN, "bert-verify"), *args], capture_output=True, text=True, env=env)


def one_failure_line(proc, code, *fragments):
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("bert-verify:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, exports):
    out = tmp_path_factory.mktemp("packaged")
    result = package_export(exports("legacy"), str(out), CardMetadata(model_name="tiny"))
    return out, result.tarball


def test_ci_flow_export_package_verify(tmp_path, tf1_model):
    """What a CI job runs: export, package, verify the tarball against the source checkpoint."""
    models = tmp_path / "models"
    export = subprocess.run([os.path.join(BIN, "bert-export"), *tf1_model.flags(models, "--export_format=v2")],
                            capture_output=True, text=True)
    assert export.returncode == 0, export.stderr[-2000:]
    version_dir = export.stdout.strip().splitlines()[-1]
    package = subprocess.run([os.path.join(BIN, "bert-package"), f"--saved_model_dir={version_dir}",
                              f"--output_dir={tmp_path / 'dist'}", "--model_name=tiny"], capture_output=True, text=True)
    assert package.returncode == 0, package.stderr
    proc = verify(f"--artifact={tmp_path / 'dist' / 'tiny.tar.gz'}", f"--bert_config_file={tf1_model.bert_config_file}",
                  f"--model_checkpoint_path={tf1_model.checkpoint}", f"--report_json={tmp_path / 'r.json'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    names = {c["name"] for c in report["checks"]}
    assert report["passed"] and {"checksums", "signature", "call_convention", "vocab_asset", "do_lower_case",
                                 "no_host_paths", "hub_keraslayer_tf_keras", "keras3_tfsmlayer", "parity"} <= names
    assert "PASS call_convention: v2 API" in proc.stdout


def test_tampered_variables_fail_the_checksum(packaged, exports, tmp_path):
    out, _ = packaged
    copy = tmp_path / "1"
    shutil.copytree(exports("legacy"), copy)
    with open(copy / "variables" / "variables.data-00000-of-00001", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    proc = verify(f"--artifact={copy}", f"--sha256sums={out / 'SHA256SUMS'}")
    one_failure_line(proc, 1, "FAILED: checksums", "variables/variables.data-00000-of-00001")


def test_tampered_tarball_is_refused(packaged, tmp_path):
    out, tarball = packaged
    shutil.copy(out / "SHA256SUMS", tmp_path)
    data = bytearray(open(tarball, "rb").read())
    data[-100] ^= 0xFF
    (tmp_path / "tiny.tar.gz").write_bytes(bytes(data))
    one_failure_line(verify(f"--artifact={tmp_path / 'tiny.tar.gz'}"), 2, "SHA-256 does not match")


def test_missing_asset_fails(exports, tmp_path):
    copy = tmp_path / "1"
    shutil.copytree(exports("legacy"), copy)
    os.remove(copy / "assets" / "vocab.txt")
    one_failure_line(verify(f"--artifact={copy}"), 1, "FAILED: vocab_asset")


def test_wrong_dtype_signature_fails(exports, tmp_path):
    loaded = tf.saved_model.load(exports("legacy"))
    wrapper = tf.Module()
    wrapper.vocab_file, wrapper.do_lower_case, wrapper.inner = loaded.vocab_file, loaded.do_lower_case, loaded

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name=n)
                                  for n in ("input_word_ids", "input_mask", "input_type_ids")])
    def serving(input_word_ids, input_mask, input_type_ids):
        return loaded.signatures["serving_default"](input_word_ids=tf.cast(input_word_ids, tf.int32),
                                                    input_mask=tf.cast(input_mask, tf.int32),
                                                    input_type_ids=tf.cast(input_type_ids, tf.int32))
    tf.saved_model.save(wrapper, str(tmp_path / "1"), signatures={"serving_default": serving})
    one_failure_line(verify(f"--artifact={tmp_path / '1'}"), 1, "FAILED: signature", "int64")


def _hostile(path, add):
    with tarfile.open(path, "w:gz") as tar:
        add(tar)
    return path


def _file(tar, name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _special(tar, name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    tar.addfile(info)


class _Zeros(io.RawIOBase):
    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _bomb(tar):
    info = tarfile.TarInfo("variables/variables.data-00000-of-00001")
    info.size = 64 << 20  # 64 MiB of zeros: a few hundred KB compressed
    tar.addfile(info, io.BufferedReader(_Zeros(info.size)))


HOSTILE = {
    "path_traversal": (lambda tar: _file(tar, "../evil.txt"), "escapes the archive"),
    "nested_traversal": (lambda tar: _file(tar, "assets/../../evil.txt"), "escapes the archive"),
    "absolute_path": (lambda tar: _file(tar, "/tmp/bert-verify-evil.txt"), "absolute path"),
    "symlink_escape": (lambda tar: _special(tar, "assets/vocab.txt", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
    "hard_link_escape": (lambda tar: _special(tar, "saved_model.pb", tarfile.LNKTYPE, "/etc/passwd"), "hard link"),
    "device_node": (lambda tar: _special(tar, "dev", tarfile.CHRTYPE), "not a regular file"),
    "fifo": (lambda tar: _special(tar, "fifo", tarfile.FIFOTYPE), "not a regular file"),
    "gzip_bomb_over_the_cap": (_bomb, "more than the cap"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tarballs_are_refused_and_nothing_escapes(case, tmp_path):
    add, fragment = HOSTILE[case]
    arena = tmp_path / "arena"  # the tarball's directory: anything escaping lands near here
    arena.mkdir()
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    tarball = _hostile(str(arena / "hostile.tar.gz"), add)
    before = sorted(os.listdir(tmp_path)), sorted(os.listdir(arena))
    proc = verify(f"--artifact={tarball}", "--max_extracted_bytes=1048576", tmpdir=private_tmp)
    one_failure_line(proc, 2, "refused", fragment)
    assert (sorted(os.listdir(tmp_path)), sorted(os.listdir(arena))) == before
    assert os.listdir(private_tmp) == []  # the temporary directory is gone too
    assert not os.path.exists("/tmp/bert-verify-evil.txt")
