"""RFC 9728 protected resource metadata and RFC 9701 signed introspection, checked by
independent code: the `mcp` SDK's RFC 9728 model (`ProtectedResourceMetadata`) and discovery
helpers (the `resource_metadata` parameter read from a 401, the well-known URLs built from a
resource URL, the resource check), and PyJWT verifying the signed introspection answer against
the published JWKS.

Run by `integrations::python_resource_metadata_and_signed_introspection`
(crates/keyward/tests/it/integrations.rs) against a real keyward whose `/fact` and `/facts`
routes take tokens and `/echo` keys only. Not collected by pytest's default pattern: the Rust
test runs it as a script with

  KEYWARD_GATEWAY                          the gateway's base URL (also the issuer)
  KEYWARD_CLIENT_ID, KEYWARD_CLIENT_SECRET a client_secret_basic client with facts:read
"""

import os
import sys
import warnings
from urllib.parse import urlsplit

import httpx2
import jwt
import requests
from mcp.client.auth.utils import (
    build_protected_resource_metadata_discovery_urls,
    extract_resource_metadata_from_www_auth,
)
from mcp.shared.auth import ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed

GATEWAY = os.environ["KEYWARD_GATEWAY"].rstrip("/")
CLIENT_ID = os.environ["KEYWARD_CLIENT_ID"]
CLIENT_SECRET = os.environ["KEYWARD_CLIENT_SECRET"]
WELL_KNOWN = "/.well-known/oauth-protected-resource"
TIMEOUT = 10

warnings.filterwarnings("ignore", message=".*EdDSA is deprecated.*")

checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    checks += 1


def resource_of(metadata_url):
    """RFC 9728 §3.1 backwards: the resource identifier a well-known URL was made from."""
    u = urlsplit(metadata_url)
    check(u.path.startswith(WELL_KNOWN), f"{metadata_url} is a well-known URL")
    return f"{u.scheme}://{u.netloc}{u.path[len(WELL_KNOWN):]}"


def fetch_metadata(url):
    """GET and validate a protected resource metadata document (RFC 9728 §3.2, §3.3)."""
    r = requests.get(url, timeout=TIMEOUT)
    check(r.status_code == 200, f"{url}: {r.status_code} {r.text}")
    check(r.headers["content-type"].startswith("application/json"), r.headers["content-type"])
    raw = r.json()
    m = ProtectedResourceMetadata.model_validate(raw)
    # §3.3: `resource` is identical to the identifier the well-known URL was made from.
    check(raw["resource"] == resource_of(url), (raw["resource"], url))
    # §2: every value the document has is of the kind the RFC says.
    check(isinstance(raw["authorization_servers"], list) and raw["authorization_servers"], raw)
    check(all(isinstance(s, str) and " " not in s for s in raw["scopes_supported"]), raw)
    check(set(raw["bearer_methods_supported"]) <= {"header", "body", "query"}, raw)
    check(isinstance(raw["dpop_bound_access_tokens_required"], bool), raw)
    check(isinstance(raw["tls_client_certificate_bound_access_tokens"], bool), raw)
    for k in raw:
        check(raw[k] is not None, f"{k} is null")
    return m, raw


