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

# ---- client_cert (mode byte: 0 = DER certificate, 1 = RFC 4514 DN text) ------------------
# Real certificates made by `openssl req -x509` (EC P-256 and Ed25519 with the fixed keys above,
# RSA 2048 with a fresh key), subject with a multi-valued RDN, a comma and UTF-8, SANs of every
# kind that ClientCert reads (DNS, URI, email, IPv4, IPv6). The `known-*` seeds (made with
# `cryptography`, which writes any value) have subjects that once failed the DN round trip (fixed).
import subprocess, tempfile, datetime
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

def pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())

SAN = ("subjectAltName=DNS:billing.svc.example,DNS:*.svc.example,URI:spiffe://example.org/ns/billing/sa/svc,"
       "email:ops@example.org,IP:10.0.0.7,IP:2001:db8::7")
with tempfile.TemporaryDirectory() as tmp:
    keys = {"ec": pem(ES), "ed25519": pem(ED)}
    for name, data in keys.items():
        with open(os.path.join(tmp, name + ".pem"), "wb") as f:
            f.write(data)
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", os.path.join(tmp, "rsa.pem")], check=True, capture_output=True)
    certs = [
        ("ec", "/C=DE/O=Example, Corp/OU=Billing+CN=billing-svc", ["-addext", SAN]),
        ("rsa", "/DC=org/DC=example/O=Example\\, Corp/OU=Ops+UID=jdoe/CN=Doe\\+Partner; <ops>", ["-addext", SAN]),
        ("ed25519", "/C=FR/ST=Île-de-France/L=Paris/O=Société Exemple/CN=Zoë \"device\" 7=x",
         ["-utf8", "-addext", "subjectAltName=DNS:dev7.example,IP:192.0.2.1,IP:::1,email:zoe@example.fr,URI:urn:example:device:7"]),
        ("ec", "/CN=no-sans/serialNumber=0042/emailAddress=admin@example.org/street=Main St 1", []),
    ]
    for i, (k, subj, extra) in enumerate(certs):
        out = os.path.join(tmp, f"c{i}.der")
        subprocess.run(["openssl", "req", "-x509", "-new", "-key", os.path.join(tmp, k + ".pem"), "-subj", subj,
                        "-days", "365", "-set_serial", str(1000 + i), "-outform", "DER", "-out", out] + extra,
                       check=True, capture_output=True)
        write("client_cert", f"openssl-{k}-{i}", b"\x00" + open(out, "rb").read())

def crypto_cert(name_attrs, alg_key=ED):
    subject = x509.Name(name_attrs)
    t = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(alg_key.public_key())
         .serial_number(7).not_valid_before(t).not_valid_after(t + datetime.timedelta(days=365)))
    return b.sign(alg_key, None).public_bytes(serialization.Encoding.DER)

A = x509.NameAttribute
write("client_cert", "known-edge-space", b"\x00" + crypto_cert([A(NameOID.ORGANIZATION_NAME, "Example"),
                                                              A(NameOID.COMMON_NAME, " admin ")]))
write("client_cert", "known-hash", b"\x00" + crypto_cert([A(NameOID.COMMON_NAME, "#0403")]))
write("client_cert", "known-c1", b"\x00" + crypto_cert([A(NameOID.COMMON_NAME, "a\u0080b")]))
write("client_cert", "known-nbsp", b"\x00" + crypto_cert([A(NameOID.COMMON_NAME, "svc\u00a0")]))
from cryptography.x509.name import _ASN1Type
write("client_cert", "bmp-subject", b"\x00" + crypto_cert([A(NameOID.COMMON_NAME, "bmp", _ASN1Type.BMPString)]))
write("client_cert", "unknown-oid", b"\x00" + crypto_cert([A(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), "x"),
                                                         A(NameOID.COMMON_NAME, "tab\there")]))
