#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/ from barge's test fixtures.

Seeds are the string literals of the unit tests of each parser (references, JSON
documents, challenges, HTTP heads) plus small hand-made files for what the tests
build in code (chunked bodies, gzip streams, tars including hostile ones), and the
inputs in fuzz/regressions/TARGET-* that once found a bug. Each seed
is named by the SHA-1 of its content, as libFuzzer names what it adds. Run from
anywhere: python3 fuzz/make-seeds.py (it replaces the corpora it writes).
"""

import gzip
import hashlib
import io
import os
import re
import shutil
import tarfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
TESTS = os.path.join(HERE, "..", "tests")
CORPUS = os.path.join(HERE, "corpus")

# Content types of the manifest target: the first byte of an input picks one (see src/fuzzing.rs).
CT_NONE, CT_OCI_INDEX, CT_OCI_MANIFEST, CT_DOCKER_LIST, CT_DOCKER_MANIFEST, CT_SCHEMA1 = range(6)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def rust_strings(text):
    """The string literals of Rust source: raw r#"..."# and ordinary "..." (escapes decoded)."""
    out = [m.group(2) for m in re.finditer(r'b?r(#+)"(.*?)"\1', text, re.S)]
    text = re.sub(r'b?r(#+)".*?"\1', "", text, flags=re.S)
    for m in re.finditer(r'b?"((?:[^"\\]|\\.)*)"', text, re.S):
        s = m.group(1)
        s = re.sub(r"\\\n\s*", "", s)  # line continuation
        s = re.sub(r"\\u\{([0-9a-fA-F]+)\}", lambda x: chr(int(x.group(1), 16)), s)
        s = re.sub(r"\\x([0-9a-fA-F]{2})", lambda x: chr(int(x.group(1), 16)), s)
        s = (s.replace("\\n", "\n").replace("\\r", "\r").replace("\\t", "\t")
             .replace("\\0", "\0").replace('\\"', '"').replace("\\\\", "\\"))
        out.append(s)
    return out


def literals(*files):
    strings = []
    for f in files:
        strings += rust_strings(read(f))
    return strings


def regressions(target):
    """Inputs a target once failed on (fuzz/regressions/TARGET-*): seeds too, so every run repeats them."""
    d = os.path.join(HERE, "regressions")
    out = []
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if name.startswith(target + "-"):
            with open(os.path.join(d, name), "rb") as f:
                out.append(f.read())
    return out


