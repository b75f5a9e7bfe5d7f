#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) and the dictionaries.

Needs Python 3 with `cryptography`. The keys are fixed (the RFC 8037 Ed25519 test key and a
P-256 key from a fixed scalar), so the output is the same on every run except for the ECDSA
signatures (random nonces); the fuzz targets trust only the public halves.
Run from the fuzz/ directory: python3 seeds.py
"""
import base64, json, os, zlib
from cryptography.hazmat.primitives.asymmetric import ed25519, ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives import hashes

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

ED = ed25519.Ed25519PrivateKey.from_private_bytes(
    base64.urlsafe_b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="))
ES = ec.derive_private_key(0x1F2E3D4C5B6A79880123456789ABCDEF0FEDCBA9876543210F1E2D3C4B5A6978, ec.SECP256R1())
_n = ES.public_key().public_numbers()
ED_JWK = {"kty": "OKP", "crv": "Ed25519", "x": b64(ED.public_key().public_bytes_raw())}
ES_JWK = {"kty": "EC", "crv": "P-256", "x": b64(_n.x.to_bytes(32, "big")), "y": b64(_n.y.to_bytes(32, "big"))}

def jws(header, claims, key):
    h = b64(json.dumps(header, separators=(",", ":")).encode())
    p = b64(json.dumps(claims, separators=(",", ":")).encode())
    msg = f"{h}.{p}".encode()
    if key == "ed":
        sig = ED.sign(msg)
    else:
        r, s = decode_dss_signature(ES.sign(msg, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{h}.{p}.{b64(sig)}"

def write(target, name, data):
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# ---- key_parse ------------------------------------------------------------------------
ALPHA = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
def b62(n, w):
    out = []
    for _ in range(w):
        out.append(ALPHA[n % 62]); n //= 62
    return "".join(reversed(out))
def key(prefix, env, body, pk=False):
    k = f"{prefix}_{'pk_' if pk else ''}{env}_{body}"
    return k + b62(zlib.crc32(k.encode()), 6)
BODY = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg"
assert len(BODY) == 43
KEYS = [key("kw", "live", BODY), key("kw", "test", BODY[::-1]), key("kw", "live", BODY, pk=True),
        key("acme", "test", BODY)]
for i, k in enumerate(KEYS):
    write("key_parse", f"valid-{i}", k)
write("key_parse", "bad-checksum", KEYS[0][:-1] + ("A" if KEYS[0][-1] != "A" else "B"))
write("key_parse", "custom-prefix", "abc|" + key("abc", "live", BODY))
write("key_parse", "short", "kw_live_abc")

# ---- gateway_extract --------------------------------------------------------------------
AT = jws({"typ": "at+jwt", "alg": "EdDSA", "kid": "ed"}, {"iss": "x"}, "ed")
write("gateway_extract", "x-api-key", f"/v1/things\nx-api-key: {KEYS[0]}\n")
write("gateway_extract", "bearer-key", f"/v1/things\nauthorization: Bearer {KEYS[0]}\n")
write("gateway_extract", "bearer-jwt", f"/v1/things\nauthorization: Bearer {AT}\n")
write("gateway_extract", "dpop-jwt", f"/v1/things\nauthorization: DPoP {AT}\ndpop: {AT}\n")
write("gateway_extract", "two-keys", f"/v1/%2e%2e/admin\nx-api-key: {KEYS[0]}\nx-kw-key: {KEYS[1]}\n")
write("gateway_extract", "forwarded",
      "/a/../b\nforwarded: for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"\n"
      "x-forwarded-for: 203.0.113.7, 10.1.2.3\nx-api-key: \n")

# ---- jwt_verify -------------------------------------------------------------------------
NOW = 1_900_000_000
claims = {"iss": "https://auth.example.com", "sub": "kwk_1", "aud": "https://api.example.com",
          "client_id": "fuzz-client", "iat": NOW - 10, "exp": NOW + 300, "jti": "j1", "scope": "read write"}
write("jwt_verify", "at-ed", jws({"typ": "at+jwt", "alg": "EdDSA", "kid": "ed"}, claims, "ed"))
write("jwt_verify", "at-es", jws({"typ": "at+jwt", "alg": "ES256", "kid": "es"},
                                  dict(claims, aud=["a", "https://api.example.com"], nbf=NOW - 5,
                                       cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}), "es"))
write("jwt_verify", "at-expired", jws({"typ": "at+jwt", "alg": "EdDSA", "kid": "ed"}, dict(claims, exp=NOW - 100), "ed"))
write("jwt_verify", "jws-plain", jws({"alg": "EdDSA"}, {"hello": "world"}, "ed"))
write("jwt_verify", "alg-none", b64(b'{"alg":"none","typ":"at+jwt","kid":"ed"}') + "." + b64(json.dumps(claims).encode()) + ".")

# ---- dpop_verify (selector byte, then the proof) ----------------------------------------
RFC9449 = ("eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19"
           ".eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ"
           ".2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg")
DNOW = 1_562_262_616
TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
ATH = b64(__import__("hashlib").sha256(TOKEN.encode()).digest())
write("dpop_verify", "rfc9449-4.1", b"\x00" + RFC9449.encode())
pc = {"jti": "e1j3V_bKic8-LAEB", "htm": "POST", "htu": "https://server.example.com/token", "iat": DNOW}
write("dpop_verify", "ed-proof", b"\x00" + jws({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": ED_JWK}, pc, "ed").encode())
write("dpop_verify", "es-proof-ath", b"\x01" + jws({"typ": "dpop+jwt", "alg": "ES256", "jwk": ES_JWK},
                                                    dict(pc, jti="x2", ath=ATH), "es").encode())
write("dpop_verify", "nonce", b"\x02" + jws({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": ED_JWK},
                                             dict(pc, jti="x3", nonce="eyJ7S_zG.eyJH0-Z.HX4w-7v"), "ed").encode())
write("dpop_verify", "private-jwk", b"\x00" + jws({"typ": "dpop+jwt", "alg": "EdDSA",
                                                    "jwk": dict(ED_JWK, d="nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")},
                                                   dict(pc, jti="x4"), "ed").encode())

# ---- client_assertion (Authorization line, then the form body) --------------------------
TYPE = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
ac = {"iss": "fuzz-client", "sub": "fuzz-client", "aud": "https://auth.example.com/oauth/token",
      "exp": NOW + 300, "iat": NOW, "jti": "a1"}
for i, (kname, alg) in enumerate([("ed", "EdDSA"), ("es", "ES256")]):
    a = jws({"alg": alg, "typ": "JWT"}, dict(ac, jti=f"a{i}"), kname)
    write("client_assertion", f"assertion-{kname}",
          f"\ngrant_type=client_credentials&client_assertion_type={TYPE}&client_assertion={a}&client_id=fuzz-client")
a = jws({"alg": "EdDSA"}, dict(ac, aud=["x", "https://auth.example.com"], jti="a9", nbf=NOW), "ed")
write("client_assertion", "assertion-aud-array", f"\nclient_assertion_type={TYPE}&client_assertion={a}")
write("client_assertion", "basic", "Basic " + base64.b64encode(b"kwc_abc:s3cr%2Bet").decode() + "\ngrant_type=client_credentials&scope=read")
write("client_assertion", "post", "\ngrant_type=client_credentials&client_id=kwc_abc&client_secret=xyz")
write("client_assertion", "two-methods", "Basic " + base64.b64encode(b"a:b").decode() + "\nclient_secret=x&client_id=a")

# ---- config_parse (TOML, optional NUL + env overrides) -----------------------------------
# The configuration that `keyward init` writes.
import re
_src = open(os.path.join("..", "crates", "keyward", "src", "commands.rs")).read()
template = re.search(r'const CONFIG_TEMPLATE: &str = r#"(.*?)"#;', _src, re.S).group(1)
write("config_parse", "init-template", template)
write("config_parse", "minimal", "")
write("config_parse", "env-overrides", template + "\0KEYWARD_GATEWAY__LISTEN=0.0.0.0:9090\nKEYWARD_KEYS__PREFIX=acme\n"
      "KEYWARD_GATEWAY__TRUSTED_PROXIES=[\"10.0.0.0/8\"]\n")
write("config_parse", "cluster", """[store]
url = "postgres://keyward@pg-primary.internal:5432/keyward"
max_connections = 16
connect_timeout = "2s"
revalidate_interval = "30s"
stale_ttl = "5m"

