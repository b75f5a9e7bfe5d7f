"""DPoP (RFC 9449) with an independent JOSE library: joserfc builds the proofs.

Run by `independent::python_clients` (crates/keyward/tests/it/independent.rs) against a real
keyward, with KEYWARD_GATEWAY, KEYWARD_CLIENT_ID and KEYWARD_CLIENT_SECRET in the environment.
"""

import base64
import hashlib
import json
import os
import time
import uuid
import warnings

import requests
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

GATEWAY = os.environ["KEYWARD_GATEWAY"]
CLIENT_ID = os.environ["KEYWARD_CLIENT_ID"]
CLIENT_SECRET = os.environ["KEYWARD_CLIENT_SECRET"]
TOKEN_URL = GATEWAY + "/oauth/token"
FACT_URL = GATEWAY + "/fact"

warnings.filterwarnings("ignore", message=".*EdDSA is deprecated.*")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def proof(key, alg, htm, htu, access_token=None):
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)}
    claims = {"jti": uuid.uuid4().hex, "htm": htm, "htu": htu, "iat": int(time.time())}
    if access_token is not None:
        claims["ath"] = b64url(hashlib.sha256(access_token.encode()).digest())
    return jwt.encode(header, claims, key, algorithms=[alg])


def dpop_token(key, alg):
    r = requests.post(
        TOKEN_URL,
        data={"grant_type": "client_credentials", "scope": "facts:read"},
        auth=(CLIENT_ID, CLIENT_SECRET),
        headers={"DPoP": proof(key, alg, "POST", TOKEN_URL)},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "DPoP"
    return body["access_token"]


def claims_of(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_es256_and_eddsa_bound_tokens_work_only_with_their_key():
    for key, alg in [(ECKey.generate_key("P-256"), "ES256"), (OKPKey.generate_key("Ed25519"), "EdDSA")]:
        token = dpop_token(key, alg)
        # RFC 7638 thumbprint computed by joserfc, independently of keyward.
        assert claims_of(token)["cnf"]["jkt"] == key.thumbprint()
        good = proof(key, alg, "GET", FACT_URL, token)
        r = requests.get(FACT_URL, headers={"Authorization": "DPoP " + token, "DPoP": good}, timeout=10)
        assert r.status_code == 200, r.text
        assert "fact" in r.json()
        # The same proof again is a replay.
        r = requests.get(FACT_URL, headers={"Authorization": "DPoP " + token, "DPoP": good}, timeout=10)
        assert r.status_code == 401
        assert 'error="invalid_dpop_proof"' in r.headers["WWW-Authenticate"]
        assert "algs=" in r.headers["WWW-Authenticate"]
        # A proof by another key, and the bound token as a bearer token, are refused.
        other = ECKey.generate_key("P-256")
        r = requests.get(
            FACT_URL,
            headers={"Authorization": "DPoP " + token, "DPoP": proof(other, "ES256", "GET", FACT_URL, token)},
            timeout=10,
        )
        assert r.status_code == 401
        r = requests.get(FACT_URL, headers={"Authorization": "Bearer " + token}, timeout=10)
        assert r.status_code == 401
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_proof_for_another_url_or_method_is_refused():
    key = ECKey.generate_key("P-256")
    token = dpop_token(key, "ES256")
    for htm, htu in [("POST", FACT_URL), ("GET", GATEWAY + "/facts")]:
        r = requests.get(
            FACT_URL,
            headers={"Authorization": "DPoP " + token, "DPoP": proof(key, "ES256", htm, htu, token)},
            timeout=10,
        )
        assert r.status_code == 401, (htm, htu)