def write(target, seeds):
    seeds = list(seeds) + regressions(target)
    d = os.path.join(CORPUS, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    seen = set()
    for s in seeds:
        b = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s
        h = hashlib.sha1(b).hexdigest()
        if h in seen:
            continue
        seen.add(h)
        with open(os.path.join(d, h), "wb") as f:
            f.write(b)
    print(f"{target}: {len(seen)} seeds, {sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d))} bytes")


def reference_seeds():
    files = [os.path.join(SRC, "reference.rs"), os.path.join(SRC, "cli.rs"),
             os.path.join(SRC, "login.rs")]
    files += [os.path.join(TESTS, f) for f in os.listdir(TESTS) if f.endswith(".rs")]
    looks_like_one = re.compile(r"^[A-Za-z0-9._:/@\[\]+-]{1,300}$")
    return [s for s in literals(*files) if looks_like_one.match(s)] + [
        "debian", "library/debian:12", "docker.io/library/debian@sha256:" + "a" * 64,
        "127.0.0.1:5000/x/y:t@sha256:" + "0" * 64, "[::1]:5000/a/b", "localhost/x",
        "Index.Docker.IO/x", "registry-1.docker.io/a/b", "a" * 256, "x/" * 100 + "y",
        "host:65536/x", "a__b/c--d/e.f:T_1", "quay.io/a/b@sha512:" + "f" * 128,
    ]


def json_docs():
    files = ["manifest.rs", "json.rs", "pull.rs", "commit.rs", "store.rs", "push.rs",
             "registry/credentials.rs", "registry/auth.rs"]
    docs = literals(*[os.path.join(SRC, f) for f in files])
    docs += literals(*[os.path.join(TESTS, "common", f) for f in os.listdir(os.path.join(TESTS, "common"))])
    return [d for d in docs if d.lstrip().startswith(("{", "[")) and len(d) < 64 * 1024]


D = "sha256:" + "a" * 64
MANIFEST = ('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
            '"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"' + D + '","size":2},'
            '"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"' + D + '","size":5,'
            '"annotations":{"a":"b"}},{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",'
            '"digest":"' + D + '","size":1,"urls":["https://x/y"]}]}')
INDEX = ('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":['
         '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"' + D + '","size":7,'
         '"platform":{"os":"linux","architecture":"arm","variant":"v7","os.features":["x"],"os.version":"1"}},'
         '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"' + D + '","size":7,'
         '"platform":{"os":"unknown","architecture":"unknown"},"annotations":{"vnd.docker.reference.type":"attestation-manifest"}},'
         '{"digest":"' + D + '","size":1}]}')
CONFIG = ('{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]},'
          '"rootfs":{"type":"layers","diff_ids":["' + D + '","' + D + '"]},"history":['
          '{"created":"2024-01-01T00:00:00Z","created_by":"ADD x /"},{"empty_layer":true,"comment":"c"},'
          '{"author":"a","created_by":"RUN y"}],"n":[1.5,-0,1e300,12345678901234567890],"s":"\\u00e9\\n\\ud83d\\ude00"}')


def manifest_seeds():
    seeds = []
    for doc in json_docs() + [MANIFEST, INDEX, CONFIG]:
        for ct in (CT_NONE, CT_OCI_INDEX, CT_DOCKER_MANIFEST):
            seeds.append(bytes([ct]) + doc.encode())
    seeds.append(bytes([CT_SCHEMA1]) + b'{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}')
    seeds.append(bytes([CT_NONE]) + b"[" * 64 + b"]" * 64)
    return seeds


def auth_seeds():
    strings = literals(os.path.join(SRC, "registry", "auth.rs"), os.path.join(TESTS, "common", "token.rs"))
    return [s for s in strings if s and len(s) < 4096 and "\n" not in s] + [
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"',
        'Basic realm="r", Bearer realm="http://[::1]:5001/t?x=1",service="s"',
        '{"token":"abc","access_token":"def","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}',
        '{"access_token":"eyJ.x.y","expires_in":1.5e3}',
    ]


def credentials_seeds():
    strings = literals(os.path.join(SRC, "registry", "credentials.rs"), os.path.join(SRC, "login.rs"))
    docs = [s for s in strings if s.lstrip().startswith("{")]
    return docs + [
        '{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"}}}',
        '{"auths":{"quay.io":{"username":"u","password":"p"},"HTTPS://Quay.IO/v2/":{"auth":" dTpw\\n"}}}',
        '{"auths":{"127.0.0.1:5000":{"auth":"","identitytoken":"t"}},"credsStore":"desktop"}',
        '{"auths":{"docker.io":{"auth":"bm9jb2xvbg=="}}}',
        '{"auths":[]}', '{}',
    ]


def http_seeds():
    GET, HEAD, CHUNKED = b"\x00", b"\x01", b"\x02"
    strings = literals(os.path.join(SRC, "http", "response.rs"), os.path.join(SRC, "http", "tests.rs"))
    heads = [s.encode() for s in strings if s.startswith("HTTP/")]
    seeds = [GET + h for h in heads] + [HEAD + h for h in heads]
    bodies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nLocation: /v2/x/blobs/uploads/1\r\nRange: 0-9\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nuntil close",
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"https://a/t\"\r\nContent-Length: 2, 2\r\n\r\n{}",
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: https://cdn/x?sig=1\r\nX: a\r\n  folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\n",
    ]
    seeds += [GET + b for b in bodies] + [HEAD + b for b in bodies]
    chunked = [
        b"5\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\n", b"1a;name=value\r\n" + b"x" * 26 + b"\r\n0\r\nA: b\r\n\r\n",
        b"FFFFFFFFFFFFFFFF\r\nx", b"3\nabc\n0\n\n", b"2\r\nabc\r\n", b"10000000000000000\r\n",
    ]
    seeds += [CHUNKED + c for c in chunked]
    return seeds


def gz(data, mtime=0, **kw):
    return gzip.compress(data, mtime=mtime, **kw)