[redis]
url = "redis://redis.internal:6379/0"
prefix = "keyward"
timeout = "50ms"
nodes_hint = 3
on_limiter_failure = "local"

[gateway]
listen = "0.0.0.0:8080"
trusted_proxies = ["10.0.0.0/8"]

[admin]
listen = "10.0.1.11:8081"

[oauth]
enabled = true
issuer = "https://api.example.com"
""")

# ---- admin_body (selector byte = endpoint, then JSON) -----------------------------------
ADMIN = [
    (0, "create-app", {"name": "shop"}),
    (1, "update-app", {"rate": "100/s", "quota": "10000/day", "ips": ["10.0.0.0/8"]}),
    (2, "create-key", {"app": "fuzz", "name": "ci", "scopes": ["read", "write"], "expires_in": "90d",
                       "env": "test", "ips": ["192.0.2.0/24"], "rate": "10/s", "quota": "1000/day"}),
    (2, "create-pk", {"app": "fuzz", "kind": "publishable", "origins": ["https://shop.example.com"], "scopes": ["read"]}),
    (3, "update-key", {"name": None, "scopes": ["read"], "rate": None, "origins": []}),
    (4, "check", {"keys": [KEYS[0], "kw_live_nope", ""]}),
    (5, "import", {"app": "fuzz", "secret": "legacy-secret-0123456789", "expires_in": "never", "scopes": ["read"]}),
    (6, "revoke", {"reason": "leaked"}),
    (7, "rotate", {"grace": "1h", "expires_at": "2031-01-01T00:00:00Z"}),
    (8, "create-client", {"app": "fuzz", "scopes": ["read"], "auth_method": "private_key_jwt",
                          "jwks": {"keys": [ED_JWK]}, "token_ttl": "5m", "dpop_bound_access_tokens": True}),
    (8, "create-client-mtls", {"app": "fuzz", "auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "CN=svc,O=Example"}),
    (9, "rotate-secret", {"grace": "0s"}),
    (10, "admin-token", {"name": "ro", "role": "read", "expires_in": "30d"}),
    (11, "signing-rotate", {"alg": "ES256"}),
    (12, "disable", {}),
]
for sel, name, body in ADMIN:
    write("admin_body", name, bytes([sel]) + json.dumps(body).encode())
