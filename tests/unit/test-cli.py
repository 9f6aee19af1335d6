#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Runs `smpgw image info` on the conformance images and checks its JSON
against manifest.json, plus exit codes for bad input. Prints TAP.
usage: test-cli.py SMPGW CONFORMANCE_DIR"""
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile

smpgw, conf = sys.argv[1], sys.argv[2]
images = os.path.join(conf, "images")
n = 0
failed = 0

KEYS = {"RSA2048_PSS": "pub-rsa-2048.pem", "ECDSA_P256": "pub-ecdsa-p256.pem",
        "ED25519": "pub-ed25519.pem"}


def ok(cond, name):
    global n, failed
    n += 1
    print(("ok" if cond else "not ok") + " %d - %s" % (n, name))
    if not cond:
        failed += 1


def run(*args):
    p = subprocess.run([smpgw, *args], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


rc, out, _ = run("--version")
ok(rc == 0 and out.startswith("smpgw "), "--version")
rc, out, _ = run("--help")
ok(rc == 0 and "image info" in out, "--help")
rc, _, err = run("frobnicate")
ok(rc == 2 and "unknown command" in err, "unknown command: exit 2")

manifest = json.load(open(os.path.join(images, "manifest.json")))
usable = list(KEYS.values())
for name, m in manifest.items():
    path = os.path.join(images, name)
    rc, out, err = run("image", "info", path, "--json")
    j = json.loads(out)
    ok(rc == 0, "%s: exit 0 without keys" % name)
    ok(j["version"] == m["version"], "%s: version" % name)
    ok(j["hdr_size"] == m["hdr_size"] and j["img_size"] == m["img_size"]
       and j["total_size"] == m["size"], "%s: sizes" % name)
    ok(j["hash"] == m["sha256_tlv"], "%s: hash" % name)
    ok(sorted(t["name"] for t in j["tlvs"]) == m["tlvs"], "%s: TLVs" % name)
    ok(j["keyhash"] == m["keyhash"], "%s: key hash" % name)
    ok(j["signature"]["type"] == m["signed_with"], "%s: signature type" % name)
    want = "not_checked" if m["signed_with"] else "unsigned"
    ok(j["signature"]["status"] == want, "%s: signature %s" % (name, want))

    key_args = sum((["--key", os.path.join(images, k)] for k in usable), [])
    rc, out, err = run("image", "info", path, "--json", *key_args)
    j = json.loads(out)
    signer = KEYS.get(m["signed_with"] or "")
    if signer in usable:
        ok(rc == 0 and j["signature"]["status"] == "verified"
           and j["signature"]["key"].endswith(signer), "%s: verified by %s" % (name, signer))
    elif signer:
        ok(rc == 3 and j["signature"]["status"] == "no_key", "%s: no usable key" % name)
    else:
        ok(rc == 3 and j["signature"]["status"] == "unsigned", "%s: unsigned with keys: exit 3" % name)
    for k in usable:
        if k != signer and signer:
            rc, out, _ = run("image", "info", path, "--json", "--key", os.path.join(images, k))
            ok(rc == 3 and json.loads(out)["signature"]["status"] == "no_key",
               "%s: %s does not match" % (name, k))

# The imgtool-signed Ed25519 image verifies with the shipped key alone; the
# key hash it prints is the SHA-256 of that key's DER SubjectPublicKeyInfo
# (the base64 body of the PEM).
ed_pem = os.path.join(images, "pub-ed25519.pem")
ed_img = os.path.join(images, "app-2.0.0-ed25519.bin")
spki = base64.b64decode("".join(l for l in open(ed_pem).read().splitlines()
                                if l and not l.startswith("-----")))
rc, out, _ = run("image", "info", ed_img, "--key", ed_pem)
ok(rc == 0 and "verified with " + ed_pem in out, "Ed25519 image: verified with pub-ed25519.pem")
ok("key hash:    " + hashlib.sha256(spki).hexdigest() in out,
   "Ed25519 image: key hash is SHA-256 of the key's DER SubjectPublicKeyInfo")
rc, out, _ = run("image", "info", ed_img, "--key", os.path.join(images, "pub-ecdsa-p256.pem"))
ok(rc == 3 and "ED25519, no_key" in out, "Ed25519 image, ECDSA key only: no key, exit 3")

# Text output names the hash and the verifying key.
rc, out, _ = run("image", "info", os.path.join(images, "app-1.2.3+4-ecdsa-p256.bin"),
                 "--key", os.path.join(images, "pub-ecdsa-p256.pem"))
ok(rc == 0 and manifest["app-1.2.3+4-ecdsa-p256.bin"]["sha256_tlv"] in out
   and "verified with" in out, "text output")

with tempfile.TemporaryDirectory() as d:
    data = bytearray(open(os.path.join(images, "app-1.2.3+4-ecdsa-p256.bin"), "rb").read())
    bad = os.path.join(d, "bad.bin")
    data[0x300] ^= 1
    open(bad, "wb").write(data)
    rc, out, err = run("image", "info", bad, "--json")
    ok(rc == 1 and "SHA-256 mismatch" in err and json.loads(out)["valid"] is False,
       "flipped payload byte: exit 1, hash mismatch")
    open(bad, "wb").write(data[:1000])
    rc, _, err = run("image", "info", bad)
    ok(rc == 1 and "truncated" in err, "truncated: exit 1")
    rc, _, err = run("image", "info", os.path.join(d, "missing.bin"))
    ok(rc == 1 and "No such file" in err, "missing file: exit 1")
    junk = os.path.join(d, "junk.pem")
    open(junk, "w").write("junk")
    rc, _, err = run("image", "info", os.path.join(images, "app-1.0.0-hash.bin"), "--key", junk)
    ok(rc == 2 and "junk.pem" in err, "bad key file: exit 2")
    rc, _, _ = run("image", "info")
    ok(rc == 2, "no FILE: exit 2")

print("1..%d" % n)
sys.exit(1 if failed else 0)
