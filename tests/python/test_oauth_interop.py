"""keyward's token service through independent Python clients (issue 5, point 9).

authlib (requests integration) fetches tokens by discovery, PyJWT verifies them against the
JWKS, and the gateway is called with them. Run by the Rust test `independent::python_clients`,
which boots keyward, creates the clients and sets:

  KEYWARD_GATEWAY             the gateway's base URL (also the issuer)
  KEYWARD_CLIENT_ID/SECRET    a client_secret_basic client with the scope facts:read
  KEYWARD_POST_CLIENT_ID/SECRET  (optional) a client_secret_post client
"""

import base64
import hashlib
import hmac
import json
import os
import time
import uuid

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.base_client.errors import OAuthError

AUDIENCE = "keyward"
ALGORITHMS = ["EdDSA", "ES256", "RS256"]
TIMEOUT = 10


def env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run these tests through `cargo test -p keyward --test it independent`")
    return value


@pytest.fixture(scope="module")
def gateway():
    return env("KEYWARD_GATEWAY").rstrip("/")


@pytest.fixture(scope="module")
def metadata(gateway):
    r = requests.get(f"{gateway}/.well-known/oauth-authorization-server", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    m = r.json()
    # RFC 8414 §3.3: the issuer is the one the metadata was fetched for.
    assert m["issuer"] == gateway
    for k in ("token_endpoint", "jwks_uri", "introspection_endpoint", "revocation_endpoint"):
        assert m[k].startswith(gateway + "/"), (k, m[k])
    assert "client_credentials" in m["grant_types_supported"]
    assert {"client_secret_basic", "client_secret_post"} <= set(m["token_endpoint_auth_methods_supported"])
    assert "facts:read" in m["scopes_supported"]
    return m


def session(client_id, secret, method):
    s = OAuth2Session(client_id, secret, token_endpoint_auth_method=method)
    s.revocation_endpoint_auth_method = method
    return s


@pytest.fixture(scope="module")
def basic():
    return session(env("KEYWARD_CLIENT_ID"), env("KEYWARD_CLIENT_SECRET"), "client_secret_basic")


def fetch(sess, metadata, scope="facts:read"):
    return sess.fetch_token(metadata["token_endpoint"], grant_type="client_credentials", scope=scope)


def verify(token, metadata):
    """Verifies an access token the way a resource server would (RFC 9068 §4)."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt", header
    assert header["alg"] in ALGORITHMS, header
    assert "kid" in header, header
    jwks = jwt.PyJWKClient(metadata["jwks_uri"], cache_keys=False, timeout=TIMEOUT)
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key=key,
        algorithms=ALGORITHMS,
        audience=AUDIENCE,
        issuer=metadata["issuer"],
        options={"require": ["iss", "exp", "aud", "sub", "iat", "jti"]},
    )


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(header, claims, secret):
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(mac)


def test_client_secret_basic_token_verify_call_introspect_revoke(gateway, metadata, basic):
    token = fetch(basic, metadata)
    # RFC 6749 §5.1 as authlib reads it.
    assert token["token_type"].lower() == "bearer"
    assert isinstance(token["expires_in"], int) and 0 < token["expires_in"] <= 3600
    assert token["scope"] == "facts:read"
    assert "refresh_token" not in token
    access = token["access_token"]

    claims = verify(access, metadata)
    client_id = env("KEYWARD_CLIENT_ID")
    for k in ("iss", "exp", "aud", "sub", "client_id", "iat", "jti", "scope"):
        assert k in claims, (k, claims)
    assert claims["client_id"] == client_id
    assert claims["sub"] == client_id
    assert claims["scope"] == "facts:read"
    assert claims["exp"] - claims["iat"] == token["expires_in"]
    assert abs(claims["iat"] - time.time()) < 120

    # The token buys a fact.
    r = requests.get(f"{gateway}/fact", headers={"Authorization": f"Bearer {access}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["fact"], str)

    # RFC 7662 with client authentication.
    r = basic.introspect_token(metadata["introspection_endpoint"], token=access, token_type_hint="access_token")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["active"] is True, info
    assert info["client_id"] == client_id
    assert info["scope"] == "facts:read"
    assert info["token_type"].lower() == "bearer"
    assert info["exp"] == claims["exp"] and info["jti"] == claims["jti"]

    # RFC 7009; afterwards the token is dead everywhere.
    r = basic.revoke_token(metadata["revocation_endpoint"], token=access, token_type_hint="access_token")
    assert r.status_code == 200, r.text
    r = basic.introspect_token(metadata["introspection_endpoint"], token=access)
    assert r.json() == {"active": False}
    r = requests.get(f"{gateway}/fact", headers={"Authorization": f"Bearer {access}"}, timeout=TIMEOUT)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].lower().startswith("bearer"), r.headers


def test_hs256_forged_with_the_public_jwk_is_refused(gateway, metadata, basic):
    """The algorithm-confusion attack: the public key used as an HMAC secret."""
    access = fetch(basic, metadata)["access_token"]
    header = jwt.get_unverified_header(access)
    claims = jwt.decode(access, options={"verify_signature": False})
    jwks = requests.get(metadata["jwks_uri"], timeout=TIMEOUT).json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    real_key = jwt.PyJWK(jwk)
    secrets = [
        json.dumps(jwk).encode(),
        json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode(),
    ]
    for member in ("x", "n"):
        if member in jwk:
            secrets.append(jwk[member].encode())
            secrets.append(base64.urlsafe_b64decode(jwk[member] + "=" * (-len(jwk[member]) % 4)))
    # Built by hand: PyJWT >= 2.10 refuses a JWK-looking HMAC secret itself.
    with pytest.raises(jwt.InvalidKeyError):
        jwt.encode(claims, json.dumps(jwk), algorithm="HS256")
    forged = [
        hs256({"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]}, dict(claims, jti=str(uuid.uuid4())), s)
        for s in secrets
    ]
    for f in forged:
        r = requests.get(f"{gateway}/fact", headers={"Authorization": f"Bearer {f}"}, timeout=TIMEOUT)
        assert r.status_code == 401, (f, r.status_code, r.text)
        assert "fact" not in r.text
        # PyJWT, given the real key, refuses it too (HS256 is not in the allowed algorithms).
        with pytest.raises(jwt.InvalidAlgorithmError):
            jwt.decode(f, key=real_key, algorithms=ALGORITHMS, audience=AUDIENCE, issuer=metadata["issuer"])
    # The genuine token still works.
    r = requests.get(f"{gateway}/fact", headers={"Authorization": f"Bearer {access}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text


def test_client_secret_post(gateway, metadata):
    client_id = os.environ.get("KEYWARD_POST_CLIENT_ID")
    if not client_id:
        pytest.skip("KEYWARD_POST_CLIENT_ID is not set")
    sess = session(client_id, env("KEYWARD_POST_CLIENT_SECRET"), "client_secret_post")
    seen = []

    def hook(resp):
        seen.append(resp)
        return resp

    sess.register_compliance_hook("access_token_response", hook)
    token = fetch(sess, metadata)
    sent = seen[0].request
    assert "authorization" not in {k.lower() for k in sent.headers}, "client_secret_post sends no Basic header"
    body = sent.body.encode() if isinstance(sent.body, str) else sent.body
    assert b"client_secret=" in body and b"client_id=" in body
    claims = verify(token["access_token"], metadata)
    assert claims["client_id"] == client_id
    r = requests.get(
        f"{gateway}/fact", headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["fact"], str)
    # Introspection with client_secret_post as well.
    r = sess.introspect_token(metadata["introspection_endpoint"], token=token["access_token"])
    assert r.status_code == 200 and r.json()["active"] is True, r.text


def test_invalid_client(metadata):
    sess = session(env("KEYWARD_CLIENT_ID"), "wrong-secret", "client_secret_basic")
    seen = []

    def hook(resp):
        seen.append(resp)
        return resp

    sess.register_compliance_hook("access_token_response", hook)
    with pytest.raises(OAuthError) as e:
        fetch(sess, metadata)
    assert e.value.error == "invalid_client"
    resp = seen[0]
    # RFC 6749 §5.2: 401 and the scheme the client used.
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Basic"), resp.headers
    assert resp.headers["cache-control"] == "no-store"


def test_invalid_scope(metadata, basic):
    with pytest.raises(OAuthError) as e:
        fetch(basic, metadata, scope="admin")
    assert e.value.error == "invalid_scope"