def gzip_seeds():
    header_flags = bytearray(gz(b"named"))
    named = io.BytesIO()
    with gzip.GzipFile(filename="x.tar", fileobj=named, mode="wb", mtime=1) as f:
        f.write(b"with a name")
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    stored = zlib.compressobj(0, zlib.DEFLATED, -15)
    return [
        gz(b""), gz(b"hello\n"), gz(b"a" * 10000, compresslevel=9), gz(bytes(range(256)) * 4, compresslevel=1),
        gz(b"one") + gz(b"two"), gz(b"x") + b"\0" * 512, named.getvalue(), bytes(header_flags[:-4]),
        gz(b"bad crc")[:-8] + b"\0\0\0\0\x07\0\0\0", b"\x1f\x8b\x08\x1e" + b"\0" * 6 + b"\x02\0xx" + b"extra\0comment\0\0\0",
        b"\x1f\x8b\x08\0\0\0\0\0\0\xff" + stored.compress(b"stored block") + stored.flush() + b"\0" * 8,
        b"\x1f\x8b\x08\0\0\0\0\0\0\xff" + raw.compress(b"truncated" * 50) + raw.flush()[:5],
        gz(b"\0" * 100000, compresslevel=9),
    ]


def tar_bytes(entries, fmt=tarfile.GNU_FORMAT):
    """A tar of (name, type, extra) entries; extra: data for files, link target for links."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.type = kind
            data = None
            if kind == tarfile.REGTYPE:
                data = extra.encode() if isinstance(extra, str) else extra
                info.size = len(data)
            elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = extra
            elif kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


F, D_, S, L, C, FIFO = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE


def unpack_seeds():
    plain = [
        [("etc/", D_, None), ("etc/hostname", F, "box\n"), ("bin/", D_, None), ("bin/sh", F, "#!"),
         ("bin/ash", L, "bin/sh"), ("lib", S, "usr/lib"), ("usr/lib/", D_, None), ("dev/null", C, None),
         ("run/fifo", FIFO, None)],
        [("d/.wh.f", F, ""), ("d/new", F, "n"), (".wh.f", F, "")],
        [("d/.wh..wh..opq", F, ""), ("d/g", F, "g")],
        [(".wh..wh..opq", F, ""), ("top", F, "t")],
        [("a/b/c/d/e", F, "deep"), ("a/b/c/d/e", F, "again"), ("a/b", S, "x"), ("a/b/y", F, "through link")],
        [("f", D_, None), ("d", F, "replace dir"), ("x", F, "1"), ("x", S, "d/f"), ("h", L, "x")],
        [("./", D_, None), ("./a", F, "dot"), ("a/../b", F, "cleaned"), ("", F, "empty name"), ("..", D_, None)],
        [("pax/" + "n" * 150 + "/file", F, "long")],
    ]
    hostile = [
        [("../canary", F, "escaped")],
        [("../../../../tmp/escape", F, "escaped")],
        [("/etc/passwd-barge-fuzz", F, "absolute")],
        [("up/canary", F, "through the root's symlink to ..")],
        [("up/new", F, "new file beside the root")],
        [("canary-link", F, "over a symlink to ../canary")],
        [("abs-canary", F, "over an absolute symlink")],
        [("abs-dir/new", F, "through an absolute symlink")],
        [("canary-link/x", F, "")],
        [("l", S, "../canary-dir"), ("l/inside", F, "through a symlink the layer made")],
        [("l", S, "/"), ("l/etc/barge-fuzz", F, "through an absolute symlink the layer made")],
        [("h", L, "../canary"), ("h", F, "through a hardlink")],
        [("h", L, "up/canary")],
        [("h", L, "/../canary")],
        [("up/.wh.canary", F, "")],
        [("up/.wh..wh..opq", F, "")],
        [("abs-dir/.wh..wh..opq", F, "")],
        [(".wh.up", F, ""), ("up", D_, None), ("up/x", F, "")],
        [("up", S, "../canary-dir"), ("up/inside", F, "")],
        [("d", S, ".."), ("d/canary", F, "x")],
        [("x", S, "up"), ("x/canary", F, "x")],
        [("dev", C, None), ("up/canary", C, None)],
    ]
    seeds = [tar_bytes(e) for e in plain + hostile]
    seeds += [tar_bytes(e, tarfile.PAX_FORMAT) for e in plain[:2] + hostile[:3]]
    return seeds


def main():
    write("reference", reference_seeds())
    write("manifest", manifest_seeds())
    write("auth", auth_seeds())
    write("credentials", credentials_seeds())
    write("http_response", http_seeds())
    write("gzip", gzip_seeds())
    write("unpack", unpack_seeds())


if __name__ == "__main__":
    main()