def main():
    http = httpx2.Client(timeout=TIMEOUT)

    # A client that knows nothing calls a token-taking route and follows the 401 (§5.1).
    resource_url = f"{GATEWAY}/fact/1"
    r = http.get(resource_url)
    check(r.status_code == 401, r.status_code)
    pointer = extract_resource_metadata_from_www_auth(r)
    check(pointer == f"{GATEWAY}{WELL_KNOWN}/fact", (pointer, r.headers.get("www-authenticate")))
    urls = build_protected_resource_metadata_discovery_urls(pointer, resource_url)
    check(urls[0] == pointer, urls)
    m, raw = fetch_metadata(pointer)
    check(str(m.resource).rstrip("/") == f"{GATEWAY}/fact", m.resource)
    # The resource the client called is one this document covers.
    check(check_resource_allowed(resource_url, raw["resource"]), (resource_url, raw["resource"]))
    check(not check_resource_allowed(f"{GATEWAY}/facts", raw["resource"]), "/facts is not /fact")
    check(raw["scopes_supported"] == ["facts:read"], raw)
    check(raw["bearer_methods_supported"] == ["header"], raw)
    check("ES256" in raw["dpop_signing_alg_values_supported"], raw)
    # A key-only route names no document.
    r = http.get(f"{GATEWAY}/echo")
    check(r.status_code == 401 and extract_resource_metadata_from_www_auth(r) is None, r.headers)

    # The gateway's own document, and the path-suffixed one of /facts.
    _, root = fetch_metadata(f"{GATEWAY}{WELL_KNOWN}")
    check(root["resource"] == GATEWAY, root)
    check({"facts:read", "facts:write"} <= set(root["scopes_supported"]), root)
    _, facts = fetch_metadata(f"{GATEWAY}{WELL_KNOWN}/facts")
    check(facts["scopes_supported"] == ["facts:read", "facts:write"], facts)
    for path in ("/nope", "/echo", "/fact/1"):
        r = requests.get(f"{GATEWAY}{WELL_KNOWN}{path}", timeout=TIMEOUT)
        check(r.status_code == 404, (path, r.status_code))
        check(r.headers["content-type"] == "application/problem+json", r.headers)

    # The authorization server it names (RFC 8414), validated by the SDK's model.
    issuer = str(m.authorization_servers[0]).rstrip("/")
    check(issuer == GATEWAY, issuer)
    r = requests.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=TIMEOUT)
    as_raw = r.json()
    # RFC 8414 §3.3 (the SDK's OAuthMetadata model wants an authorization_endpoint, which an
    # authorization server for client credentials only does not have).
    check(as_raw["issuer"] == issuer, as_raw["issuer"])

    # A token for the audience the document names, then the route with it.
    r = requests.post(
        as_raw["token_endpoint"],
        auth=(CLIENT_ID, CLIENT_SECRET),
        data={
            "grant_type": "client_credentials",
            "scope": raw["scopes_supported"][0],
            "audience": raw["keyward_audience"],
        },
        timeout=TIMEOUT,
    )
    check(r.status_code == 200, r.text)
    token = r.json()["access_token"]
    r = http.get(resource_url.replace("/fact/1", "/fact"), headers={"authorization": f"Bearer {token}"})
    check(r.status_code == 200, (r.status_code, r.text))

    # RFC 9701: the signed introspection answer, verified against the published JWKS.
    algs = as_raw["introspection_signing_alg_values_supported"]
    check(set(algs) <= {"EdDSA", "ES256", "RS256", "PS256"} and algs, algs)
    jwks = jwt.PyJWKClient(as_raw["jwks_uri"], cache_keys=False, timeout=TIMEOUT)

    def introspect(tok, accept):
        headers = {"accept": accept} if accept else {}
        return requests.post(
            as_raw["introspection_endpoint"],
            auth=(CLIENT_ID, CLIENT_SECRET),
            data={"token": tok},
            headers=headers,
            timeout=TIMEOUT,
        )

    def verified(resp):
        check(resp.status_code == 200, resp.text)
        check(resp.headers["content-type"] == "application/token-introspection+jwt", resp.headers)
        body = resp.text
        header = jwt.get_unverified_header(body)
        check(header["typ"] == "token-introspection+jwt", header)
        check(header["alg"] in algs, header)
        key = jwks.get_signing_key_from_jwt(body)
        claims = jwt.decode(
            body,
            key.key,
            algorithms=algs,
            audience=CLIENT_ID,
            issuer=issuer,
            options={"require": ["iss", "aud", "iat"], "verify_exp": False},
        )
        # §5: not an access token.
        check("sub" not in claims and "exp" not in claims, claims)
        return claims

    plain = introspect(token, None)
    check(plain.headers["content-type"].startswith("application/json"), plain.headers)
    claims = verified(introspect(token, "application/token-introspection+jwt"))
    ti = claims["token_introspection"]
    check(ti == plain.json(), (ti, plain.json()))
    check(ti["active"] is True and ti["client_id"] == CLIENT_ID and ti["scope"] == "facts:read", ti)
    # A tampered answer does not verify.
    body = introspect(token, "application/token-introspection+jwt").text
    h, p, s = body.split(".")
    forged = f"{h}.{p}.{s[:-4]}{'AAAA' if s[-4:] != 'AAAA' else 'BBBB'}"
    try:
        jwt.decode(forged, jwks.get_signing_key_from_jwt(body).key, algorithms=algs, audience=CLIENT_ID)
        check(False, "a tampered signature verified")
    except jwt.InvalidSignatureError:
        check(True, "tampered")
    # Inactive: still signed, `active: false` and nothing else (RFC 9701 §5).
    claims = verified(introspect("not-a-token", "application/token-introspection+jwt"))
    check(claims["token_introspection"] == {"active": False}, claims)
    # q=0 refuses the JWT: plain JSON.
    r = introspect(token, "application/token-introspection+jwt;q=0")
    check(r.headers["content-type"].startswith("application/json"), r.headers)

    print(f"{checks} checks passed")


if __name__ == "__main__":
    main()