DNS = [
    ("plain", "CN=billing-svc,O=Example\\, Corp,C=DE"),
    ("spaces-case", " cn = svc , o=Example Corp ,c=DE"),
    ("multi-valued", "OU=b+CN=a,O=x"),
    ("hex-escapes", "CN=Doe\\, John,O=a\\2Cb,L=tab\\09in"),
    ("specials", "CN=not\\#hex \\\"q\\\" \\<t\\>\\;\\=\\+\\\\,DC=example,DC=org"),
    ("oids", "2.5.4.3=svc+0.9.2342.19200300.100.1.1=jdoe,0.9.2342.19200300.100.1.25=example"),
    ("all-short-names", "UID=jdoe+EMAILADDRESS=jdoe@example.org,SERIALNUMBER=42,STREET=Main St 1,L=Berlin,ST=BE,OU=x,DC=y,C=DE"),
    ("utf8", "CN=Zoë Ünïcødé,O=例え"),
    ("empty-value", "CN=,O=x"),
    ("known-c1", "CN=a\u0080b"),
]
for name, dn in DNS:
    write("client_cert", f"dn-{name}", b"\x01" + dn.encode())

# ---- admin_query (endpoint byte, mode byte, then query or Authorization value) ------------
# Endpoints: 0 apps, 1 keys, 2 clients, 3 audit, 4 usage, 5 routes, 6 admin-tokens,
# 7 signing-keys, 8 keys/{id}. Mode: bit 0 = Authorization value, else query with the
# bootstrap token (0), the scoped read token (2) or the write token (4). `$KEY`, `$READ`,
# `$WRITE` are replaced by the target (random ids / tokens of the harness).
CURSOR = b64(f"{NOW}:".encode())
QUERIES = [
    (0, 0, "apps", f"q=fuzz&limit=10"),
    (0, 2, "apps-cursor", f"limit=1&cursor={CURSOR}"),
    (1, 0, "keys", "app=fuzz&state=active&env=live&q=kw_&limit=2"),
    (1, 4, "keys-filters", "env=test&state=revoked&cursor=" + CURSOR),
    (1, 0, "keys-unknown-app", "app=nope"),
    (2, 0, "clients", "app=fuzz&state=disabled&q=FUZZ"),
    (3, 0, "audit", "since=24h&kind=key.&limit=5"),
    (3, 2, "audit-instant", "since=2030-03-17T00:00:00Z&key=$KEY&before=100"),
    (3, 0, "audit-cursor", "target=fuzz&cursor=10&kind=app.created&limit=1000"),
    (4, 0, "usage", "app=fuzz&since=1h&bucket=hour"),
    (4, 4, "usage-key", "key=$KEY&since=2030-03-16T17:46:40%2B00:00&bucket=minute"),
    (5, 0, "routes", "limit=500&cursor=MDo"),
    (6, 0, "admin-tokens", "limit=1"),
    (6, 2, "admin-tokens-read", "limit=1"),
    (7, 0, "signing-keys", "anything=1"),
    (8, 0, "key", "x=y&x=z"),
    (0, 0, "bad-limit-0", "limit=0"),
    (0, 0, "bad-limit-text", "limit=ten"),
    (1, 0, "bad-duplicate", "state=active&state=revoked"),
    (2, 0, "bad-unknown", "unknown=1"),
    (3, 0, "bad-before-cursor", "before=1&cursor=2"),
    (3, 0, "bad-kind", "kind=Key.Revoked"),
    (4, 0, "bad-bucket", "bucket=day&since=-1h"),
    (0, 0, "bad-q-control", "q=%01"),
    (0, 0, "bad-q-utf8", "q=%FF%FE&li%6Dit=+5"),
    (1, 0, "bad-cursor", "cursor=!!&limit=501"),
]
for sel, mode, name, q in QUERIES:
    write("admin_query", f"q-{name}", bytes([sel, mode]) + q.encode())
RANDOM_ADM = "kwadm_" + b62(int.from_bytes(__import__("hashlib").sha512(b"admin").digest(), "big"), 43)
AUTHS = [
    (0, "bootstrap", "Bearer fuzz-admin-token-0123456789abcdef"),
    (1, "bootstrap-blanks", "bearer   fuzz-admin-token-0123456789abcdef \t"),
    (2, "read", "Bearer $READ"),
    (6, "read-on-admin-tokens", "BEARER $WRITE"),
    (3, "random-kwadm", "Bearer " + RANDOM_ADM),
    (4, "read-suffix", "Bearer $READx"),
    (5, "basic", "Basic Zm9vOmJhcg=="),
    (7, "scheme-only", "Bearer"),
    (8, "tab", "Bearer\tfuzz-admin-token-0123456789abcdef"),
]
for sel, name, v in AUTHS:
    write("admin_query", f"auth-{name}", bytes([sel, 1]) + v.encode())
