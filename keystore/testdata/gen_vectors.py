#!/usr/bin/env python3
"""Produces kat.json: known-answer vectors for moltgate's keystore, computed independently of
the Go code. HKDF-SHA256 by `openssl kdf` (OpenSSL CLI); AES-256-GCM by Python's
`cryptography` package (OpenSSL's libcrypto underneath, not Go's crypto). The ciphertext
vectors follow the format-2 and format-3 layouts documented in keystore.go, built here from
their spec; format 3's context digest is computed by `openssl dgst -sha256`."""
import json, struct, subprocess, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
import cryptography

def lp(b):
    return struct.pack(">I", len(b)) + b

def info(tenant, purpose):
    return b"moltgate/v2/tenant-key" + lp(tenant.encode()) + lp(purpose.encode())

def ad2(tenant, record, purpose, master_v, salt_v):
    return (b"moltgate/v2/ad" + lp(tenant.encode()) + lp(record.encode()) + lp(purpose.encode())
            + struct.pack(">II", master_v, salt_v))

def openssl_context(tenant, purpose, master_v, salt_v):
    # Format 3 binds tenant, purpose and versions through a 16-byte digest computed once per key.
    data = (b"moltgate/v3/ad" + lp(tenant.encode()) + lp(purpose.encode())
            + struct.pack(">II", master_v, salt_v))
    out = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=data, check=True,
                         capture_output=True).stdout
    return out[:16]

def openssl_hkdf(key, salt, inf):
    out = subprocess.check_output(["openssl", "kdf", "-keylen", "32", "-kdfopt", "digest:SHA256",
        "-kdfopt", "hexkey:" + key.hex(), "-kdfopt", "hexsalt:" + salt.hex(),
        "-kdfopt", "hexinfo:" + inf.hex(), "HKDF"]).decode().strip()
    return bytes.fromhex(out.replace(":", ""))

def openssl_ctr(key, nonce, pt):
    # GCM's ciphertext body is AES-CTR from counter block nonce || 00000002 (RFC 5116 / SP 800-38D;
    # J0 = nonce || 00000001 masks the tag). openssl enc has no AEAD mode, but CTR it has.
    if not pt:
        return b""
    return subprocess.run(["openssl", "enc", "-aes-256-ctr", "-nosalt", "-K", key.hex(),
        "-iv", nonce.hex() + "00000002"], input=pt, check=True, capture_output=True).stdout

cases = [
    # master, salt, tenant, purpose, record, master_v, salt_v, nonce, plaintext
    (bytes(range(32)), bytes(range(0x20, 0x40)), "tenant-a", "provider_key", "keys/k_0011223344556677", 1, 1,
     bytes.fromhex("000102030405060708090a0b"), b"sk-ant-api03-EXAMPLEEXAMPLEEXAMPLE"),
    (bytes([0xab]) * 32, bytes([0x5a]) * 32, "org:acme@eu", "gateway-token", "gateways/gw1/token", 7, 3,
     bytes.fromhex("cafebabefacedbaddecaf888"), b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
    (bytes.fromhex("4f" * 32), bytes.fromhex("00" * 32), "t", "channel_credential", "keys/k_ffffffffffffffff", 4294967295, 2,
     bytes(12), b""),
]
out = {"generated_by": "keystore/testdata/gen_vectors.py",
       "openssl": subprocess.check_output(["openssl", "version"]).decode().strip(),
       "python_cryptography": cryptography.__version__, "vectors": []}
for fmt in (2, 3):
    for master, salt, tenant, purpose, record, mv, sv, nonce, pt in cases:
        inf = info(tenant, purpose)
        okm = openssl_hkdf(master, salt, inf)
        context = b""
        if fmt == 2:
            ad = ad2(tenant, record, purpose, mv, sv)
        else:
            context = openssl_context(tenant, purpose, mv, sv)
            ad = context + record.encode()
        ct = AESGCM(okm).encrypt(nonce, pt, ad)
        ctr = openssl_ctr(okm, nonce, pt)
        assert ct[:len(pt)] == ctr, "openssl enc -aes-256-ctr disagrees with AES-GCM's ciphertext body"
        sealed = bytes([fmt]) + struct.pack(">II", mv, sv) + nonce + ct
        out["vectors"].append({"format": fmt, "master": master.hex(), "salt": salt.hex(), "tenant": tenant,
            "purpose": purpose, "record": record, "master_version": mv, "salt_version": sv, "info": inf.hex(),
            "okm": okm.hex(), "context": context.hex(), "nonce": nonce.hex(), "plaintext": pt.hex(), "ad": ad.hex(),
            "gcm": ct.hex(), "ctr_openssl": ctr.hex(), "sealed": sealed.hex()})
json.dump(out, sys.stdout, indent=1)
print()
