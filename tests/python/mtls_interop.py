"""Mutual TLS (RFC 8705) with an independent client: httpx over Python's ssl module.

Run by `mtls::python_mtls_client` (crates/keyward/tests/it/mtls.rs) against a real keyward
serving TLS with optional client certificates. Not collected by pytest's default pattern: the
Rust test runs it as a script with everything it needs in the environment:

  KEYWARD_GATEWAY   https://127.0.0.1:PORT
  KEYWARD_CA        the CA of the gateway's certificate (PEM)
  KEYWARD_CERT, KEYWARD_KEY              a client certificate registered to KEYWARD_CLIENT_ID
                                         (tls_client_auth, subject DN) and its key
  KEYWARD_OTHER_CERT, KEYWARD_OTHER_KEY  a certificate of the same CA, registered to nobody
  KEYWARD_CLIENT_ID
"""

import base64
import hashlib
import json
import os
import ssl
import sys

import httpx

GATEWAY = os.environ["KEYWARD_GATEWAY"]
CA = os.environ["KEYWARD_CA"]
CLIENT_ID = os.environ["KEYWARD_CLIENT_ID"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def client(cert=None, key=None):
    ctx = ssl.create_default_context(cafile=CA)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return httpx.Client(verify=ctx, base_url=GATEWAY, timeout=10)


def x5t(cert_path):
    with open(cert_path) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return b64url(hashlib.sha256(der).digest())


def main():
    mine = client(os.environ["KEYWARD_CERT"], os.environ["KEYWARD_KEY"])
    other = client(os.environ["KEYWARD_OTHER_CERT"], os.environ["KEYWARD_OTHER_KEY"])
    anonymous = client()

    meta = anonymous.get("/.well-known/oauth-authorization-server").json()
    assert "tls_client_auth" in meta["token_endpoint_auth_methods_supported"], meta
    assert meta["tls_client_certificate_bound_access_tokens"] is True, meta
    token_url = meta["mtls_endpoint_aliases"]["token_endpoint"]

    # tls_client_auth: client_id alone, the certificate authenticates.
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "scope": "facts:read"}
    r = mine.post(token_url, data=form)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer", body
    token = body["access_token"]
    # The token is bound to the certificate: x5t#S256 computed here, independently of keyward.
    assert claims_of(token)["cnf"]["x5t#S256"] == x5t(os.environ["KEYWARD_CERT"])

    auth = {"Authorization": "Bearer " + token}
    r = mine.get("/fact", headers=auth)
    assert r.status_code == 200, r.text
    # The same token over another certificate, or none: 401 invalid_token.
    for c in (other, anonymous):
        r = c.get("/fact", headers=auth)
        assert r.status_code == 401, r.text
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    # Another certificate, or none, cannot authenticate as the client.
    for c in (other, anonymous):
        r = c.post(token_url, data=form)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_client"
    # A certificate-only route: the certificate alone is the credential.
    r = mine.get("/internal/status")
    assert r.status_code == 200, r.text
    r = other.get("/internal/status")
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    print("mtls_interop: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError:
        import traceback

        traceback.print_exc()
        sys.exit(1)
